"""Planner benchmark: the greedy plan against the best ILP plan on random instances.

    python -m bench.planner [--instances 20] [--sizes 50x10,200x40] [--seed 1] [--ticks 30]
                            [--repeat 3] [--reference-limit-s 10] [--tick-limit-s 0.5]

Each instance is a random cluster (about 70 % CPU workers with 8 cores, 30 % single-GPU
workers, plus one CPU and one GPU worker that could be started), apps of ten variants
each (CPU with 1, 2 or 4 threads, and GPU; prices from the default price table), two or
three requirement classes per app with random accuracy floors and latency objectives,
loads that would fill half of the running workers (``--utilisation``), and a current
allocation that is the plan of a different random load (so load-time penalties matter,
as they do tick after tick). Instances whose load no plan can place are skipped.

Per size it reports the mean ratio greedy / best of the objective (hardware cost plus
load-time penalties) and of the hardware cost alone, where *best* is the cheapest of the
greedy plan, the scaler's ILP and a reference ILP given a long limit and CP-SAT's parallel
portfolio; how many references are proven optimal and the ratio to the proven lower
bound (an upper bound on the true gap); p50/p99 solve times of the greedy (each instance
timed as the best of ``--repeat`` solves: the machine is shared) and of the ILP run as
the scaler runs it (warm-started from the greedy plan, one search worker, its
tick's time limit). Then whole policy ticks (``build_snapshot`` + ``decide`` with the ILP)
on a simulated cluster of each size. Writes ``bench/results/planner.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench.planner_instances import apply_plan, random_cluster, random_problem
from registry.livestate import LiveSnapshot
from registry.pricing import PriceTable
from scaler.greedy import GreedyPlanner
from scaler.ilp import IlpPlanner
from scaler.planner import Assignment
from scaler.policy import ScalerState, decide
from scaler.settings import ScalerSettings
from scaler.snapshot import Demand, build_snapshot

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = {
    "greedy_over_best_mean_max": 1.10,
    "ilp_tick_p99_ms": 1000.0,
    "greedy_p99_ms": 10.0,
    "whole_tick_p99_ms": 1000.0,
}
REFERENCE_WORKERS = 8  # CP-SAT's parallel portfolio: much stronger, for the reference only


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def run_size(
    variants: int,
    workers: int,
    instances: int,
    seed: int,
    utilisation: float,
    tick_limit_s: float,
    reference_limit_s: float,
    repeat: int = 1,
) -> dict[str, Any]:
    rng = random.Random(seed * 1000 + variants * 7 + workers)
    greedy = GreedyPlanner()
    tick = IlpPlanner(time_limit_s=tick_limit_s)
    reference = IlpPlanner(time_limit_s=reference_limit_s, workers=REFERENCE_WORKERS)
    rows: list[dict[str, Any]] = []
    skipped = 0
    while len(rows) < instances:
        problem = random_problem(rng, variants, workers, utilisation=utilisation)
        g = greedy.solve(problem)
        # the machine is shared: an instance's time is the best of ``repeat`` solves
        greedy_ms = min([g.solve_ms] + [greedy.solve(problem).solve_ms for _ in range(repeat - 1)])
        t = tick.solve(problem)
        ref = reference.solve(problem)
        best = min((g, t, ref), key=lambda a: a.objective)
        if best.unserved_qps:
            skipped += 1  # more load than the cluster can take: no cost to compare
            if skipped > 10 * instances:
                raise SystemExit(f"{variants}x{workers}: instances keep coming out infeasible")
            continue
        rows.append(_row(g, t, ref, best) | {"greedy_ms": greedy_ms})
    return _summary(variants, workers, utilisation, rows, skipped, tick_limit_s, reference_limit_s)


def _row(g: Assignment, t: Assignment, ref: Assignment, best: Assignment) -> dict[str, Any]:
    bound = max(ref.bound or 0.0, t.bound or 0.0)
    return {
        "greedy_objective": g.objective,
        "greedy_cost": g.cost_per_hour,
        "greedy_ms": g.solve_ms,
        "tick_objective": t.objective,
        "tick_cost": t.cost_per_hour,
        "tick_planner": t.planner,
        "tick_status": t.status,
        "tick_ms": t.solve_ms,
        "tick_ilp_ms": t.timings.get("ilp_ms", 0.0),
        "best_objective": best.objective,
        "best_cost": best.cost_per_hour,
        "best_by": best.planner if best is not ref else "reference",
        "reference_status": ref.status,
        "reference_ms": ref.solve_ms,
        "lower_bound": min(bound, best.objective),
    }


def _summary(
    variants: int,
    workers: int,
    utilisation: float,
    rows: list[dict[str, Any]],
    skipped: int,
    tick_limit_s: float,
    reference_limit_s: float,
) -> dict[str, Any]:
    def ratio(a: str, b: str) -> float:
        return statistics.fmean(r[a] / r[b] if r[b] > 0 else 1.0 for r in rows)

    return {
        "variants": variants,
        "workers": workers,
        "utilisation": utilisation,
        "instances": len(rows),
        "skipped_infeasible": skipped,
        "ilp_time_limit_s": tick_limit_s,
        "reference_time_limit_s": reference_limit_s,
        "reference_workers": REFERENCE_WORKERS,
        "optimum_proven": sum(r["reference_status"] == "optimal" for r in rows),
        "greedy_over_best_objective": ratio("greedy_objective", "best_objective"),
        "greedy_over_best_cost": ratio("greedy_cost", "best_cost"),
        "greedy_over_best_worst": max(r["greedy_objective"] / r["best_objective"] for r in rows),
        "greedy_over_bound_objective": ratio("greedy_objective", "lower_bound"),
        "tick_over_best_objective": ratio("tick_objective", "best_objective"),
        "tick_planners": {
            name: sum(r["tick_planner"] == name for r in rows)
            for name in sorted({r["tick_planner"] for r in rows})
        },
        "greedy_ms_p50": percentile([r["greedy_ms"] for r in rows], 50),
        "greedy_ms_p99": percentile([r["greedy_ms"] for r in rows], 99),
        "tick_ms_p50": percentile([r["tick_ms"] for r in rows], 50),
        "tick_ms_p99": percentile([r["tick_ms"] for r in rows], 99),
        "reference_ms_p50": percentile([r["reference_ms"] for r in rows], 50),
        "rows": rows,
    }


def run_ticks(variants: int, workers: int, ticks: int, seed: int) -> dict[str, Any]:
    """Whole policy ticks (build_snapshot + decide, ILP planner) on a cluster that does
    what each plan asks; load wanders by up to ±20 % a tick."""
    rng = random.Random(seed * 7919 + variants)
    catalog, reports, classes = random_cluster(rng, variants, workers)
    settings = ScalerSettings(
        min_cpu_workers=0,
        max_cpu_workers=workers * 2,
        max_gpu_workers=workers,
        worker_backoff_s=0,
    )
    prices = PriceTable.default()
    state = ScalerState()
    level = [rng.uniform(20, 400) for _ in classes]
    times, planners = [], []
    for tick in range(ticks):
        level = [q * rng.uniform(0.8, 1.2) for q in level]
        demands = [
            Demand(app, q, latency_ms=lat, min_accuracy=acc)
            for (app, lat, acc), q in zip(classes, level, strict=True)
        ]
        live = LiveSnapshot(taken_ms=tick * 1000.0, workers=dict(reports))
        started = time.perf_counter()
        snap = build_snapshot(tick * 1000.0, catalog, live, demands, {}, prices, settings)
        plan, state = decide(snap, state, settings)
        times.append((time.perf_counter() - started) * 1000.0)
        planners.append(plan.planner)
        apply_plan(plan, reports)
    return {
        "variants": variants,
        "workers": workers,
        "ticks": ticks,
        "tick_ms_p50": percentile(times, 50),
        "tick_ms_p99": percentile(times, 99),
        "tick_ms_max": max(times),
        "planners": {name: planners.count(name) for name in sorted(set(planners))},
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--instances", type=int, default=20, help="feasible instances per size")
    parser.add_argument("--sizes", default="50x10,200x40", help="VARIANTSxWORKERS, comma-separated")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--utilisation", type=float, default=0.5, help="share of the running workers the load fills"
    )
    parser.add_argument("--tick-limit-s", type=float, default=0.5, help="the scaler's ILP limit")
    parser.add_argument("--reference-limit-s", type=float, default=10.0)
    parser.add_argument(
        "--ticks", type=int, default=30, help="whole policy ticks timed per size (0: none)"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="greedy solves per instance; the best is timed"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "planner.json")
    args = parser.parse_args(argv)
    sizes = []
    for part in args.sizes.split(","):
        try:
            v, w = (int(x) for x in part.lower().split("x"))
        except ValueError:
            parser.error(f"--sizes: {part!r} is not VARIANTSxWORKERS (e.g. 50x10)")
        if v < 1 or w < 2:
            parser.error(f"--sizes: {part!r} needs at least 1 variant and 2 workers")
        sizes.append((v, w))
    if args.instances < 1:
        parser.error("--instances must be at least 1")
    if not 0 < args.utilisation <= 1.5:
        parser.error("--utilisation must lie in (0, 1.5]")
    if args.tick_limit_s <= 0 or args.reference_limit_s <= 0:
        parser.error("time limits must be > 0")
    if args.ticks < 0:
        parser.error("--ticks must be >= 0")
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    load_before = os.getloadavg()
    results = [
        run_size(
            v,
            w,
            args.instances,
            args.seed,
            args.utilisation,
            args.tick_limit_s,
            args.reference_limit_s,
            args.repeat,
        )
        for v, w in sizes
    ]
    print(
        f"{'size':>8} {'n':>3} {'proven':>6} {'greedy/best':>11} {'(cost)':>7} {'worst':>6} "
        f"{'greedy/bound':>12} {'ILP tick/best':>13} {'greedy p50':>10} {'greedy p99':>10} "
        f"{'ILP tick p50':>12} {'ILP tick p99':>12}"
    )
    for r in results:
        print(
            f"{r['variants']:>4}x{r['workers']:<3} {r['instances']:>3} {r['optimum_proven']:>6} "
            f"{r['greedy_over_best_objective']:>11.3f} {r['greedy_over_best_cost']:>7.3f} "
            f"{r['greedy_over_best_worst']:>6.3f} {r['greedy_over_bound_objective']:>12.3f} "
            f"{r['tick_over_best_objective']:>13.3f} "
            f"{r['greedy_ms_p50']:>8.2f}ms {r['greedy_ms_p99']:>8.2f}ms "
            f"{r['tick_ms_p50']:>10.1f}ms {r['tick_ms_p99']:>10.1f}ms"
        )
    ticks = [run_ticks(v, w, args.ticks, args.seed) for v, w in sizes] if args.ticks else []
    if ticks:
        print(f"\n{'whole tick':>10} {'ticks':>5} {'p50':>9} {'p99':>9} {'max':>9}  planners")
    for t in ticks:
        print(
            f"{t['variants']:>5}x{t['workers']:<4} {t['ticks']:>5} {t['tick_ms_p50']:>7.1f}ms "
            f"{t['tick_ms_p99']:>7.1f}ms {t['tick_ms_max']:>7.1f}ms  {t['planners']}"
        )
    doc = {
        "command": " ".join(["python -m bench.planner", *argv]).strip(),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        },
        "greedy_timing": f"best of {args.repeat} solves per instance (the machine is shared)",
        "targets": TARGETS,
        "sizes": results,
        "ticks": ticks,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Run the simulator: one workload, several policies, one table, plots and summary.json.

    python -m bench.sim --trace ../shared/traces/azure_llm_conv.csv --rate-scale 50 \\
        --policies all --out bench/results/sim/azure-conv
    python -m bench.sim --workload fluctuating --duration-s 3600 --policies all \\
        --out bench/results/sim/fluctuating
    python -m bench.sim --frontier --workloads steady-low,fluctuating \\
        --sweep headroom=1.05,1.15,1.3      # -> bench/results/sim/frontier/

Trace data: Azure LLM inference traces (Patel et al., "Splitwise", ISCA 2024; Azure Public
Dataset, CC-BY-4.0).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench.sim.engine import SimSettings
from bench.sim.frontier import (
    DEFAULT_SWEEP,
    FRONTIER_WORKLOADS,
    check_sweep,
    parse_sweep,
    run_workload,
    write_table,
    write_workload,
)
from bench.sim.policies import POLICIES
from bench.sim.profiles import PROFILES, World, load_mix, load_world
from bench.sim.report import plot_run, table
from bench.sim.runs import WARMUP_S, peak_qps, ratios, run_policy
from bench.sim.workload import WORKLOADS, Arrivals, load_trace, rescale, synthetic
from queues.errors import InfaasError, InvalidRequest

FRONTIER_OUT = Path("bench/results/sim/frontier")

__all__ = ["build_arrivals", "main", "run_policy"]


def build_arrivals(args: argparse.Namespace) -> Arrivals:
    if args.trace:
        counts = load_trace(Path(args.trace), time_column=args.time_column)
        counts = rescale(
            counts,
            rate_scale=args.rate_scale,
            time_scale=args.time_scale,
            duration_s=args.duration_s,
        )
        return Arrivals(Path(args.trace).stem, counts)
    duration = int(args.duration_s or 3600)
    counts = synthetic(
        args.workload, duration_s=duration, low_qps=args.low_qps, high_qps=args.high_qps,
        seed=args.seed,
    )  # fmt: skip
    counts = rescale(counts, rate_scale=args.rate_scale, time_scale=args.time_scale)
    return Arrivals(args.workload, counts)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.sim", description=__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--trace", help="CSV with a timestamp column, or integers per second")
    source.add_argument("--workload", choices=WORKLOADS)
    source.add_argument(
        "--frontier",
        action="store_true",
        help="sweep ours' knobs on each of --workloads beside every baseline; writes "
        f"<workload>.json/.png and dominance.md/.json under --out (default {FRONTIER_OUT})",
    )
    parser.add_argument("--apps", type=Path, default=None, help="app mix (JSON)")
    parser.add_argument("--profiles", type=Path, default=PROFILES)
    parser.add_argument("--policies", default="all", help=f"all, or some of {POLICIES}")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--time-column", default="TIMESTAMP")
    parser.add_argument("--rate-scale", type=float, default=1.0)
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument(
        "--duration-s",
        type=float,
        default=None,
        help="seconds to simulate (with --frontier: at most this much of each workload)",
    )
    parser.add_argument("--low-qps", type=float, default=20.0)
    parser.add_argument("--high-qps", type=float, default=1000.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--workloads",
        default="all",
        help=f"with --frontier: all, or some of {', '.join(FRONTIER_WORKLOADS)}",
    )
    parser.add_argument(
        "--sweep",
        action="append",
        default=None,
        metavar="SETTING=V1,V2,...",
        help="with --frontier: a scaler setting of ours and its values, swept one knob at "
        "a time around the defaults (repeatable; default headroom=1.05,1.15,1.3)",
    )
    parser.add_argument(
        "--table-only",
        action="store_true",
        help="with --frontier: rebuild the tables and plots from the workloads' JSON under "
        "--out, running nothing",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    command = "python -m bench.sim " + " ".join(argv if argv is not None else sys.argv[1:])
    try:
        world = load_world(args.profiles, load_mix(args.apps))
        if args.frontier:
            return _frontier(parser, args, world, command)
        if args.out is None:
            raise InvalidRequest("give --out DIR for the run's table, plots and summary.json")
        return _single(args, world, command)
    except InfaasError as exc:
        print(f"bench.sim: {exc.message}", file=sys.stderr)
        return 2


def _frontier(
    parser: argparse.ArgumentParser, args: argparse.Namespace, world: World, command: str
) -> int:
    out = args.out or FRONTIER_OUT
    if args.table_only:
        print(write_table(out))
        return 0
    names = list(FRONTIER_WORKLOADS) if args.workloads == "all" else args.workloads.split(",")
    unknown = [n for n in names if n not in FRONTIER_WORKLOADS]
    if unknown:
        raise InvalidRequest(
            f"unknown frontier workloads {unknown}; choose from {list(FRONTIER_WORKLOADS)}"
        )
    sweep = parse_sweep(args.sweep) if args.sweep else dict(DEFAULT_SWEEP)
    sim_settings = SimSettings()
    check_sweep(sweep, sim_settings)
    for name in names:
        spec = parser.parse_args(FRONTIER_WORKLOADS[name])
        if args.duration_s is not None:
            spec.duration_s = min(spec.duration_s or args.duration_s, args.duration_s)
        spec.seed = args.seed
        arrivals = build_arrivals(spec)
        record = run_workload(name, world, arrivals, sweep, args.seed, sim_settings, command)
        write_workload(record, out)
        print(f"{name}: frontier {record['frontier']}; ours (default) dominated by "
              f"{record['default_dominated_by'] or 'none'}", file=sys.stderr)  # fmt: skip
    print(write_table(out))
    return 0


def _single(args: argparse.Namespace, world: World, command: str) -> int:
    policies = list(POLICIES) if args.policies == "all" else args.policies.split(",")
    unknown = [p for p in policies if p not in POLICIES]
    if unknown:
        print(f"unknown policies {unknown}; choose from {POLICIES}", file=sys.stderr)
        return 2
    arrivals = build_arrivals(args)
    sim_settings = SimSettings()
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    for policy in policies:
        results[policy], sim = run_policy(policy, world, arrivals, args.seed, sim_settings)
        plot_run(sim, policy, args.out)
        print(f"{policy}: done in {results[policy]['wall_s']} s", file=sys.stderr)
    summary = {
        "workload": arrivals.name,
        "command": command,
        "duration_s": arrivals.duration_s,
        "queries": arrivals.total,
        "peak_qps": peak_qps(arrivals.per_second),
        "mean_qps": arrivals.total / max(arrivals.duration_s, 1),
        "policies": results,
        "ratios_vs_ours": ratios(results),
        "assumptions": {
            "sim": sim_settings.__dict__,
            "warmup_s": WARMUP_S,
            "interference_slowdown": world.interference_slowdown,
            "profiles": str(args.profiles),
            "trace_attribution": "Azure LLM inference traces: Patel et al., Splitwise, ISCA "
            "2024; Azure Public Dataset (CC-BY-4.0)"
            if args.trace
            else None,
        },
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

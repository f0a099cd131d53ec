"""``python -m bench.sim --frontier``: ours' cost against violations as its knobs move,
with every baseline's point on the same axes, per workload.

For each workload the baselines run once, and ours once at its default settings and once
per swept value of each knob (one knob at a time, the others at their defaults). Each
workload writes ``<workload>.json`` (the points, the frontier, who dominates whom, and
whether a baseline dominates ours' default point) and ``<workload>.png``; the table of
dominance over every workload written so far (``dominance.md``, ``dominance.json``) is
rebuilt from those files, so workloads may be run by separate commands.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bench.sim.dominance import Point, dominance, dominance_table, dominated_by, frontier
from bench.sim.engine import SimSettings
from bench.sim.policies import POLICIES, scaler_settings
from bench.sim.profiles import World
from bench.sim.runs import run_policy, with_overrides
from bench.sim.workload import Arrivals
from queues.errors import InvalidRequest

OURS = "ours"
BASELINES = tuple(p for p in POLICIES if p != OURS)
TRACES = Path("../shared/traces")
# the workloads of the recorded results (docs/simulator.md), as the single-run command's
# arguments; ``steady-trace`` is the conversation trace at about 47 q/s (×8.5), a low
# real load
FRONTIER_WORKLOADS: dict[str, list[str]] = {
    "steady-low": ["--workload", "steady-low", "--duration-s", "1800"],
    "steady-trace": ["--trace", str(TRACES / "azure_llm_conv.csv"), "--rate-scale", "8.5"],
    "steady-high": ["--workload", "steady-high", "--duration-s", "1800"],
    "steady-high-3000": ["--workload", "steady-high", "--high-qps", "3000", "--duration-s", "1800"],
    "fluctuating": ["--workload", "fluctuating", "--duration-s", "3600"],
    "azure-conv": ["--trace", str(TRACES / "azure_llm_conv.csv"), "--rate-scale", "100"],
    "azure-code": ["--trace", str(TRACES / "azure_llm_code.csv"), "--rate-scale", "200"],
}
DEFAULT_SWEEP = {"headroom": (1.05, 1.15, 1.3)}


@dataclass(frozen=True)
class SweepPoint:
    """Ours at its default settings with ``overrides`` replaced (none: the default)."""

    overrides: tuple[tuple[str, Any], ...]

    @property
    def name(self) -> str:
        if not self.overrides:
            return OURS
        return OURS + " " + ",".join(f"{k}={v:g}" for k, v in self.overrides)


def parse_sweep(specs: Sequence[str]) -> dict[str, tuple[float, ...]]:
    """``["headroom=1.05,1.3", "forecast_s=20,60"]`` → ``{"headroom": (1.05, 1.3), ...}``;
    a malformed spec raises :class:`InvalidRequest` saying what to write."""
    out: dict[str, tuple[float, ...]] = {}
    for spec in specs:
        knob, sep, values = spec.partition("=")
        if not sep or not knob or not values:
            raise InvalidRequest(
                f"--sweep {spec!r}: write a scaler setting and its values, e.g. "
                "headroom=1.05,1.15,1.3"
            )
        try:
            out[knob.strip()] = tuple(float(v) for v in values.split(","))
        except ValueError:
            raise InvalidRequest(
                f"--sweep {spec!r}: values must be numbers separated by commas"
            ) from None
    return out


def sweep_points(
    sweep: Mapping[str, Sequence[float]], defaults: Mapping[str, Any]
) -> list[SweepPoint]:
    """The default point, then one point per knob value that differs from its default."""
    points = [SweepPoint(())]
    for knob, values in sweep.items():
        for value in values:
            if value != defaults.get(knob):
                points.append(SweepPoint(((knob, value),)))
    return points


def check_sweep(sweep: Mapping[str, Sequence[float]], sim_settings: SimSettings) -> None:
    """Refuse a knob that is not a scaler setting or a value out of its bounds, before
    any run starts."""
    base = scaler_settings(OURS, sim_settings)
    for point in sweep_points(sweep, base.model_dump()):
        try:
            with_overrides(base, dict(point.overrides))
        except (ValueError, ValidationError) as exc:
            first = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
            raise InvalidRequest(f"--sweep {point.name}: {first}") from None


def _point(name: str, result: Mapping[str, Any]) -> dict[str, Any]:
    keep = ("cost_usd", "slo_violation_rate", "scaling_actions", "late", "failed", "queries")
    return {"name": name, **{k: result[k] for k in keep}, "wall_s": result["wall_s"]}


def run_workload(
    workload: str,
    world: World,
    arrivals: Arrivals,
    sweep: Mapping[str, Sequence[float]],
    seed: int,
    sim_settings: SimSettings,
    command: str,
) -> dict[str, Any]:
    """Run the baselines and ours' sweep on one workload; the points and their verdicts."""
    baselines = []
    for policy in BASELINES:
        result, _ = run_policy(policy, world, arrivals, seed, sim_settings)
        baselines.append(_point(policy, result))
        print(f"{workload}: {policy} done in {result['wall_s']} s", file=sys.stderr)
    defaults = scaler_settings(OURS, sim_settings).model_dump()
    ours = []
    for sp in sweep_points(sweep, defaults):
        result, _ = run_policy(
            OURS, world, arrivals, seed, sim_settings, overrides=dict(sp.overrides)
        )
        ours.append({**_point(sp.name, result), "overrides": dict(sp.overrides)})
        print(f"{workload}: {sp.name} done in {result['wall_s']} s", file=sys.stderr)
    return verdict(
        {
            "workload": workload,
            "command": command,
            "seed": seed,
            "duration_s": arrivals.duration_s,
            "queries": arrivals.total,
            "defaults": {k: defaults[k] for k in sweep},
            "baselines": baselines,
            "ours": ours,
        }
    )


def as_point(p: Mapping[str, Any]) -> Point:
    return Point(p["name"], float(p["cost_usd"]), float(p["slo_violation_rate"]))


def verdict(record: dict[str, Any]) -> dict[str, Any]:
    """Add to a workload's record its frontier, who dominates whom (baselines and ours'
    default point) and the baselines that dominate any of ours' points."""
    base = [as_point(p) for p in record["baselines"]]
    mine = [as_point(p) for p in record["ours"]]
    default = next(p for p in mine if p.name == OURS)
    return {
        **record,
        "frontier": [p.name for p in frontier(base + mine)],
        "dominance": dominance([*base, default]),
        "default_dominated_by": dominated_by(default, base),
        "ours_dominated_by": {p.name: dominated_by(p, base) for p in mine},
    }


def write_workload(record: Mapping[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    name = record["workload"]
    (out / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
    plot_frontier(record, out / f"{name}.png")


def write_table(out: Path) -> str:
    """Rebuild ``dominance.md``, ``dominance.json``, ``points.md`` and each workload's
    plot from every workload's JSON in ``out``; returns the dominance table."""
    records = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    records = [r for r in records if "baselines" in r]
    if not records:
        raise InvalidRequest(
            f"no workload's frontier under {out}; run python -m bench.sim --frontier first"
        )
    records.sort(key=lambda r: list(FRONTIER_WORKLOADS).index(r["workload"])
                 if r["workload"] in FRONTIER_WORKLOADS else len(FRONTIER_WORKLOADS))  # fmt: skip
    for r in records:
        plot_frontier(r, out / f"{r['workload']}.png")
    by_workload = {
        r["workload"]: [
            *(as_point(p) for p in r["baselines"]),
            as_point(next(p for p in r["ours"] if p["name"] == OURS)),
        ]
        for r in records
    }
    markdown = dominance_table(by_workload, OURS)
    summary = {
        r["workload"]: {
            "dominance": r["dominance"],
            "default_dominated_by": r["default_dominated_by"],
            "frontier": r["frontier"],
            "command": r["command"],
            "seed": r["seed"],
        }
        for r in records
    }
    (out / "dominance.md").write_text(markdown + "\n")
    (out / "points.md").write_text(points_table(records) + "\n")
    (out / "dominance.json").write_text(json.dumps(summary, indent=1) + "\n")
    return markdown


def points_table(records: Sequence[Mapping[str, Any]]) -> str:
    """A markdown table of every point of every workload: cost, violations, actions,
    and whether the point is on its workload's frontier."""
    rows = [
        "| workload | point | cost $ | SLO violations | scaling actions | on the frontier |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in records:
        for p in [*r["baselines"], *r["ours"]]:
            name = f"**{p['name']}**" if p["name"] == OURS else p["name"]
            rows.append(
                f"| {r['workload']} | {name} | {p['cost_usd']:.3f} | "
                f"{100 * p['slo_violation_rate']:.3f} % | {p['scaling_actions']} | "
                f"{'yes' if p['name'] in r['frontier'] else ''} |"
            )
    return "\n".join(rows)


def plot_frontier(record: Mapping[str, Any], path: Path) -> None:
    """Violations (%) against cost ($), both on log-like scales; ours' sweep as a line
    per knob, its default point starred, each baseline a labelled marker."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    markers = dict(zip(BASELINES, ("s", "D", "^", "v"), strict=True))
    for p in record["baselines"]:
        ax.scatter(p["cost_usd"], 100 * p["slo_violation_rate"], marker=markers.get(p["name"], "o"),
                   s=50, label=p["name"], zorder=3)  # fmt: skip
    default = next(p for p in record["ours"] if p["name"] == OURS)
    for knob in record["defaults"]:
        line = [p for p in record["ours"] if knob in p["overrides"]] + [default]
        line.sort(key=lambda p: p["overrides"].get(knob, record["defaults"][knob]))
        xs = [p["cost_usd"] for p in line]
        ys = [100 * p["slo_violation_rate"] for p in line]
        ax.plot(xs, ys, "o-", color="black", lw=1, ms=4, label=f"ours, {knob} swept", zorder=2)
        for i, (p, x, y) in enumerate(zip(line, xs, ys, strict=True)):
            ax.annotate(f"{p['overrides'].get(knob, record['defaults'][knob]):g}", (x, y),
                        textcoords="offset points", xytext=(3, 6 if i % 2 else -11),
                        fontsize=7)  # fmt: skip
    ax.scatter(default["cost_usd"], 100 * default["slo_violation_rate"], marker="*", s=220,
               color="crimson", label="ours (default settings)", zorder=4)  # fmt: skip
    highest = max(100 * p["slo_violation_rate"] for p in [*record["baselines"], *record["ours"]])
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=0.01)
    ax.set_ylim(-0.002, max(3 * highest, 0.05))  # room below 0 for the zero-miss points
    ax.set_xlabel("cost of the run, US $ (log)")
    ax.set_ylabel("SLO violations, % of queries (linear below 0.01 %)")
    ax.set_title(f"{record['workload']}: cost against violations (seed {record['seed']})")
    ax.grid(True, which="both", lw=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)

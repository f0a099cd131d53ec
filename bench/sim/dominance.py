"""Cost against violations: which points dominate which, and the frontier they draw.

Pure code over plain numbers, no simulation: a point *dominates* another when it costs
no more and misses no more objectives, and is strictly better on one of the two. The
frontier of a set of points is the points no other point of the set dominates. The
simulator's ``--frontier`` sweep (:mod:`bench.sim.frontier`) runs the policies and hands
their (cost, violation rate) points here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from queues.errors import InvalidRequest


@dataclass(frozen=True)
class Point:
    """One run's outcome: what it cost (US $) and the share of queries it answered late
    or not at all (0–1)."""

    name: str
    cost_usd: float
    violation_rate: float

    def __post_init__(self) -> None:
        if not math.isfinite(self.cost_usd) or self.cost_usd < 0:
            raise InvalidRequest(
                f"point {self.name!r} costs {self.cost_usd} $; give a finite cost >= 0"
            )
        if not math.isfinite(self.violation_rate) or not 0 <= self.violation_rate <= 1:
            raise InvalidRequest(
                f"point {self.name!r} has violation rate {self.violation_rate}; give a "
                "share between 0 and 1"
            )


def dominates(a: Point, b: Point) -> bool:
    """``a`` costs no more and misses no more than ``b``, and is strictly better on one."""
    no_worse = a.cost_usd <= b.cost_usd and a.violation_rate <= b.violation_rate
    better = a.cost_usd < b.cost_usd or a.violation_rate < b.violation_rate
    return no_worse and better


def frontier(points: Sequence[Point]) -> list[Point]:
    """The points that no other point dominates, cheapest first (ties: fewer misses,
    then name). Equal points are both kept: neither dominates the other."""
    _check_names(points)
    kept = [p for p in points if not any(dominates(q, p) for q in points)]
    return sorted(kept, key=lambda p: (p.cost_usd, p.violation_rate, p.name))


def dominance(points: Sequence[Point]) -> dict[str, list[str]]:
    """For each point's name, the names of the points it dominates, in input order."""
    _check_names(points)
    return {a.name: [b.name for b in points if dominates(a, b)] for a in points}


def dominated_by(point: Point, others: Sequence[Point]) -> list[str]:
    """The names of the points of ``others`` that dominate ``point``."""
    return [q.name for q in others if dominates(q, point)]


def dominance_table(by_workload: Mapping[str, Sequence[Point]], ours: str) -> str:
    """A markdown table: per workload, who dominates whom, and whether ``ours`` (the
    point the default settings choose) is dominated by any other point."""
    rows = [
        "| workload | dominates (a ≻ b: a costs no more and misses no more, one strictly) "
        f"| {ours} dominated by |",
        "| --- | --- | --- |",
    ]
    for workload, points in by_workload.items():
        names = {p.name for p in points}
        if ours not in names:
            raise InvalidRequest(
                f"workload {workload!r} has no point named {ours!r} (it has "
                f"{sorted(names)}); run the default settings on it first"
            )
        pairs = [f"{a} ≻ {b}" for a, beaten in dominance(points).items() for b in beaten]
        mine = next(p for p in points if p.name == ours)
        over = dominated_by(mine, [p for p in points if p.name != ours])
        rows.append(f"| {workload} | {'; '.join(pairs) or 'none'} | {', '.join(over) or 'none'} |")
    return "\n".join(rows)


def _check_names(points: Sequence[Point]) -> None:
    seen: set[str] = set()
    for p in points:
        if p.name in seen:
            raise InvalidRequest(f"two points are named {p.name!r}; give each point its own name")
        seen.add(p.name)

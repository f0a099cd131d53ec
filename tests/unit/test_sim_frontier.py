"""The frontier's pure parts: dominance, the frontier, the table, the sweep's parsing and
the verdict on a workload's points (no simulation runs here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.sim.dominance import Point, dominance, dominance_table, dominated_by, dominates, frontier
from bench.sim.engine import SimSettings
from bench.sim.frontier import (
    OURS,
    check_sweep,
    parse_sweep,
    sweep_points,
    verdict,
    write_table,
    write_workload,
)
from queues.errors import InvalidRequest


def P(name: str, cost: float, rate: float) -> Point:  # noqa: N802 - a point, briefly
    return Point(name, cost, rate)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (P("a", 1.0, 0.01), P("b", 2.0, 0.02), True),  # better on both
        (P("a", 1.0, 0.02), P("b", 2.0, 0.02), True),  # cheaper, equal misses
        (P("a", 2.0, 0.01), P("b", 2.0, 0.02), True),  # equal cost, fewer misses
        (P("a", 2.0, 0.02), P("b", 2.0, 0.02), False),  # equal: neither dominates
        (P("a", 1.0, 0.03), P("b", 2.0, 0.02), False),  # a trade-off, not dominance
        (P("a", 3.0, 0.01), P("b", 2.0, 0.02), False),
        (P("a", 2.0, 0.02), P("b", 1.0, 0.01), False),  # the other way round
        (P("a", 0.0, 0.0), P("b", 0.0, 1e-9), True),  # zero cost and misses count
    ],
)
def test_dominates(a: Point, b: Point, expected: bool) -> None:
    assert dominates(a, b) is expected


def test_dominance_is_never_mutual() -> None:
    points = [P("a", 1, 0.1), P("b", 1, 0.1), P("c", 0.5, 0.2), P("d", 2, 0.0), P("e", 2, 0.3)]
    for a in points:
        for b in points:
            assert not (dominates(a, b) and dominates(b, a))


def test_frontier_keeps_the_undominated_cheapest_first() -> None:
    points = [
        P("static-gpu", 9.0, 0.0),
        P("ours", 1.5, 0.0002),
        P("static-cpu", 2.6, 0.0002),  # equal misses, dearer: dominated by ours
        P("infaas", 3.1, 0.04),
        P("cheap", 0.5, 0.3),
        P("twin", 1.5, 0.0002),  # equal to ours: both stay
    ]
    assert [p.name for p in frontier(points)] == ["cheap", "ours", "twin", "static-gpu"]


def test_dominance_lists_whom_each_point_beats() -> None:
    points = [P("x", 1, 0.0), P("y", 2, 0.0), P("z", 0.5, 0.5)]
    assert dominance(points) == {"x": ["y"], "y": [], "z": []}
    assert dominated_by(P("y", 2, 0.0), points) == ["x"]
    assert dominated_by(P("q", 0.1, 0.0), points) == []


def test_bad_points_are_refused() -> None:
    with pytest.raises(InvalidRequest, match=r"violation rate 1\.5"):
        P("a", 1.0, 1.5)
    with pytest.raises(InvalidRequest, match="finite cost"):
        P("a", float("nan"), 0.0)
    with pytest.raises(InvalidRequest, match="two points are named 'a'"):
        frontier([P("a", 1, 0), P("a", 2, 0)])


def test_table_names_the_points_that_dominate_ours() -> None:
    table = dominance_table(
        {
            "w1": [P("static", 2.0, 0.01), P("ours", 1.0, 0.01)],
            "w2": [P("static", 1.0, 0.0), P("ours", 1.0, 0.01)],
        },
        "ours",
    )
    rows = table.splitlines()
    assert rows[2] == "| w1 | ours ≻ static | none |"
    assert rows[3] == "| w2 | static ≻ ours | static |"
    with pytest.raises(InvalidRequest, match="no point named 'ours'"):
        dominance_table({"w": [P("static", 1, 0)]}, "ours")


def test_parse_sweep() -> None:
    assert parse_sweep(["headroom=1.05,1.3", "forecast_s=20"]) == {
        "headroom": (1.05, 1.3),
        "forecast_s": (20.0,),
    }
    for bad in ("headroom", "headroom=", "=1.2", "headroom=a,b"):
        with pytest.raises(InvalidRequest, match="--sweep"):
            parse_sweep([bad])


def test_sweep_points_start_at_the_default_and_skip_it() -> None:
    points = sweep_points({"headroom": (1.05, 1.15, 1.3)}, {"headroom": 1.15})
    assert [p.name for p in points] == [OURS, "ours headroom=1.05", "ours headroom=1.3"]


def test_a_sweep_out_of_bounds_or_unknown_is_refused_before_running() -> None:
    with pytest.raises(InvalidRequest, match=r"headroom=0\.5"):
        check_sweep({"headroom": (0.5,)}, SimSettings())
    with pytest.raises(InvalidRequest, match="unknown scaler settings"):
        check_sweep({"no_such_knob": (1.0,)}, SimSettings())
    check_sweep({"headroom": (1.05, 1.3)}, SimSettings())  # in bounds: no error


def _record(workload: str, ours_cost: float) -> dict[str, object]:
    def point(name: str, cost: float, rate: float, **over: float) -> dict[str, object]:
        return {"name": name, "cost_usd": cost, "slo_violation_rate": rate,
                "scaling_actions": 3, "late": 0, "failed": 0, "queries": 10, "wall_s": 1.0,
                "overrides": over}  # fmt: skip

    return {
        "workload": workload,
        "command": "python -m bench.sim --frontier",
        "seed": 0,
        "duration_s": 60,
        "queries": 10,
        "defaults": {"headroom": 1.15},
        "baselines": [point("static-cpu", 2.0, 0.001), point("infaas", 0.5, 0.03)],
        "ours": [
            point(OURS, ours_cost, 0.001),
            point("ours headroom=1.3", 3.0, 0.0, headroom=1.3),
        ],
    }


def test_verdict_and_the_table_written_from_the_files(tmp_path: Path) -> None:
    good = verdict(_record("fluctuating", 1.0))
    assert good["default_dominated_by"] == []
    assert good["dominance"]["ours"] == ["static-cpu"]
    assert good["frontier"] == ["infaas", "ours", "ours headroom=1.3"]
    bad = verdict(_record("azure-code", 2.5))  # dearer than static-cpu at equal misses
    assert bad["default_dominated_by"] == ["static-cpu"]
    write_workload(good, tmp_path)
    write_workload(bad, tmp_path)
    assert (tmp_path / "fluctuating.png").stat().st_size > 0
    markdown = write_table(tmp_path)
    assert markdown == (tmp_path / "dominance.md").read_text().rstrip("\n")
    # the table follows the frontier workloads' order, not the files' names
    assert markdown.splitlines()[2].startswith("| fluctuating | ")
    assert markdown.splitlines()[3].endswith("| static-cpu |")
    points = (tmp_path / "points.md").read_text().splitlines()
    assert "| fluctuating | **ours** | 1.000 | 0.100 % | 3 | yes |" in points
    assert "| azure-code | **ours** | 2.500 | 0.100 % | 3 |  |" in points
    summary = json.loads((tmp_path / "dominance.json").read_text())
    assert summary["azure-code"]["default_dominated_by"] == ["static-cpu"]


def test_a_table_of_nothing_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="--frontier first"):
        write_table(tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing written

"""SLO accounting: tallies, mergeable percentiles, demand classes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from api_gateway.accounting import Accounting, Tally, merged_view
from registry.live_docs import ClassDemand, RequirementClass


def _fill(acc: Accounting, latencies: list[float], *, variant: str = "v1", hw: str = "cpu") -> None:
    for ms in latencies:
        acc.answered(
            "digits", variant, hw, elapsed_ms=ms, latency_ms=10.0, min_accuracy=0.9,
            accuracy=0.95, cost_usd=1e-6,
        )  # fmt: skip


def test_percentiles_are_within_a_bucket() -> None:
    rng = np.random.default_rng(0)
    latencies = rng.lognormal(1.0, 0.8, 5000).tolist()
    tally = Tally()
    for ms in latencies:
        tally.add(ms, None, None, 0.9, 0.0)
    for q in (50, 99):
        exact = float(np.percentile(latencies, q))
        assert tally.percentile_ms(q) == pytest.approx(exact, rel=0.06)


def test_views_count_misses_accuracy_and_cost() -> None:
    acc = Accounting()
    _fill(acc, [5.0] * 9 + [20.0])
    acc.failed("digits", "queue_full")
    view = merged_view([json.loads(json.dumps(acc.to_doc()))], "digits")
    assert view["queries"] == 10
    assert view["slo_miss_rate"] == pytest.approx(0.1)
    assert view["accuracy_miss_rate"] == 0.0
    assert view["mean_accuracy"] == pytest.approx(0.95)
    assert view["cost_per_1000_queries_usd"] == pytest.approx(1e-3)
    assert view["errors"] == {"queue_full": 1}
    assert view["variants"]["v1"]["queries"] == 10
    assert view["hardware"]["cpu"]["queries"] == 10


def test_gateways_merge_exactly() -> None:
    a, b = Accounting(), Accounting()
    _fill(a, [1.0] * 50, variant="fast")
    _fill(b, [100.0] * 50, variant="slow", hw="gpu")
    view = merged_view([a.to_doc(), b.to_doc()], "digits")
    assert view["gateways"] == 2
    assert view["queries"] == 100
    assert view["p50_ms"] == pytest.approx(1.0, rel=0.06)
    assert view["p99_ms"] == pytest.approx(100.0, rel=0.06)
    assert set(view["variants"]) == {"fast", "slow"}
    assert view["slo_miss_rate"] == pytest.approx(0.5)


def test_an_accuracy_floor_missed_is_counted() -> None:
    acc = Accounting()
    acc.answered("a", "v", "cpu", elapsed_ms=1, latency_ms=None, min_accuracy=0.99,
                 accuracy=0.95, cost_usd=0)  # fmt: skip
    assert merged_view([acc.to_doc()], "a")["accuracy_miss_rate"] == 1.0


def test_unknown_app_has_empty_stats() -> None:
    view = merged_view([Accounting().to_doc()], "nope")
    assert view["queries"] == 0
    assert view["p50_ms"] is None


def test_demand_is_a_rate_over_complete_seconds() -> None:
    acc = Accounting()
    for second in range(100, 106):
        for _ in range(10):
            acc.arrival("digits", second + 0.5, 20.0, 0.97, None)
    acc.arrival("other", 105.2, None, None, None)
    classes = acc.demand(106.0)  # seconds 101..105 complete
    digits = [c for c in classes if c.requirements.app == "digits"]
    assert digits == [ClassDemand(RequirementClass("digits", 20.0, 0.97, None), 10.0)]
    assert [c.qps for c in classes if c.requirements.app == "other"] == [0.2]
    assert acc.demand(200.0) == []  # old arrivals age out


def test_similar_queries_count_as_one_class() -> None:
    acc = Accounting()
    acc.arrival("digits", 100.5, 123.0, 0.9755, None)
    acc.arrival("digits", 100.6, 128.0, 0.976, None)
    (only,) = acc.demand(102.0)
    assert only.qps == pytest.approx(2 / 5)
    assert only.requirements == RequirementClass("digits", 120.0, 0.976, None)

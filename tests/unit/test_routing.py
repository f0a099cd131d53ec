"""Plan-directed routing: routes from a plan, the round-robin, and the selector following
them (registry/routing.py, registry/selector.py)."""

from __future__ import annotations

from collections import Counter

import pytest

from registry.live_docs import class_key
from registry.livestate import OVERLOADED
from registry.routing import RoundRobin, Routes
from registry.selector import Requirements, SelectorIndex, select
from scaler.snapshot import Demand
from tests import factories as f

FAST = f.variant("lr.onnx-fp32.cpu-t1", 0.95, 0.05)
MID = f.variant("mlp.onnx-fp32.cpu-t1", 0.97, 0.3)
SLOW = f.variant("cnn.onnx-fp32.cpu-t1", 0.99, 8.0)
GPU = f.variant("cnn.onnx-fp32.gpu", 0.99, 0.9, hardware="gpu", cost=3.06)
ALL = (FAST, MID, SLOW, GPU)
LOOSE = Requirements(app="digits", min_accuracy=0.9)
LOOSE_KEY = class_key("digits", None, 0.9, None)


def index(routes: Routes, loads: dict[str, str] | None = None) -> SelectorIndex:
    live = f.live(f.worker("w1", loads or dict.fromkeys((v.id for v in ALL), "active")))
    return SelectorIndex(f.catalog(*ALL), live, overhead_ms=0.0, routes=routes)


def test_the_scaler_and_the_gateway_name_a_class_alike() -> None:
    demand = Demand(app="digits", qps=1.0, latency_ms=10.0, min_accuracy=0.97)
    req = Requirements(app="digits", latency_ms=10.0, min_accuracy=0.97)
    assert demand.key == class_key(req.app or "", req.latency_ms, req.min_accuracy, None)


def test_round_robin_follows_the_weights_evenly() -> None:
    rr = RoundRobin()
    picks = [rr.pick("c", [("a", 3.0), ("b", 1.0)]) for _ in range(40)]
    assert Counter(picks) == {"a": 30, "b": 10}
    # smooth: never more than three a's in a row between b's
    assert "aaaa" not in "".join(picks)


def test_round_robin_restarts_when_the_candidates_change() -> None:
    rr = RoundRobin()
    rr.pick("c", [("a", 1.0), ("b", 1.0)])
    assert {rr.pick("c", [("b", 1.0), ("x", 1.0)]) for _ in range(2)} == {"b", "x"}
    with pytest.raises(ValueError, match="at least one candidate"):
        rr.pick("c", [])


def test_routes_come_from_the_plan_and_survive_its_document() -> None:
    routes = Routes.from_routing(
        {(LOOSE_KEY, FAST.id): 30.0, (LOOSE_KEY, MID.id): 10.0, ("other", MID.id): 0.0}
    )
    assert routes.get(LOOSE_KEY) == ((FAST.id, 30.0), (MID.id, 10.0))
    assert routes.get("other") is None  # nothing routed there
    assert Routes.from_doc(routes.to_doc()) == routes


@pytest.mark.parametrize(
    "doc",
    [None, [], {"k": "x"}, {"k": [{"variant": 3, "qps": 1}]}, {"k": [{"variant": "a", "qps": -1}]}],
)
def test_a_malformed_routes_document_gives_no_routes(doc: object) -> None:
    assert not Routes.from_doc(doc)


def test_a_split_class_is_dealt_as_planned() -> None:
    routes = Routes({LOOSE_KEY: ((FAST.id, 30.0), (MID.id, 10.0))})
    idx = index(routes)
    decisions = [select(idx, LOOSE) for _ in range(40)]
    assert Counter(d.variant.id for d in decisions) == {FAST.id: 30, MID.id: 10}
    assert all(d.dealt for d in decisions)
    assert "routed by the scaler's plan (75% of class" in decisions[0].reason


def test_a_class_planned_on_one_variant_goes_there_not_to_the_cheapest() -> None:
    idx = index(Routes({LOOSE_KEY: ((MID.id, 40.0),)}))
    decision = select(idx, LOOSE)
    assert decision.variant == MID  # FAST is cheaper per query, but the plan says MID
    assert not decision.dealt
    assert select(index(Routes()), LOOSE).variant == FAST  # without routes: the cheapest


def test_routed_variants_not_running_healthy_are_left_out() -> None:
    routes = Routes({LOOSE_KEY: ((FAST.id, 30.0), (MID.id, 10.0), (SLOW.id, 5.0))})
    loads = {FAST.id: OVERLOADED, MID.id: "active"}  # SLOW is not running at all
    decisions = {select(index(routes, loads), LOOSE).variant.id for _ in range(10)}
    assert decisions == {MID.id}


def test_a_class_whose_planned_variants_are_all_overloaded_stays_on_them() -> None:
    # spilling onto a variant the plan sized for other loads would overload it too
    routes = Routes({LOOSE_KEY: ((MID.id, 30.0), (SLOW.id, 10.0))})
    loads = {FAST.id: "active", MID.id: OVERLOADED, SLOW.id: OVERLOADED}
    idx = index(routes, loads)
    decisions = [select(idx, LOOSE) for _ in range(8)]
    assert Counter(d.variant.id for d in decisions) == {MID.id: 6, SLOW.id: 2}
    assert all(d.dealt and "its variants are Overloaded" in d.reason for d in decisions)
    # even with no healthy variant at all
    alone = select(index(Routes({LOOSE_KEY: ((MID.id, 30.0),)}), {MID.id: OVERLOADED}), LOOSE)
    assert alone.variant == MID
    assert not alone.dealt
    assert alone.load_request is None


def test_an_overloaded_planned_variant_gives_way_to_a_healthy_planned_one() -> None:
    routes = Routes({LOOSE_KEY: ((FAST.id, 30.0), (MID.id, 10.0))})
    decision = select(index(routes, {FAST.id: OVERLOADED, MID.id: "active"}), LOOSE)
    assert decision.variant == MID
    assert "Overloaded" not in decision.reason


def test_with_no_routed_variant_usable_the_selector_rule_decides() -> None:
    routes = Routes({LOOSE_KEY: ((SLOW.id, 30.0),)})
    decision = select(index(routes, {FAST.id: "active", MID.id: "active"}), LOOSE)
    assert decision.variant == FAST
    assert decision.reason == "cheapest per query among running eligible variants"


def test_a_route_never_breaks_the_query_s_own_requirements() -> None:
    # a stale or foreign route to a variant that misses the objective is ignored
    tight = Requirements(app="digits", min_accuracy=0.9, latency_ms=1.0)
    key = class_key("digits", 1.0, 0.9, None)
    idx = index(Routes({key: ((SLOW.id, 30.0), (FAST.id, 1.0))}))
    assert {select(idx, tight).variant.id for _ in range(5)} == {FAST.id}


def test_named_models_and_variants_are_not_routed() -> None:
    idx = index(Routes({LOOSE_KEY: ((MID.id, 40.0),)}))
    assert select(idx, Requirements(variant=SLOW.id)).variant == SLOW
    by_model = select(idx, Requirements(app="digits", model=FAST.model, min_accuracy=0.9))
    assert by_model.variant == FAST


def test_the_rotation_carries_over_an_index_rebuild() -> None:
    routes = Routes({LOOSE_KEY: ((FAST.id, 1.0), (MID.id, 1.0))})
    first = index(routes)
    a = select(first, LOOSE).variant
    rebuilt = SelectorIndex(
        first.catalog, first.live, overhead_ms=0.0, previous=first, routes=routes
    )
    assert select(rebuilt, LOOSE).variant != a

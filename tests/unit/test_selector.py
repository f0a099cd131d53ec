"""The selector on hand-built snapshots: the paper's cases and our additions."""

from __future__ import annotations

import pytest

from queues.errors import BatchTooLarge, NoEligibleVariant, UnknownApp, UnknownModel, UnknownVariant
from registry.livestate import INTERFERED, OVERLOADED
from registry.selector import Requirements, SelectorIndex, select
from tests import factories as f

FAST = f.variant("lr.onnx-fp32.cpu-t1", 0.95, 0.05)
MID = f.variant("mlp.onnx-fp32.cpu-t1", 0.97, 0.3)
SLOW = f.variant("cnn.onnx-fp32.cpu-t1", 0.99, 8.0)
GPU = f.variant("cnn.onnx-fp32.gpu", 0.99, 0.9, hardware="gpu", cost=3.06)
ALL = (FAST, MID, SLOW, GPU)


def index(*running: str, variants: tuple[object, ...] = ALL, **states: str) -> SelectorIndex:
    loads = dict.fromkeys(running, "active")
    loads.update({k.replace("__", "."): v for k, v in states.items()})
    live = f.live(f.worker("w1", loads))
    return SelectorIndex(f.catalog(*variants), live, overhead_ms=0.0)  # type: ignore[arg-type]


def test_loose_query_gets_the_cheapest_and_strict_gets_the_accurate() -> None:
    idx = index(FAST.id, MID.id, SLOW.id, GPU.id)
    assert select(idx, Requirements(app="digits", min_accuracy=0.9)).variant == FAST
    strict = select(idx, Requirements(app="digits", min_accuracy=0.985, latency_ms=50))
    assert strict.variant == SLOW  # cheaper per query than the GPU at batch 1


def test_tight_slo_never_lands_on_a_cpu_variant_that_cannot_meet_it() -> None:
    idx = index(FAST.id, MID.id, SLOW.id, GPU.id)
    decision = select(idx, Requirements(app="digits", min_accuracy=0.985, latency_ms=2))
    assert decision.variant == GPU


def test_running_beats_faster_but_cold() -> None:
    idx = index(SLOW.id)  # only the slow CPU variant runs
    decision = select(idx, Requirements(app="digits", min_accuracy=0.985, latency_ms=50))
    assert decision.variant == SLOW
    assert decision.load_request is None


def test_cold_best_is_loaded_while_a_running_variant_fills_in() -> None:
    idx = index(SLOW.id)
    decision = select(idx, Requirements(app="digits", min_accuracy=0.985, latency_ms=2))
    assert decision.load_request == GPU.id
    assert decision.variant == SLOW  # meets accuracy, serves while the GPU variant loads
    assert "load requested" in decision.reason


def test_cold_choice_without_fill_in_ranks_by_load_time_plus_latency() -> None:
    quick_load = f.variant("a.onnx-fp32.cpu-t1", 0.96, 1.0, load_ms=50)
    slow_load = f.variant("b.onnx-fp32.cpu-t1", 0.96, 0.5, load_ms=5000)
    idx = index(variants=(quick_load, slow_load))
    decision = select(idx, Requirements(app="digits", min_accuracy=0.9))
    assert decision.variant == quick_load
    assert decision.load_request == quick_load.id


def test_cold_choice_takes_the_cheaper_of_two_about_as_soon() -> None:
    """A 2-thread copy that loads 0.2 ms sooner is not worth twice the cost per hour."""
    t1 = f.variant("w.onnx-fp32.cpu-t1", 0.98, 0.012, cost=0.048, load_ms=2.4)
    t2 = f.variant("w.onnx-fp32.cpu-t2", 0.98, 0.012, cost=0.096, threads=2, load_ms=2.2)
    idx = index(variants=(t2, t1))
    decision = select(idx, Requirements(app="digits", min_accuracy=0.97, latency_ms=20))
    assert decision.variant == t1
    assert decision.load_request == t1.id
    assert "cheapest of those soonest" in decision.reason


@pytest.mark.parametrize("state", [OVERLOADED, INTERFERED])
def test_overloaded_and_interfered_variants_are_avoided(state: str) -> None:
    live = f.live(f.worker("w1", {FAST.id: state, MID.id: "active"}))
    idx = SelectorIndex(f.catalog(*ALL), live, overhead_ms=0.0)
    decision = select(idx, Requirements(app="digits", min_accuracy=0.9))
    assert decision.variant == MID


def test_a_variant_healthy_on_one_worker_still_counts() -> None:
    live = f.live(f.worker("w1", {FAST.id: OVERLOADED}), f.worker("w2", {FAST.id: "active"}))
    idx = SelectorIndex(f.catalog(*ALL), live, overhead_ms=0.0)
    decision = select(idx, Requirements(app="digits", min_accuracy=0.9))
    assert decision.variant == FAST
    assert decision.worker == "w2"


def test_least_loaded_worker_is_named() -> None:
    live = f.live(
        f.worker("w1", {FAST.id: "active"}, outstanding=9),
        f.worker("w2", {FAST.id: "active"}, outstanding=1),
    )
    idx = SelectorIndex(f.catalog(*ALL), live, overhead_ms=0.0)
    assert select(idx, Requirements(app="digits")).worker == "w2"


def test_max_cost_is_honoured() -> None:
    idx = index(*[v.id for v in ALL])
    decision = select(
        idx, Requirements(app="digits", min_accuracy=0.985, latency_ms=50, max_cost_per_hour=0.1)
    )
    assert decision.variant == SLOW
    with pytest.raises(NoEligibleVariant, match=r"cost <= 0.1"):
        select(
            idx,
            Requirements(app="digits", min_accuracy=0.985, latency_ms=2, max_cost_per_hour=0.1),
        )


def test_ties_go_to_the_closest_fit() -> None:
    a = f.variant("a.onnx-fp32.cpu-t1", 0.96, 1.0, slope_ms=0.0)
    b = f.variant("b.onnx-fp32.cpu-t2", 0.96, 0.5, slope_ms=0.0, cost=0.096)
    idx = index(a.id, b.id, variants=(a, b))
    # same cost per query (double price, half latency): the closer fit to 2 ms wins
    assert select(idx, Requirements(app="digits", latency_ms=2)).variant == a


def test_contradictory_requirements_name_the_closest_variants() -> None:
    idx = index(*[v.id for v in ALL])
    with pytest.raises(NoEligibleVariant) as info:
        select(idx, Requirements(app="digits", min_accuracy=0.999))
    message = info.value.message
    assert "best accuracy is 0.9900" in message
    assert "fastest latency is 0.05 ms (lr.onnx-fp32.cpu-t1)" in message
    assert info.value.details["closest"]


def test_latency_below_every_profile_is_refused() -> None:
    idx = index(*[v.id for v in ALL])
    with pytest.raises(NoEligibleVariant, match=r"latency <= 0\.01 ms"):
        select(idx, Requirements(app="digits", latency_ms=0.01))


def test_batch_larger_than_any_variant_is_refused_with_the_limit() -> None:
    idx = index(*[v.id for v in ALL])
    with pytest.raises(BatchTooLarge, match="largest batch any variant of app digits takes is 32"):
        select(idx, Requirements(app="digits", batch=33))


def test_predicted_latency_grows_with_the_batch() -> None:
    idx = index(FAST.id, SLOW.id, variants=(FAST, SLOW))
    assert select(idx, Requirements(app="digits", min_accuracy=0.98, latency_ms=10)).variant == SLOW
    with pytest.raises(NoEligibleVariant):
        select(idx, Requirements(app="digits", min_accuracy=0.98, latency_ms=10, batch=16))


def test_precedence_variant_over_model_over_app() -> None:
    idx = index(*[v.id for v in ALL])
    assert select(idx, Requirements(app="digits", variant=MID.id)).variant == MID
    decision = select(idx, Requirements(model="cnn", latency_ms=50))
    assert decision.variant == SLOW
    assert select(idx, Requirements(model="cnn", latency_ms=2)).variant == GPU


def test_unknown_names_are_404s() -> None:
    idx = index(*[v.id for v in ALL])
    with pytest.raises(UnknownApp, match="no app named 'nope'"):
        select(idx, Requirements(app="nope"))
    with pytest.raises(UnknownModel):
        select(idx, Requirements(model="nope"))
    with pytest.raises(UnknownVariant):
        select(idx, Requirements(variant="nope.onnx-fp32.cpu-t1"))


def test_forced_variant_takes_no_more_than_its_batch() -> None:
    idx = index(*[v.id for v in ALL])
    with pytest.raises(BatchTooLarge, match="at most 32"):
        select(idx, Requirements(variant=MID.id, batch=40))


def test_overhead_counts_against_the_objective() -> None:
    idx = SelectorIndex(f.catalog(*ALL), f.running(*[v.id for v in ALL]), overhead_ms=1.0)
    decision = select(idx, Requirements(app="digits", min_accuracy=0.96, latency_ms=1.35))
    assert decision.variant == MID  # 0.3 + 1.0 fits 1.35
    with pytest.raises(NoEligibleVariant):
        select(idx, Requirements(app="digits", min_accuracy=0.96, latency_ms=1.25))


def test_explain_lists_every_candidate_with_a_reason() -> None:
    idx = index(*[v.id for v in ALL])
    decision = select(
        idx, Requirements(app="digits", min_accuracy=0.96, latency_ms=5), explain=True
    )
    reasons = {c.variant: c.reason for c in decision.candidates}
    assert reasons[MID.id] == "chosen"
    assert reasons[FAST.id].startswith("accuracy 0.9500 < 0.9600")
    assert reasons[SLOW.id].startswith("predicted latency")
    assert reasons[GPU.id] == "eligible, but costs more per query"


def test_an_unhealthy_variant_fills_in_rather_than_no_answer() -> None:
    live = f.live(f.worker("w1", {SLOW.id: INTERFERED}))
    idx = SelectorIndex(f.catalog(*ALL), live, overhead_ms=0.0)
    decision = select(idx, Requirements(app="digits", min_accuracy=0.985, latency_ms=50))
    assert decision.variant == SLOW
    assert decision.load_request is not None


def test_a_loading_variant_does_not_fill_in() -> None:
    live = f.live(f.worker("w1", {SLOW.id: "loading"}), f.worker("g1", hardware="gpu"))
    idx = SelectorIndex(f.catalog(*ALL), live, overhead_ms=0.0)
    decision = select(idx, Requirements(app="digits", min_accuracy=0.985, latency_ms=50))
    # nothing can answer now: the soonest to load and answer is chosen (the query waits)
    assert decision.variant == GPU
    assert decision.load_request == GPU.id


def test_a_cold_variant_no_live_worker_could_load_comes_last() -> None:
    """Only CPU workers are live: a CPU variant is asked for, not the faster GPU one."""
    live = f.live(f.worker("w1", {SLOW.id: "loading"}))
    idx = SelectorIndex(f.catalog(*ALL), live, overhead_ms=0.0)
    decision = select(idx, Requirements(app="digits", min_accuracy=0.985, latency_ms=50))
    assert decision.variant.hardware == "cpu"
    assert decision.load_request == decision.variant.id
    nothing_live = SelectorIndex(f.catalog(*ALL), f.live(), overhead_ms=0.0)
    assert select(nothing_live, Requirements(app="digits", min_accuracy=0.985)).variant == GPU

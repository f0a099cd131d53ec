"""Building the scaler's snapshot: demand classes, what a replica serves, worker views;
bad records are refused with a message and nothing is changed."""

from __future__ import annotations

import copy
import math

import pytest

from queues.errors import ConfigError, InvalidRequest
from registry.live_docs import class_key
from registry.livestate import INTERFERED, OVERLOADED, VariantLoad, WorkerReport
from registry.pricing import DEFAULT_INSTANCES, Instance, PriceTable
from registry.types import CatalogSnapshot
from scaler.settings import ScalerSettings
from scaler.snapshot import (
    Demand,
    ScalerSnapshot,
    build_snapshot,
    busy_share_for_tail,
)
from tests import factories as f

CPU = "m.onnx-fp32.cpu-t1"
FAST = "fast.onnx-fp32.cpu-t2"
GPU = "m.trt-fp16.gpu"


def catalog() -> CatalogSnapshot:
    return f.catalog(
        # 10 ms per input at any batch: 100 qps per replica whatever the batch
        f.variant(CPU, 0.90, 10.0, slope_ms=10.0, max_batch=8, load_ms=200),
        # 4 ms + 1 ms per input: batch 8 takes 12 ms (667 qps), batch 1 takes 5 ms
        f.variant(FAST, 0.80, 5.0, slope_ms=1.0, max_batch=8, threads=2, cost=0.096),
        f.variant(GPU, 0.95, 2.0, slope_ms=0.1, max_batch=32, hardware="gpu", cost=3.06),
    )


SETTINGS = ScalerSettings(overhead_ms=0.0)


def snap(
    demands: list[Demand], depths: dict[str, int] | None = None, **workers: WorkerReport
) -> ScalerSnapshot:
    live = f.live(*workers.values())
    return build_snapshot(
        1000.0, catalog(), live, demands, depths or {}, PriceTable.default(), SETTINGS
    )


def test_each_class_gets_a_key_and_duplicates_add_up() -> None:
    s = snap(
        [
            Demand("digits", 10.0, latency_ms=50, min_accuracy=0.9, queue_depth=3),
            Demand("digits", 5.0, latency_ms=50, min_accuracy=0.9, queue_depth=1),
            Demand("digits", 7.0),
        ]
    )
    assert [(c.key, c.qps, c.backlog) for c in s.classes] == [
        ("digits", 7.0, 0),
        ("digits|acc>=0.9|lat<=50ms", 15.0, 4),
    ]
    assert class_key("a", 20.0, 0.5, 0.1) == "a|acc>=0.5|lat<=20ms|cost<=0.1"


def test_a_replica_serves_a_class_at_the_largest_batch_that_fits_its_latency() -> None:
    s = snap([Demand("digits", 1.0), Demand("digits", 1.0, latency_ms=8.0)])
    loose, tight = "digits", "digits|lat<=8ms"
    fast = s.variants[FAST].capacity_qps
    assert fast[loose] == pytest.approx(1000 * 8 / 12)  # batch 8 at 12 ms
    assert fast[tight] == pytest.approx(1000 * 4 / 8)  # batch 4 at 8 ms is the largest that fits
    assert tight not in s.variants[CPU].capacity_qps  # 10 ms even at batch 1


def test_accuracy_floor_and_cost_cap_decide_who_serves() -> None:
    s = snap(
        [Demand("digits", 1.0, min_accuracy=0.85), Demand("digits", 1.0, max_cost_per_hour=0.1)]
    )
    accurate, cheap = "digits|acc>=0.85", "digits|cost<=0.1"
    assert set(s.variants[FAST].capacity_qps) == {cheap}  # accuracy 0.80
    assert set(s.variants[GPU].capacity_qps) == {accurate}  # 3.06 $/h
    assert set(s.variants[CPU].capacity_qps) == {accurate, cheap}


def test_replica_costs_come_from_the_price_table() -> None:
    cheap = PriceTable(
        {
            "m5.2xlarge": Instance("m5.2xlarge", "cpu", 0.8, 8),
            "p3.2xlarge": DEFAULT_INSTANCES[2],
        }
    )
    s = build_snapshot(0.0, catalog(), f.live(), [], {}, cheap, SETTINGS)
    assert s.variants[CPU].cost_per_hour == pytest.approx(0.1)  # 1 of 8 vCPUs
    assert s.variants[FAST].cost_per_hour == pytest.approx(0.2)
    assert s.variants[GPU].cost_per_hour == pytest.approx(3.06)
    assert (s.variants[CPU].cores, s.variants[GPU].cores) == (1, 0)


def test_workers_show_room_replicas_and_interference() -> None:
    measured = VariantLoad(
        CPU, "digits", state=INTERFERED, replicas=2, model_p50_ms=40.0, mean_batch=1
    )
    guessed = VariantLoad(FAST, "digits", state=INTERFERED, replicas=1)
    cpu = WorkerReport("w1", "cpu", "h", 1, 4, {CPU: measured, FAST: guessed}, cpu_util=0.5)
    gpu = f.worker_report("g1", {GPU: 1}, hardware="gpu", states={GPU: OVERLOADED}, utilisation=0.9)
    s = snap([], w1=cpu, g1=gpu)
    w1, g1 = s.workers["w1"], s.workers["g1"]
    assert (w1.cores, w1.memory_mb, w1.replicas) == (
        4,
        SETTINGS.cpu_worker_memory_mb,
        {CPU: 2, FAST: 1},
    )
    assert w1.capacity_factor[CPU] == pytest.approx(10.0 / 40.0)  # profile 10 ms, measured 40
    assert w1.capacity_factor[FAST] == SETTINGS.interfered_capacity  # nothing measured
    assert w1.utilisation == 0.5
    assert w1.troubled
    assert (g1.memory_mb, g1.max_replicas, g1.utilisation) == (
        SETTINGS.gpu_memory_mb,
        SETTINGS.gpu_max_replicas,
        0.9,
    )
    assert g1.troubled


def test_queue_depths_are_kept_per_variant() -> None:
    s = snap([], {CPU: 40, GPU: 0})
    assert s.backlog == {CPU: 40}


BAD_DEMANDS = [
    (Demand("nope", 1.0), "no such app"),
    (Demand("digits", -1.0), "qps -1.0 must be a finite number >= 0"),
    (Demand("digits", math.nan), "qps nan"),
    (Demand("digits", 1.0, latency_ms=0.0), "latency_ms 0.0 must be > 0"),
    (Demand("digits", 1.0, min_accuracy=1.5), "min_accuracy 1.5 must lie in [0, 1]"),
    (Demand("digits", 1.0, max_cost_per_hour=-2.0), "max_cost_per_hour -2.0 must be >= 0"),
    (Demand("digits", 1.0, queue_depth=-1), "queue_depth -1 must be >= 0"),
]


@pytest.mark.parametrize(("demand", "message"), BAD_DEMANDS)
def test_bad_demand_is_refused_and_nothing_changes(demand: Demand, message: str) -> None:
    cat, live = catalog(), f.live(f.worker_report("w1", {CPU: 1}))
    demands = [Demand("digits", 3.0), demand]
    depths = {CPU: 2}
    before = copy.deepcopy((demands, depths, live.workers))
    with pytest.raises(InvalidRequest, match=message.replace("[", r"\[").replace("]", r"\]")):
        build_snapshot(0.0, cat, live, demands, depths, PriceTable.default(), SETTINGS)
    assert (demands, depths, live.workers) == before


@pytest.mark.parametrize(
    ("depths", "message"),
    [
        ({"ghost.onnx-fp32.cpu-t1": 3}, "no variant of the catalog"),
        ({CPU: -4}, "queue depth -4 of"),
    ],
)
def test_bad_queue_depths_are_refused(depths: dict[str, int], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        snap([], depths)


def test_a_bad_time_is_refused() -> None:
    for now in (-1.0, math.inf):
        with pytest.raises(InvalidRequest, match="now_ms"):
            build_snapshot(now, catalog(), f.live(), [], {}, PriceTable.default(), SETTINGS)


def test_a_price_table_that_makes_no_sense_is_refused() -> None:
    table = PriceTable({i.name: i for i in DEFAULT_INSTANCES}, cpu_instance="p3.2xlarge")
    with pytest.raises(ConfigError, match="is gpu hardware"):
        build_snapshot(0.0, catalog(), f.live(), [], {}, table, SETTINGS)


def test_with_a_queueing_tail_two_batch_times_must_fit_or_the_replica_runs_less_busy() -> None:
    live = f.live()
    demands = [Demand("digits", 1.0, latency_ms=16.0), Demand("digits", 1.0, latency_ms=14.0)]
    queueing = ScalerSettings(overhead_ms=0.0, queueing_tail=0.01)
    s = build_snapshot(1000.0, catalog(), live, demands, {}, PriceTable.default(), queueing)
    roomy, tight = "digits|lat<=16ms", "digits|lat<=14ms"
    fast = s.variants[FAST].capacity_qps
    assert fast[roomy] == pytest.approx(1000 * 4 / 8)  # 2 × 8 ms of batch 4 fit 16 ms
    cpu = s.variants[CPU].capacity_qps  # 10 ms a query: two never fit 14 ms, one does
    assert 0 < cpu[tight] < 0.5 * 100  # busy at most a share that keeps waits in the slack
    assert cpu[tight] == pytest.approx(100 * busy_share_for_tail(0.4, 0.01))


def test_the_busy_share_for_a_tail_is_an_m_d_1_bound() -> None:
    for slack, tail in [(0.8, 0.01), (3.0, 0.01), (0.5, 0.05)]:
        rho = busy_share_for_tail(slack, tail)
        assert 0 < rho < 1
        assert rho * math.exp(-2 * (1 - rho) * slack / rho) == pytest.approx(tail, rel=1e-3)
    assert busy_share_for_tail(0.0, 0.01) == 0.0
    assert busy_share_for_tail(3.0, 0.01) > busy_share_for_tail(0.8, 0.01)  # more slack, busier

"""The scaling policy on hand-built snapshots, tick after tick, against a cluster that
does at once what each plan asks: rising load, falling load, noise, idle variants and
workers, the worker rules, and the replicate-only baseline."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import replace

import pytest

from queues.errors import InvalidRequest
from registry.livestate import ACTIVE, LOADING, OVERLOADED, LiveSnapshot, WorkerReport
from registry.pricing import PriceTable
from registry.types import CatalogSnapshot
from scaler.planner import Assignment, ClassLoad, Host, Option, Problem
from scaler.policy import (
    ADD_WORKER,
    LOAD,
    REMOVE_WORKER,
    SET_REPLICAS,
    UNLOAD,
    Action,
    Plan,
    ScalerState,
    _same_fleet,
    _Tick,
    decide,
    decide_replicate_only,
    light_share,
    replicas_suffice,
)
from scaler.settings import ScalerSettings
from scaler.snapshot import (
    Demand,
    ScalerSnapshot,
    VariantInfo,
    build_snapshot,
    variant_cost_per_hour,
)
from tests import factories as f

CPU = "m.onnx-fp32.cpu-t1"  # 100 qps a replica at any batch, $0.048/h, loads in 0.2 s
GPU = "m.trt-fp16.gpu"  # 2000 qps, $3.06/h, loads in 3 s
TICK_MS = 1000.0

Policy = Callable[[ScalerSnapshot, ScalerState, ScalerSettings], tuple[Plan, ScalerState]]


def catalog() -> CatalogSnapshot:
    return f.catalog(
        f.variant(CPU, 0.9, 10.0, slope_ms=10.0, max_batch=8, load_ms=200),
        f.variant(
            GPU, 0.9, 0.5, slope_ms=0.5, max_batch=32, load_ms=3000, hardware="gpu", cost=3.06
        ),
    )


def settings(**overrides: object) -> ScalerSettings:
    base: dict[str, object] = {
        "planner": "greedy",
        "min_cpu_workers": 1,
        "max_cpu_workers": 1,
        "min_gpu_workers": 0,
        "max_gpu_workers": 1,
        "worker_idle_s": 1000.0,
    }
    base.update(overrides)
    return ScalerSettings(**base)  # type: ignore[arg-type]


class Cluster:
    """Workers that do at once what a plan asks; busy in proportion to what they run."""

    def __init__(self, *workers: WorkerReport, busy: dict[str, float] | None = None) -> None:
        self.catalog = catalog()
        self.workers = {w.worker_id: w for w in workers}
        self.busy = busy or {}  # fixed utilisation of some workers
        self.started = 0
        self.depths: dict[str, int] = {}

    def replicas(self, worker: str) -> dict[str, int]:
        return {v: load.replicas for v, load in self.workers[worker].variants.items()}

    def total(self, variant: str) -> int:
        return sum(self.replicas(w).get(variant, 0) for w in self.workers)

    def apply(self, plan: Plan) -> None:
        for a in plan.actions:
            if a.kind in (LOAD, SET_REPLICAS, UNLOAD):
                assert a.worker is not None
                assert a.variant is not None
                mine = self.replicas(a.worker)
                mine[a.variant] = a.replicas or 0
                self._set(a.worker, {v: n for v, n in mine.items() if n > 0})
            elif a.kind == ADD_WORKER:
                self.started += 1
                wid = f"{a.hardware}-new{self.started}"
                self.workers[wid] = f.worker_report(wid, {}, hardware=a.hardware or "cpu", cores=4)
            elif a.kind == REMOVE_WORKER:
                assert a.worker is not None
                del self.workers[a.worker]

    def _set(
        self, wid: str, replicas: dict[str, int], states: dict[str, str] | None = None
    ) -> None:
        old = self.workers[wid]
        self.workers[wid] = f.worker_report(
            wid, replicas, hardware=old.hardware, cores=old.cores, states=states
        )

    def live(self) -> LiveSnapshot:
        workers = []
        for w in self.workers.values():
            if w.worker_id in self.busy:
                used = self.busy[w.worker_id]
            elif w.hardware == "cpu":
                used = sum(load.replicas for load in w.variants.values()) / w.cores
            else:
                used = 0.6 if w.variants else 0.0
            workers.append(replace(w, cpu_util=min(used, 1.0), gpu_util=min(used, 1.0)))
        return f.live(*workers)


class Run:
    def __init__(self, cluster: Cluster, config: ScalerSettings, policy: Policy = decide) -> None:
        self.cluster = cluster
        self.settings = config
        self.policy = policy
        self.state = ScalerState()
        self.tick = 0
        self.plans: list[Plan] = []

    def snapshot(self, demands: Sequence[Demand]) -> ScalerSnapshot:
        return build_snapshot(
            self.tick * TICK_MS,
            self.cluster.catalog,
            self.cluster.live(),
            demands,
            self.cluster.depths,
            PriceTable.default(),
            self.settings,
        )

    def step(self, qps: float | None) -> Plan:
        demands = [] if qps is None else [Demand("digits", qps)]
        plan, self.state = self.policy(self.snapshot(demands), self.state, self.settings)
        self.cluster.apply(plan)
        self.plans.append(plan)
        self.tick += 1
        return plan

    def steps(self, loads: Sequence[float | None]) -> list[Plan]:
        return [self.step(q) for q in loads]


def kinds(plan: Plan) -> list[tuple[str, str | None, int | None]]:
    return [(a.kind, a.variant, a.replicas) for a in plan.actions]


def replica_actions(plans: Sequence[Plan]) -> list[tuple[int, Action]]:
    return [
        (p.tick - 1, a) for p in plans for a in p.actions if a.kind in (LOAD, SET_REPLICAS, UNLOAD)
    ]


def two_workers() -> Cluster:
    return Cluster(f.worker_report("w1", cores=4), f.worker_report("g1", hardware="gpu", cores=8))


@pytest.mark.parametrize("planner", ["greedy", "ilp"])
def test_rising_load_replicates_then_switches_when_cores_run_out(planner: str) -> None:
    run = Run(two_workers(), settings(planner=planner, ilp_deterministic_time=5.0))
    assert kinds(run.step(50)) == [(LOAD, CPU, 1)]
    assert kinds(run.step(150)) == [(SET_REPLICAS, CPU, 2)]
    replicate = run.step(350)
    assert kinds(replicate) == [(SET_REPLICAS, CPU, 4)]
    assert replicate.actions[0].reason.startswith("replicate:")
    switch = run.step(500)  # 525 qps with headroom; four cores give 400
    assert kinds(switch) == [(LOAD, GPU, 1)]
    assert switch.actions[0].worker == "g1"
    assert switch.actions[0].reason.startswith("switch:")
    assert run.cluster.total(CPU) == 4  # the old replicas stay for their hold-down
    later = run.steps([500] * 12)
    unloads = [(t, a) for t, a in replica_actions(later) if a.kind == UNLOAD]
    assert [a.variant for _, a in unloads] == [CPU]
    assert unloads[0][0] == 3 + 10  # not before the CPU hold-down of 10 ticks


def test_memory_running_out_also_makes_it_switch() -> None:
    run = Run(two_workers(), settings(cpu_worker_memory_mb=120.0))  # two 50 MB replicas fit
    run.steps([50, 150])
    assert run.cluster.total(CPU) == 2
    assert kinds(run.step(250)) == [(LOAD, GPU, 1)]


def rise_to_gpu() -> Run:
    run = Run(two_workers(), settings())
    run.steps([50, 150, 350] + [500] * 15)
    assert run.cluster.replicas("g1") == {GPU: 1}
    assert run.cluster.total(CPU) == 0
    return run


def test_falling_load_goes_back_to_the_cheap_variant_only_after_the_hold_down() -> None:
    run = rise_to_gpu()
    drop = run.tick
    plans = run.steps([50] * 45)
    acts = replica_actions(plans)
    first_cpu = next(t for t, a in acts if a.variant == CPU)
    gpu_unload = next(t for t, a in acts if a.variant == GPU and a.kind == UNLOAD)
    assert all(t >= first_cpu for t, _ in acts)  # nothing moves before that
    assert drop + 19 <= first_cpu <= drop + 21  # the GPU hold-down: 20 ticks
    assert gpu_unload >= first_cpu + 20  # and the GPU goes after its own hold-down
    assert run.cluster.replicas("w1") == {CPU: 1}
    assert run.cluster.total(GPU) == 0


def test_no_flapping_under_noise_around_a_threshold() -> None:
    # 2 replicas carry 200 qps: 190 * 1.05 fits, 205 * 1.05 does not
    noise = random.Random(7)
    loads = [190.0] + [190.0 + noise.uniform(-15, 15) for _ in range(80)]
    run = Run(two_workers(), settings())
    acts = replica_actions(run.steps(loads))
    assert [a.replicas for _, a in acts] == [2, 3]  # up once, never down
    # the same noise without hold-downs does flap: the test can tell
    jumpy = Run(
        two_workers(), settings(cpu_hold_ticks=1, down_confirm_ticks=1, variant_backoff_s=0)
    )
    jumpy_acts = replica_actions(jumpy.steps(loads))
    assert sum(1 for _, a in jumpy_acts if a.replicas == 2) > 3


def test_an_idle_variant_is_unloaded_after_its_hold_down_and_not_before() -> None:
    cluster = Cluster(f.worker_report("w1", {CPU: 2}, cores=4))
    run = Run(cluster, settings())
    plans = run.steps([None] * 15)
    acts = replica_actions(plans)
    assert [(t, a.kind, a.variant) for t, a in acts] == [(10, UNLOAD, CPU)]
    assert "hold-down" in acts[0][1].reason
    assert any("hold-down" in d for d in plans[5].deferred)


def test_a_variant_keeps_capacity_for_its_queue_and_goes_once_it_is_drained() -> None:
    cluster = Cluster(f.worker_report("w1", {CPU: 1}, cores=4))
    cluster.depths = {CPU: 1000}  # 200 qps to drain within 5 s
    run = Run(cluster, settings())
    assert kinds(run.step(None)) == [(SET_REPLICAS, CPU, 2)]
    run.steps([None] * 15)
    assert cluster.total(CPU) == 2
    cluster.depths = {}
    acts = replica_actions(run.steps([None] * 15))
    assert [(t, a.kind) for t, a in acts] == [(16 + 10, UNLOAD)]


def test_a_worker_is_added_when_all_of_its_hardware_is_hot_then_it_backs_off() -> None:
    cluster = Cluster(
        f.worker_report("w1", {CPU: 1}),
        f.worker_report("w2", {CPU: 1}),
        busy={"w1": 0.9, "w2": 0.95},
    )
    run = Run(cluster, settings(max_cpu_workers=5))
    first = run.step(150)
    adds = [a for a in first.actions if a.kind == ADD_WORKER]
    assert [(a.hardware, a.reason) for a in adds] == [
        ("cpu", "all 2 cpu workers are over 80% busy")
    ]
    cluster.busy["cpu-new1"] = 0.9  # still hot with the new one
    second = run.step(150)
    assert not [a for a in second.actions if a.kind == ADD_WORKER]
    assert any("backing off 30 s" in d for d in second.deferred)
    run.steps([150] * 28)
    assert [a.kind for a in run.step(150).actions if a.kind == ADD_WORKER] == [ADD_WORKER]


def test_a_worker_is_added_when_most_workers_hold_overloaded_variants() -> None:
    states = {CPU: OVERLOADED}
    cluster = Cluster(
        f.worker_report("w1", {CPU: 1}, states=states),
        f.worker_report("w2", {CPU: 1}, states=states),
    )
    plan = Run(cluster, settings(max_cpu_workers=3)).step(150)
    adds = [a.reason for a in plan.actions if a.kind == ADD_WORKER]
    assert adds == ["2 of 2 cpu workers hold Overloaded or Interfered variants"]


def test_without_the_reactive_rules_hot_or_troubled_workers_alone_add_none() -> None:
    states = {CPU: OVERLOADED}
    cluster = Cluster(
        f.worker_report("w1", {CPU: 1}, states=states),
        f.worker_report("w2", {CPU: 1}, states=states),
        busy={"w1": 0.95, "w2": 0.95},
    )
    plan = Run(cluster, settings(max_cpu_workers=3, reactive_worker_rules=False)).step(150)
    assert [a for a in plan.actions if a.kind == ADD_WORKER] == []


def test_a_worker_is_added_when_the_plan_cannot_place_the_load() -> None:
    cluster = Cluster(f.worker_report("w1", cores=4))
    run = Run(cluster, settings(max_cpu_workers=2, max_gpu_workers=0))
    plan = run.step(500)  # 6 replicas, 4 cores
    assert kinds(plan)[0] == (ADD_WORKER, None, None)
    assert plan.actions[0].reason.startswith("the plan needs room the running cpu workers lack")
    assert run.cluster.replicas("w1") == {CPU: 4}
    assert plan.demand[0].unserved_qps == 0
    run.step(500)
    assert run.cluster.replicas("cpu-new1") == {CPU: 2}


def test_at_the_maximum_the_missing_capacity_is_reported() -> None:
    cluster = Cluster(f.worker_report("w1", cores=4))
    plan = Run(cluster, settings(max_gpu_workers=0)).step(500)
    assert not [a for a in plan.actions if a.kind == ADD_WORKER]
    assert any("cannot be placed on any worker" in n for n in plan.notes)
    assert plan.demand[0].unserved_qps == pytest.approx(525.0 - 400.0)


def test_an_idle_worker_is_removed_never_below_the_minimum() -> None:
    cluster = Cluster(
        f.worker_report("w1", cores=4), f.worker_report("w2", cores=4), f.worker_report("w3")
    )
    run = Run(cluster, settings(min_cpu_workers=2, max_cpu_workers=4, worker_idle_s=30))
    plans = run.steps([None] * 70)
    removals = [(p.tick - 1, a.worker) for p in plans for a in p.actions if a.kind == REMOVE_WORKER]
    assert removals == [(30, "w1")]  # after 30 s of low use; then w2, w3 are the minimum
    assert sorted(cluster.workers) == ["w2", "w3"]


def test_an_idle_worker_with_replicas_is_drained_then_removed() -> None:
    cluster = Cluster(
        f.worker_report("w1", {CPU: 1}, cores=4),
        f.worker_report("w2", {CPU: 1}, cores=4),
        busy={"w1": 0.5, "w2": 0.1},
    )
    run = Run(cluster, settings(max_cpu_workers=2, worker_idle_s=10))
    plans = run.steps([150] * 20)
    log = [(p.tick - 1, a.kind, a.worker) for p in plans for a in p.actions]
    assert (10, SET_REPLICAS, "w1") in log  # make before break: w1 takes w2's replica
    unload = next(t for t, kind, w in log if kind == UNLOAD and w == "w2")
    removal = next(t for t, kind, w in log if kind == REMOVE_WORKER)
    assert 10 < unload < removal
    assert list(cluster.workers) == ["w1"]
    assert cluster.replicas("w1") == {CPU: 2}


def test_nothing_is_unloaded_while_replacements_still_load() -> None:
    cluster = Cluster(f.worker_report("w1", {CPU: 4}), f.worker_report("g1", hardware="gpu"))
    config = settings()
    state = ScalerState()
    plan = None
    for tick in range(16):  # the GPU replica never gets past loading
        if plan is not None and any(a.variant == GPU for a in plan.actions):
            cluster._set("g1", {GPU: 1}, {GPU: LOADING})
        snap = build_snapshot(
            tick * TICK_MS,
            cluster.catalog,
            cluster.live(),
            [Demand("digits", 500)],
            {},
            PriceTable.default(),
            config,
        )
        plan, state = decide(snap, state, config)
        assert not [a for a in plan.actions if a.kind == UNLOAD]
    assert plan is not None
    assert any("still loading (make before break)" in d for d in plan.deferred)
    cluster._set("g1", {GPU: 1}, {GPU: ACTIVE})
    snap = build_snapshot(
        16 * TICK_MS,
        cluster.catalog,
        cluster.live(),
        [Demand("digits", 500)],
        {},
        PriceTable.default(),
        config,
    )
    plan, state = decide(snap, state, config)
    assert kinds(plan) == [(UNLOAD, CPU, 0)]


def test_the_replicate_only_baseline_never_switches() -> None:
    run = Run(two_workers(), settings(), policy=decide_replicate_only)
    plans = run.steps([50, 150, 350, 500, 500])
    assert {a.variant for _, a in replica_actions(plans)} == {CPU}
    assert run.cluster.total(CPU) == 4
    assert plans[-1].policy == "replicate-only"
    assert plans[-1].demand[0].unserved_qps > 0


def test_the_same_inputs_give_the_same_plan() -> None:
    config = settings(planner="ilp", ilp_deterministic_time=5.0, ilp_time_limit_s=0.9)
    cluster = Cluster(f.worker_report("w1", {CPU: 2}), f.worker_report("g1", hardware="gpu"))
    run = Run(cluster, config)
    snap = run.snapshot([Demand("digits", 500)])
    first, first_state = decide(snap, ScalerState(), config)
    second, second_state = decide(snap, ScalerState(), config)
    assert replace(first, solve_ms=0, timings={}) == replace(second, solve_ms=0, timings={})
    assert first_state == second_state
    assert first.planner == "ilp"


def test_a_snapshot_older_than_the_last_tick_is_refused_and_changes_nothing() -> None:
    run = Run(two_workers(), settings())
    run.steps([50, 50])
    state = run.state
    old = build_snapshot(
        0.0, run.cluster.catalog, run.cluster.live(), [], {}, PriceTable.default(), run.settings
    )
    with pytest.raises(InvalidRequest, match="older than the last tick"):
        decide(old, state, run.settings)
    assert run.state is state
    assert state.now_ms == TICK_MS
    run.step(50)  # the next tick in order works


def test_the_plan_is_json_with_its_reasons_and_timings() -> None:
    run = Run(two_workers(), settings())
    plan = run.steps([50, 150])[-1]
    doc = json.loads(json.dumps(plan.to_dict()))
    assert doc["planner"] == "greedy"
    assert doc["policy"] == "infaas"
    assert doc["actions"][0]["kind"] == SET_REPLICAS
    assert doc["actions"][0]["reason"].startswith("replicate:")
    assert doc["targets"] == [{"variant": CPU, "worker": "w1", "replicas": 2}]
    assert doc["demand"][0]["planned_qps"] == pytest.approx(157.5)
    assert "greedy_ms" in doc["timings"]


def test_a_variant_whose_queue_holds_queries_is_not_unloaded() -> None:
    # replicate-only keeps the CPU variant; the GPU one must go, but not with a full queue
    cluster = Cluster(
        f.worker_report("w1", {CPU: 1}), f.worker_report("g1", {GPU: 1}, hardware="gpu")
    )
    cluster.depths = {GPU: 100}
    run = Run(cluster, settings(), policy=decide_replicate_only)
    plans = run.steps([50] * 25)
    assert cluster.replicas("g1") == {GPU: 1}
    assert any("its queue holds 100 queries" in d for d in plans[-1].deferred)
    cluster.depths = {}
    assert kinds(run.step(50)) == [(UNLOAD, GPU, 0)]


def test_a_variant_gone_from_the_catalog_is_unloaded_at_once() -> None:
    cluster = Cluster(f.worker_report("w1", {CPU: 1, "old.onnx-fp32.cpu-t1": 2}))
    plan = Run(cluster, settings()).step(50)
    assert [(a.kind, a.variant) for a in plan.actions] == [(UNLOAD, "old.onnx-fp32.cpu-t1")]
    assert "no ready variant of the catalog" in plan.actions[0].reason


def test_load_no_variant_can_serve_is_reported_as_such() -> None:
    run = Run(two_workers(), settings())
    snap = run.snapshot([Demand("digits", 50, min_accuracy=0.99)])
    plan, _ = decide(snap, ScalerState(), run.settings)
    assert plan.actions == ()
    assert plan.notes == (
        "digits|acc>=0.99: 52.5 qps unserved: no ready variant meets its requirements",
    )


def test_an_idle_worker_the_load_still_needs_is_kept() -> None:
    # w1 has cores for w2's replicas but memory for one more only: draining w2 would
    # need a new worker, so w2 stays
    cluster = Cluster(
        f.worker_report("w1", {CPU: 1}, cores=8),
        f.worker_report("w2", {CPU: 2}, cores=4),
        busy={"w1": 0.5, "w2": 0.1},
    )
    run = Run(cluster, settings(max_cpu_workers=3, worker_idle_s=0, cpu_worker_memory_mb=120))
    plan = run.step(250)
    assert plan.actions == ()
    assert run.state.draining == {}
    assert not [n for n in plan.notes if "draining" in n]


def planned_qps(loads: list[float], **overrides: object) -> float:
    """The first class's planned load after one tick per load, on one 4-core worker."""
    run = Run(Cluster(f.worker_report("w1", cores=4)), settings(**overrides))
    return run.steps(loads)[-1].demand[0].planned_qps


# a forecast 20 s ahead, the trend taken over 10 s (the default window is 30 s)
SHORT_WINDOW = {"forecast_s": 20.0, "forecast_window_s": 10.0}


def test_a_forecast_plans_ahead_of_a_rising_load_and_ignores_noise() -> None:
    ramp = [100.0 + 10.0 * t for t in range(12)]  # +10 qps every second
    assert planned_qps(ramp) == pytest.approx(210 * 1.05)
    # 10 qps/s more for 20 s ahead
    assert planned_qps(ramp, **SHORT_WINDOW) == pytest.approx((210 + 10 * 20) * 1.05)
    wobble = [100.0, 104.0] * 6  # within a Poisson rate's noise: no trend
    assert planned_qps(wobble, **SHORT_WINDOW) == pytest.approx(104 * 1.05)
    # the default window (30 s) wants half of it in history before it sees a trend
    assert planned_qps(ramp, forecast_s=20.0) == pytest.approx(210 * 1.05)


def test_a_longer_window_sees_a_slow_climb_that_noise_hides_in_a_short_one() -> None:
    # +0.9 qps a second, from 50 to 85: 8 qps over 9 s is below 2 √load (about 18), 26
    # over 29 s above it; a wobble of 4 qps is no trend at either window
    climb = [50.0 + 0.9 * t for t in range(40)]
    now = climb[-1]
    assert planned_qps(climb, **SHORT_WINDOW) == pytest.approx(now * 1.05)
    slope = (now - climb[-31]) / 30.0
    assert planned_qps(climb, forecast_s=20.0) == pytest.approx((now + slope * 20) * 1.05)
    wobble = [50.0, 54.0] * 20
    assert planned_qps(wobble, forecast_s=20.0) == pytest.approx(54 * 1.05)


def test_the_trend_threshold_is_a_multiple_of_the_root_of_the_load() -> None:
    # +1.1 qps a second in a class of about 50: a rise of 9.9 over the 9 s of history the
    # window keeps, 1.37 × the square root of the load (two 5 s rates of a flat 52 qps
    # differ by about 0.63 × √52)
    climb = [40.0 + 1.1 * t for t in range(12)]
    now = climb[-1]
    ahead = pytest.approx((now + 1.1 * 20) * 1.05)
    assert planned_qps(climb, trend_z=1.3, **SHORT_WINDOW) == ahead
    assert planned_qps(climb, trend_z=1.5, **SHORT_WINDOW) == pytest.approx(now * 1.05)
    assert planned_qps(climb, **SHORT_WINDOW) == pytest.approx(now * 1.05)  # default: 2


def planned_by_class(
    loads: Sequence[dict[tuple[str, float], float]], **overrides: object
) -> dict[tuple[str, float], float]:
    """Planned load per (app, latency objective) after one tick per dict of loads, with
    the apps digits and wine, one CPU variant each, on one 4-core worker."""
    cluster = Cluster(f.worker_report("w1", cores=4))
    wine = f.variant("w.onnx-fp32.cpu-t1", 0.9, 10.0, app="wine", slope_ms=10.0, max_batch=8)
    cluster.catalog = f.catalog(*cluster.catalog.variants.values(), wine)
    run = Run(cluster, settings(**overrides))
    plan = None
    for tick in loads:
        demands = [Demand(app, qps, latency_ms=lat) for (app, lat), qps in tick.items()]
        plan, run.state = decide(run.snapshot(demands), run.state, run.settings)
        cluster.apply(plan)
        run.tick += 1
    assert plan is not None
    keys = {Demand(app, 0.0, latency_ms=lat).key: (app, lat) for app, lat in loads[-1]}
    return {keys[c.key]: c.planned_qps for c in plan.demand}


def test_a_ramp_split_over_small_classes_shows_in_their_sum() -> None:
    # three digits classes each climbing 0.4 qps a second: 12 qps over 30 s, below 2 √46
    # (13.6) in each; their sum rises 36 over 30 s, above 2 √138 (23.5). A wine class
    # holds 50 qps.
    ramp = [
        {("digits", lat): 30.0 + 0.4 * t for lat in (100.0, 200.0, 400.0)} | {("wine", 100.0): 50.0}
        for t in range(41)
    ]
    now = 30.0 + 0.4 * 40
    ahead = (now + 0.4 * 20) * 1.05  # 0.4 qps a second, 20 s ahead
    forecast = {"forecast_s": 20.0}
    alone = planned_by_class(ramp, **forecast)
    assert alone[("digits", 100.0)] == pytest.approx(now * 1.05)  # the default: per class
    assert alone[("wine", 100.0)] == pytest.approx(50 * 1.05)
    by_app = planned_by_class(ramp, trend_scope="app", **forecast)
    assert [by_app[("digits", lat)] for lat in (100.0, 200.0, 400.0)] == pytest.approx([ahead] * 3)
    assert by_app[("wine", 100.0)] == pytest.approx(50 * 1.05)  # its own app is flat
    # the fleet's sum (188 qps) rises 36, above 2 √188 (27.4): each class takes the sum's
    # share of rise per second, 1.2 / 188
    fleet = planned_by_class(ramp, trend_scope="fleet", **forecast)
    assert fleet[("digits", 100.0)] == pytest.approx((now + now * 1.2 / 188 * 20) * 1.05)
    assert fleet[("wine", 100.0)] == pytest.approx((50 + 50 * 1.2 / 188 * 20) * 1.05)


def test_noise_in_a_sum_of_classes_is_no_trend() -> None:
    rng = random.Random(7)
    noisy = [
        {("digits", lat): rng.choice([28.0, 32.0]) for lat in (100.0, 200.0, 400.0)}
        for _ in range(41)
    ]
    for scope in ("class", "app", "fleet"):
        last = noisy[-1]
        planned = planned_by_class(noisy, trend_scope=scope, forecast_s=20.0)
        for key, qps in planned.items():
            # held: the highest estimate of the hold-down, never beyond the noise's top
            assert qps <= 32.0 * 1.05 + 1e-9, (scope, key, qps, last)


def test_an_unknown_trend_scope_is_refused() -> None:
    with pytest.raises(ValueError, match="trend_scope"):
        ScalerSettings(trend_scope="world")


def test_a_replan_tolerance_keeps_the_plan_while_load_stays_a_little_below_it() -> None:
    run = Run(
        two_workers(),
        settings(
            replan_tolerance=0.2,
            replan_every_s=6.0,
            cpu_hold_ticks=1,
            hold_load_factor=0.0,
            load_smoothing=1.0,
        ),
    )
    settled = run.steps([100.0, 100.0, 100.0])[-1]  # solved at 1 s, once the fleet settled
    kept = run.steps([95.0, 90.0, 95.0, 90.0])  # 3 s to 6 s
    assert [p.solve_ms for p in kept] == [0.0, 0.0, 0.0, 0.0]  # not solved again
    assert all(p.targets == settled.targets and p.actions == () for p in kept)
    assert kept[1].demand[0].planned_qps < settled.demand[0].planned_qps
    due = run.step(90.0)  # at 7 s, 6 s since the last solve: solved afresh
    assert due.solve_ms > 0.0
    fell = run.steps([90.0, 60.0])[-1]  # more than 20 % below what was solved for
    assert fell.solve_ms > 0.0
    rose = run.step(70.0)  # above what was solved for: the plan may no longer serve it
    assert rose.solve_ms > 0.0


def test_without_a_replan_tolerance_a_changed_load_is_solved_again() -> None:
    run = Run(two_workers(), settings(cpu_hold_ticks=1, hold_load_factor=0.0, load_smoothing=1.0))
    run.steps([100.0, 100.0, 100.0])
    assert run.step(95.0).solve_ms > 0.0


def test_hold_downs_cover_the_time_to_start_a_worker_when_asked() -> None:
    paper, ours = settings(), settings(hold_start_factor=2.0, gpu_worker_start_s=60.0)
    assert paper.hold_ms("gpu", 500.0) == paper.gpu_hold_ticks * paper.tick_ms
    assert ours.hold_ms("gpu", 500.0) == 120_000.0


def test_noise_within_the_load_quantum_reuses_the_last_answer() -> None:
    run = Run(two_workers(), settings(load_quantum=0.05))
    run.steps([100.0, 100.0])  # the fleet settles
    first, second, third = run.steps([100.0, 101.0, 130.0])
    assert first.demand[0].planned_qps == second.demand[0].planned_qps >= 105.0
    assert second.solve_ms == 0.0  # not solved again
    assert second.targets == first.targets
    assert third.demand[0].planned_qps > second.demand[0].planned_qps
    assert third.solve_ms > 0.0


def three_replicas_on_w1(x_qps: float) -> Assignment:
    """A kept plan: 3 replicas of cpu-v on w1, class x routed to them at ``x_qps``."""
    return Assignment(
        replicas={("cpu-v", "w1"): 3},
        routing={("x", "cpu-v"): x_qps},
        unserved_qps={},
        cost_per_hour=0.3,
        objective=0.3,
        planner="greedy",
        status="heuristic",
    )


def test_a_kept_plan_must_carry_new_classes_and_higher_loads_with_the_replicas_it_has() -> None:
    options = (
        Option("cpu-v", "a", "cpu", 1, 100.0, 0.1, 200.0, {"x": 100.0, "queue:cpu-v": 100.0}),
    )
    hosts = (Host("w1", "cpu", 4, 16384.0, 1000, current={"cpu-v": 3}),)
    plan = three_replicas_on_w1(250.0)
    solved_for = {"x": 250.0}

    def problem(x_qps: float, backlog_qps: float = 0.0) -> Problem:
        classes = (ClassLoad("x", "a", x_qps), ClassLoad("queue:cpu-v", "a", backlog_qps))
        return Problem(classes, options, hosts)

    # 3 replicas carry 300 qps: 250 were routed, so 50 more fit, whichever class brings them
    assert replicas_suffice(problem(290.0), plan, solved_for)
    assert replicas_suffice(problem(250.0, backlog_qps=40.0), plan, solved_for)
    assert not replicas_suffice(problem(310.0), plan, solved_for)
    assert not replicas_suffice(problem(280.0, backlog_qps=40.0), plan, solved_for)


def test_a_kept_plan_follows_an_interfered_replicas_measured_capacity_but_not_a_new_one() -> None:
    options = (Option("cpu-v", "a", "cpu", 1, 100.0, 0.1, 200.0, {"x": 100.0}),)
    plan = three_replicas_on_w1(150.0)

    def problem(factor: float | None) -> Problem:
        interfered = {} if factor is None else {"cpu-v": factor}
        host = Host("w1", "cpu", 4, 16384.0, 1000, {"cpu-v": 3}, capacity_factor=interfered)
        return Problem((ClassLoad("x", "a", 150.0),), options, (host,))

    solved, solved_for = problem(0.59), {"x": 150.0}
    # the factor is measured anew every tick: a new value is the same fleet, and the kept
    # plan is judged at it (3 replicas × 100 qps × 0.6 = 180 qps carry 150; × 0.4 do not)
    assert _same_fleet(solved, problem(0.6))
    assert replicas_suffice(problem(0.6), plan, solved_for)
    assert not replicas_suffice(problem(0.4), plan, solved_for)
    # a replica turning Interfered, or recovering, changes the fleet: solved afresh
    assert not _same_fleet(problem(None), solved)
    assert not _same_fleet(solved, problem(None))


@pytest.mark.parametrize("plan_routing", [True, False])
def test_the_plan_publishes_its_split_of_each_class_only_when_set(plan_routing: bool) -> None:
    run = Run(two_workers(), settings(plan_routing=plan_routing))
    plan = run.steps([50, 150, 350, 500])[-1]  # the GPU variant joins the CPU one
    key = Demand("digits", 500).key
    route = plan.routes.get(key)
    doc = json.loads(json.dumps(plan.to_dict()))
    if not plan_routing:
        assert route is None
        assert doc["routes"] == {}
        return
    assert route is not None
    assert {v for v, _ in route} <= {CPU, GPU}
    assert sum(q for _, q in route) == pytest.approx(plan.demand[0].planned_qps, rel=0.01)
    assert doc["routes"][key] == [{"variant": v, "qps": round(q, 3)} for v, q in route]
    assert not any(k.startswith("queue:") for k in doc["routes"])


LIGHT_APPS = ("a", "b", "c")


def light_cluster(cores: int) -> Cluster:
    """One worker, three apps of one CPU variant each (100 qps a replica)."""
    cluster = Cluster(f.worker_report("w1", cores=cores))
    cluster.catalog = f.catalog(
        *(
            f.variant(f"{app}.onnx-fp32.cpu-t1", 0.9, 10.0, slope_ms=10.0, max_batch=8, app=app)
            for app in LIGHT_APPS
        )
    )
    return cluster


def light_tick(cluster: Cluster, loads: dict[str, float], **overrides: object) -> Plan:
    config = settings(planner="ilp", max_gpu_workers=0, **overrides)
    run = Run(cluster, config)
    demands = [Demand(app, qps) for app, qps in loads.items()]
    plan, run.state = decide(run.snapshot(demands), run.state, config)
    cluster.apply(plan)
    return plan


@pytest.mark.parametrize("share", [0.0, 0.25])
def test_light_replicas_share_cores_only_when_asked(share: float) -> None:
    cluster = light_cluster(cores=2)
    plan = light_tick(cluster, {"a": 5.0, "b": 5.0, "c": 5.0}, light_share=share)
    unserved = [d.app for d in plan.demand if d.unserved_qps > 0]
    if share == 0:  # a core each: two fit, the third app is left out and said so
        assert sum(cluster.replicas("w1").values()) == 2
        assert len(unserved) == 1
        assert any("cannot be placed on any worker" in n for n in plan.notes)
    else:  # each busy 5 % of the time: a quarter core each, all three on the two cores
        assert cluster.replicas("w1") == {f"{app}.onnx-fp32.cpu-t1": 1 for app in LIGHT_APPS}
        assert unserved == []
        # and each is priced at a quarter of its core
        assert plan.cost_per_hour == pytest.approx(3 * 0.25 * core_price(cluster))


def core_price(cluster: Cluster) -> float:
    """What a replica owning its one core costs per hour."""
    variant = cluster.catalog.variants["a.onnx-fp32.cpu-t1"]
    return variant_cost_per_hour(variant, PriceTable.default())


def test_a_variant_busier_than_the_light_share_takes_its_whole_cores() -> None:
    # c at 60 qps keeps its replica 63 % busy: a whole core, beside a and b's quarters
    cluster = light_cluster(cores=2)
    plan = light_tick(cluster, {"a": 5.0, "b": 5.0, "c": 60.0}, light_share=0.25)
    assert sum(cluster.replicas("w1").values()) == 3
    assert plan.cost_per_hour == pytest.approx(1.5 * core_price(cluster))
    # c at 150 qps needs two whole cores, which a and b's quarters leave no room for:
    # c gets one, and what it cannot place is reported
    cluster = light_cluster(cores=2)
    plan = light_tick(cluster, {"a": 5.0, "b": 5.0, "c": 150.0}, light_share=0.25)
    assert cluster.replicas("w1").get("c.onnx-fp32.cpu-t1") == 1
    short = {d.app: d.unserved_qps for d in plan.demand if d.unserved_qps > 0}
    assert list(short) == ["c"]
    assert short["c"] == pytest.approx(1.05 * 150.0 - 100.0, abs=1.0)


def test_the_light_share_of_a_variant() -> None:
    cheap = VariantInfo(
        id="v", app="a", hardware="cpu", cores=2, memory_mb=100.0, load_ms=100.0,
        cost_per_hour=0.1, saturation_qps=100.0, accuracy=0.9, batch_limit=8,
        capacity_qps={"x": 100.0, "y": 50.0},
    )  # fmt: skip
    # busy 10 % for x and 10 % for y: 20 % of the time, under a quarter
    assert light_share(cheap, cheap.capacity_qps, {"x": 10.0, "y": 5.0}, 0.25) == 0.25
    assert light_share(cheap, cheap.capacity_qps, {"x": 20.0, "y": 5.0}, 0.25) == 1.0
    assert light_share(cheap, cheap.capacity_qps, {"x": 10.0}, 0.0) == 1.0  # off
    # a share is rounded up to 1/1,000 of a core: 2 threads × 0.3333 → 0.667 cores
    assert light_share(cheap, cheap.capacity_qps, {}, 1 / 3) * 2 == pytest.approx(0.667)
    gpu = replace(cheap, hardware="gpu", cores=0)
    assert light_share(gpu, gpu.capacity_qps, {}, 0.25) == 1.0  # a GPU is never shared


@pytest.mark.parametrize("share", [0.0, 0.25])
def test_an_idle_worker_of_light_replicas_is_drained_into_the_shares_left(share: float) -> None:
    a, b, c = (f"{app}.onnx-fp32.cpu-t1" for app in LIGHT_APPS)
    cluster = light_cluster(cores=1)
    cluster.workers = {
        "w1": f.worker_report("w1", {a: 1, b: 1}, cores=1),
        "w2": f.worker_report("w2", {c: 1}, cores=1),
    }
    cluster.busy = {"w1": 0.1, "w2": 0.05}
    config = settings(
        planner="ilp", max_cpu_workers=2, max_gpu_workers=0, worker_idle_s=5, light_share=share
    )
    run = Run(cluster, config)
    for _ in range(20):
        demands = [Demand(app, 5.0) for app in LIGHT_APPS]
        plan, run.state = decide(run.snapshot(demands), run.state, config)
        cluster.apply(plan)
        run.tick += 1
    if share == 0:  # a core each: c has nowhere else to go, both workers stay
        assert sorted(cluster.workers) == ["w1", "w2"]
    else:  # c's quarter core fits in w1's half left: w2 is drained and removed
        assert list(cluster.workers) == ["w1"]
        assert cluster.replicas("w1") == {a: 1, b: 1, c: 1}


def test_a_light_variant_is_offered_at_its_share_of_a_core_and_one_replica() -> None:
    cluster = light_cluster(cores=2)
    config = settings(planner="ilp", max_gpu_workers=0, light_share=0.25)
    snap = Run(cluster, config).snapshot([Demand("a", 5.0), Demand("c", 60.0)])
    tick = _Tick(snap, ScalerState(), config, "infaas")
    current = tick.current()
    tick.track_workers(current)
    classes, capacity, tick.shares = tick.demand(tick.estimate(current), None)
    problem = tick.problem(classes, capacity, current)
    options = {o.variant: o for o in problem.options}
    light, busy = options["a.onnx-fp32.cpu-t1"], options["c.onnx-fp32.cpu-t1"]
    assert (light.cores, light.max_replicas) == (0.25, 1)
    assert light.cost_per_hour == pytest.approx(0.25 * core_price(cluster))
    assert (busy.cores, busy.max_replicas) == (1, config.max_replicas_per_variant)
    assert busy.cost_per_hour == pytest.approx(core_price(cluster))


# -- spare workers ---------------------------------------------------------------------------


def spare_run(planner: str, *workers: WorkerReport, **overrides: object) -> Run:
    base: dict[str, object] = {
        "planner": planner,
        "ilp_deterministic_time": 5.0,
        "max_cpu_workers": 4,
        "max_gpu_workers": 0,
        "spare_cpu_workers": 1,
        "worker_idle_s": 5,
        "worker_backoff_s": 30,
        "cpu_worker_cores": 4,  # new workers as big as the spare
    }
    config = settings(**(base | overrides))
    return Run(Cluster(*(workers or (f.worker_report("w1", cores=4),))), config)


def added(plan: Plan) -> list[str]:
    return [a.reason for a in plan.actions if a.kind == ADD_WORKER]


@pytest.mark.parametrize("planner", ["greedy", "ilp"])
def test_a_spare_worker_is_kept_empty_and_takes_a_rise_before_a_new_worker(planner: str) -> None:
    run = spare_run(planner)
    first = run.step(150)
    assert added(first) == ["keeping 1 spare cpu worker(s) started"]
    quiet = run.steps([150] * 20)  # past the idle time: the spare is not drained
    assert not [a for p in quiet for a in p.actions]
    assert run.cluster.replicas("w1") == {CPU: 2}  # not spread onto the spare
    assert run.cluster.replicas("cpu-new1") == {}
    rise = run.step(500)  # 6 replicas: 4 on w1, 2 at once on the spare
    assert run.cluster.replicas("w1") == {CPU: 4}
    assert run.cluster.replicas("cpu-new1") == {CPU: 2}
    # a new spare replaces it, within the back-off of the worker just asked for
    assert added(rise) == ["keeping 1 spare cpu worker(s) started"]
    assert not [a for p in run.steps([500] * 5) for a in p.actions if a.kind == ADD_WORKER]
    assert run.cluster.replicas("cpu-new2") == {}


@pytest.mark.parametrize("planner", ["greedy", "ilp"])
def test_a_rise_past_the_spare_asks_for_the_workers_it_needs_and_a_new_spare(
    planner: str,
) -> None:
    run = spare_run(planner, burst_workers=True, max_new_workers_per_tick=4)
    run.steps([150] * 3)
    rise = run.step(1000)  # 1050 qps: 11 replicas; w1 takes 4, the spare 4, 3 more
    assert run.cluster.replicas("cpu-new1") == {CPU: 4}
    reasons = added(rise)
    assert len(reasons) == 2  # the worker the plan needs and a spare
    assert reasons[0].startswith("the plan needs room the running cpu workers lack")
    assert reasons[0].endswith("keeping 1 spare cpu worker(s) started")


def test_empty_workers_beyond_the_spares_are_removed_the_first_kept() -> None:
    run = spare_run(
        "greedy",
        f.worker_report("w1", {CPU: 1}, cores=4),
        f.worker_report("w2", cores=4),
        f.worker_report("w3", cores=4),
    )
    plans = run.steps([50] * 30)
    removed = [a.worker for p in plans for a in p.actions if a.kind == REMOVE_WORKER]
    assert removed == ["w3"]
    assert sorted(run.cluster.workers) == ["w1", "w2"]
    assert not [a for p in plans for a in p.actions if a.kind == ADD_WORKER]


def test_without_spares_no_empty_worker_is_kept() -> None:
    run = spare_run("greedy", spare_cpu_workers=0)
    plans = run.steps([150] * 20)
    assert not [a for p in plans for a in p.actions if a.kind == ADD_WORKER]
    assert list(run.cluster.workers) == ["w1"]


def test_an_idle_worker_is_not_drained_into_the_spare() -> None:
    run = spare_run(
        "greedy",
        f.worker_report("w1", {CPU: 4}, cores=4),
        f.worker_report("w2", {CPU: 1}, cores=4),
        f.worker_report("w3", cores=4),  # the spare
    )
    run.cluster.busy = {"w1": 0.9, "w2": 0.05}
    plans = run.steps([450] * 20)  # w2 is idle, but w1 is full: only the spare has room
    assert not [a for p in plans for a in p.actions]
    assert run.cluster.replicas("w2") == {CPU: 1}
    assert run.cluster.replicas("w3") == {}


def test_a_spare_that_takes_replicas_is_idle_only_from_then_on() -> None:
    run = spare_run("greedy")
    run.steps([150] * 20)  # the spare is empty, and so idle, all along
    assert "cpu-new1" not in run.state.low_since
    run.step(500)
    assert run.cluster.replicas("cpu-new1") == {CPU: 2}
    run.cluster.busy = {"cpu-new1": 0.05}  # idle from here
    now_ms = run.tick * TICK_MS
    run.steps([500] * 3)
    assert run.state.low_since["cpu-new1"] == now_ms  # not since it was a spare


# -- small loads: a person trying an app -------------------------------------------------

FAST = "fast.onnx-fp32.cpu-t1"  # about 2,000,000 qps a replica: 1 q/s uses 5e-7 of it
FAST_GPU = "fast.trt-fp16.gpu"


def fast_cluster() -> Cluster:
    cluster = Cluster(f.worker_report("w1", cores=2), f.worker_report("g1", hardware="gpu"))
    cluster.catalog = f.catalog(
        f.variant(FAST, 0.97, 0.02, slope_ms=0.0005, max_batch=64, load_ms=6),
        f.variant(
            FAST_GPU,
            0.97,
            0.01,
            slope_ms=0.0001,
            max_batch=64,
            load_ms=3000,
            hardware="gpu",
            cost=3.06,
        ),
    )
    return cluster


@pytest.mark.parametrize("planner", ["greedy", "ilp"])
@pytest.mark.parametrize("qps", [0.05, 0.8, 1.1])
def test_any_load_gets_a_replica_and_keeps_it_while_it_lasts(planner: str, qps: float) -> None:
    run = Run(fast_cluster(), settings(planner=planner, ilp_deterministic_time=5.0))
    first = run.step(qps)
    assert kinds(first) == [(LOAD, FAST, 1)]  # the cheapest variant that serves it
    assert first.actions[0].reason.startswith("start:")
    assert first.targets == {(FAST, "w1"): 1}
    assert first.demand[0].unserved_qps == 0
    later = run.steps([qps] * 40)
    assert replica_actions(later) == []  # never unloaded while the load lasts
    assert all(p.targets == {(FAST, "w1"): 1} for p in later)


@pytest.mark.parametrize("planner", ["greedy", "ilp"])
def test_a_class_missing_from_some_ticks_demand_keeps_its_replica(planner: str) -> None:
    # at 1 q/s a gateway's window sometimes counts none: the held class is still served
    run = Run(fast_cluster(), settings(planner=planner, ilp_deterministic_time=5.0))
    plans = run.steps([0.8, None, None, 0.8, None, 0.8] * 4)
    assert [a.kind for _, a in replica_actions(plans)] == [LOAD]
    assert all(p.targets == {(FAST, "w1"): 1} for p in plans)
    assert not any("no ready variant" in n for p in plans for n in p.notes)


class EmptyPlanner:
    """A planner that places nothing and says all is served."""

    name = "empty"

    def solve(self, problem: Problem) -> Assignment:
        return Assignment({}, {}, {}, 0.0, 0.0, "empty", "heuristic")


def test_a_plan_that_leaves_a_served_class_without_a_replica_gets_one() -> None:
    run = Run(fast_cluster(), settings())
    snapshot = run.snapshot([Demand("digits", 0.05)])
    plan, _ = _Tick(snapshot, ScalerState(), run.settings, "infaas").run(EmptyPlanner(), None)
    assert kinds(plan) == [(LOAD, FAST, 1)]
    assert plan.targets == {(FAST, "w1"): 1}
    assert plan.actions[0].reason.startswith("start:")
    assert any("had no replica in the empty plan" in n for n in plan.notes)
    # no room on the running worker (its cores run a variant gone from the catalog, unloaded
    # this tick): the replica goes on a new worker, which is asked for
    full = Cluster(f.worker_report("w1", {CPU: 2}, cores=2))
    full.catalog = fast_cluster().catalog
    run = Run(full, settings(max_cpu_workers=2))
    snapshot = run.snapshot([Demand("digits", 0.05)])
    plan, _ = _Tick(snapshot, ScalerState(), run.settings, "infaas").run(EmptyPlanner(), None)
    assert [a.kind for a in plan.actions] == [ADD_WORKER, UNLOAD]
    assert plan.demand[0].unserved_qps == 0


@pytest.mark.parametrize("planner", ["greedy", "ilp"])
def test_a_class_gone_from_the_demand_lets_its_replica_go_after_the_hold_downs(
    planner: str,
) -> None:
    run = Run(fast_cluster(), settings(planner=planner, ilp_deterministic_time=5.0))
    run.steps([0.8] * 5)
    plans = run.steps([None] * 40)
    acts = replica_actions(plans)
    assert [(a.kind, a.variant) for _, a in acts] == [(UNLOAD, FAST)]
    # planned for one hold-down (10 ticks) after it was last named, then unloaded after
    # the variant's own hold-down (10 ticks): not kept while the estimate decays to zero
    assert acts[0][0] == 5 + 10 + 10 - 1
    assert not any("no ready variant" in n for p in plans for n in p.notes)


class _OnePlacePlanner:
    """A planner that places the whole load on one host (a worker to be started, or one
    that runs but never loads what it is asked), as one may when the worker it planned
    on stops answering."""

    name = "one-place"

    def __init__(self, host: str | None) -> None:
        self.host = host  # None: the first worker that could be started

    def solve(self, problem: Problem) -> Assignment:
        host = self.host or next(
            (h.id for h in problem.hosts if h.prospective and h.hardware == "cpu"), None
        )
        placed = {(CPU, host): 2} if host and problem.classes else {}
        return Assignment(
            replicas=placed,
            routing={(c.key, CPU): c.qps for c in problem.classes},
            unserved_qps={},
            cost_per_hour=1.0,
            objective=1.0,
            planner=self.name,
            status="heuristic",
        )


def _ticks(
    cluster: Cluster, config: ScalerSettings, planner: _OnePlacePlanner, loads: Sequence[float]
) -> list[Plan]:
    """One tick a second from an empty state; the plans' replica actions are applied but
    those for worker ``a``, which never does what it is asked, and no worker joins."""
    state = ScalerState()
    plans = []
    for tick, qps in enumerate(loads):
        demand = [Demand("digits", qps)] if qps else []
        snap = build_snapshot(
            tick * TICK_MS,
            cluster.catalog,
            cluster.live(),
            demand,
            {},
            PriceTable.default(),
            config,
        )
        plan, state = _Tick(snap, state, config, "infaas").run(planner, None)
        done = tuple(a for a in plan.actions if a.worker not in (None, "a"))
        cluster.apply(replace(plan, actions=done))
        plans.append(plan)
    return plans


def _unloads(plans: Sequence[Plan]) -> list[tuple[int, str | None]]:
    """(tick, worker) of every unload, in order."""
    return [(tick, a.worker) for tick, a in replica_actions(plans) if a.kind == UNLOAD]


def _gone_once_demand_lapsed(plans: Sequence[Plan], cluster: Cluster) -> None:
    """Nothing unloaded while demand came (ticks 0-29); then b's replica, as before."""
    unloads = _unloads(plans)
    assert [w for t, w in unloads if t < 30] == []
    assert [w for _, w in unloads] == ["b"]
    assert cluster.replicas("b") == {}


def test_the_last_running_replica_stays_while_the_plan_waits_for_a_new_worker() -> None:
    # the logged tick sequence of bench/faults.py's worker-kill-job (docs/faults.md): the
    # plan moved the app to a worker yet to start, and after the hold-down the scaler
    # unloaded the only replica serving it, "not needed for 10 s (hold-down 10 s)"
    cluster = Cluster(f.worker_report("b", {CPU: 1}))
    loads = [150] * 30 + [0] * 30
    plans = _ticks(cluster, settings(max_cpu_workers=2), _OnePlacePlanner(None), loads)
    assert plans[29].deferred == (
        f"{CPU} on b: 1 -> 0 replicas held back: the last running replica of digits, "
        "which still has 150.0 q/s of demand",
    )
    _gone_once_demand_lapsed(plans, cluster)


def test_another_running_replica_lets_one_go() -> None:
    # two workers run the app; the plan moves it to a worker yet to start: one stays
    cluster = Cluster(f.worker_report("b", {CPU: 1}), f.worker_report("c", {CPU: 1}))
    plans = _ticks(cluster, settings(max_cpu_workers=3), _OnePlacePlanner(None), [150] * 30)
    assert [w for _, w in _unloads(plans)] == ["b"]
    assert cluster.replicas("c") == {CPU: 1}
    assert "c: 1 -> 0 replicas held back: the last running replica of digits" in "".join(
        plans[-1].deferred
    )


def test_what_runs_stays_while_the_worker_planned_on_never_loads_it() -> None:
    # the plan puts the app on worker a, which reports as alive but never loads what it is
    # asked; each time that request times out it is made again, and b's replica serves
    cluster = Cluster(f.worker_report("a"), f.worker_report("b", {CPU: 1}))
    config = settings(max_cpu_workers=2, pending_timeout_s=5)
    plans = _ticks(cluster, config, _OnePlacePlanner("a"), [150] * 30 + [0] * 30)
    assert any("did not reach 2 replicas" in n for p in plans for n in p.notes)
    assert plans[29].deferred == (
        f"{CPU} on b: 1 -> 0 replicas held back: replicas of digits are still loading "
        "(make before break)",
    )
    _gone_once_demand_lapsed(plans, cluster)

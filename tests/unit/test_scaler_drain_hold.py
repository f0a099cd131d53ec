"""``drain_hold_s``: an idle worker is not drained into room a worker was just added
for; the add is remembered per hardware, and 0 keeps the earlier rule."""

from __future__ import annotations

from dataclasses import replace

from scaler.policy import ADD_WORKER, SET_REPLICAS
from tests import factories as f
from tests.unit.test_scaler_policy import CPU, Cluster, Run, settings


def _first_drain_tick(**overrides: object) -> int:
    """The tick at which w2's replica starts moving to w1 (make before break), after a
    CPU worker was added at 0 ms."""
    cluster = Cluster(
        f.worker_report("w1", {CPU: 1}, cores=4),
        f.worker_report("w2", {CPU: 1}, cores=4),
        busy={"w1": 0.5, "w2": 0.1},
    )
    run = Run(cluster, settings(max_cpu_workers=2, worker_idle_s=10, **overrides))
    run.state = replace(run.state, worker_added_ms={"cpu": 0.0})
    plans = run.steps([150] * 30)
    return next(
        p.tick - 1 for p in plans for a in p.actions if a.kind == SET_REPLICAS and a.worker == "w1"
    )


def test_no_drain_within_the_hold_of_an_added_worker() -> None:
    assert _first_drain_tick() == 10  # idle for 10 s: drained at once
    assert _first_drain_tick(drain_hold_s=15.0) == 15  # not before 15 s after the add
    assert _first_drain_tick(drain_hold_s=5.0) == 10  # a shorter hold changes nothing


def test_an_added_worker_is_remembered_per_hardware() -> None:
    run = Run(Cluster(f.worker_report("w1", cores=4)), settings(max_cpu_workers=2))
    assert run.state.worker_added_ms == {}
    run.step(500)  # 6 replicas on 4 cores: a worker is added
    assert run.plans[0].actions[0].kind == ADD_WORKER
    assert run.state.worker_added_ms == {"cpu": 0.0}
    run.step(500)
    assert run.state.worker_added_ms == {"cpu": 0.0}  # kept until the next add

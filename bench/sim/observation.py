"""What the simulated system reports of itself: each worker's report every monitoring
second (running the real per-variant state machine, :mod:`workers.states`), the demand
the scaler reads, and the timeline the plots show."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from bench.sim.fleet import Fleet, Replica, SimWorker, WindowStats
from bench.sim.serving import Serving
from registry.livestate import LOADING, LiveSnapshot, VariantLoad, WorkerReport
from registry.selector import Requirements
from registry.types import CatalogSnapshot
from scaler.snapshot import Demand
from workers.states import Health, Observation, StateSettings, next_health

MONITOR_S = 1.0
DEMAND_WINDOW_S = 5

# arrivals per class: second -> queries
ClassArrivals = Mapping[int, dict[int, int]]


@dataclass
class Timeline:
    """What the plots show, sampled every monitoring second."""

    t_s: list[float] = field(default_factory=list)
    load_qps: list[float] = field(default_factory=list)
    cost_per_hour: list[float] = field(default_factory=list)
    cpu_workers: list[int] = field(default_factory=list)
    gpu_workers: list[int] = field(default_factory=list)
    variants: list[dict[str, int]] = field(default_factory=list)

    def sample(self, now: float, class_arrivals: ClassArrivals, fleet: Fleet) -> None:
        self.t_s.append(now)
        second = int(now) - 1
        self.load_qps.append(float(sum(c.get(second, 0) for c in class_arrivals.values())))
        self.cost_per_hour.append(fleet.cost_per_hour())
        workers = fleet.workers.values()
        self.cpu_workers.append(sum(w.hardware == "cpu" for w in workers))
        self.gpu_workers.append(sum(w.hardware == "gpu" for w in workers))
        self.variants.append(fleet.replica_counts())


def observe(
    now: float,
    catalog: CatalogSnapshot,
    states: StateSettings,
    fleet: Fleet,
    serving: Serving,
) -> LiveSnapshot:
    """Every running worker's report for the window that ends ``now`` (each variant's
    health moved on by the state machine); the window's counters start again."""
    reports = {}
    ready_total = fleet.ready_counts(now)  # ready replicas per variant across the fleet
    for worker in fleet.workers.values():
        if not worker.running(now):
            continue
        worker.account_busy(now, 0)
        cpu_util = worker.busy_thread_s / (MONITOR_S * worker.cores)
        worker.busy_thread_s = 0.0
        loads = {}
        for vid, replicas in worker.replicas.items():
            loads[vid] = _variant_load(
                now, catalog, states, serving, worker, vid, replicas, ready_total.get(vid, 0)
            )
        worker.window.clear()
        reports[worker.worker_id] = WorkerReport(
            worker_id=worker.worker_id,
            hardware=worker.hardware,
            host="sim",
            pid=0,
            cores=worker.cores,
            variants=loads,
            cpu_util=min(cpu_util, 1.0) if worker.hardware == "cpu" else 0.0,
            gpu_util=min(cpu_util, 1.0) if worker.hardware == "gpu" else 0.0,
            started_ms=worker.ready_s * 1000.0,
            heartbeat_ms=now * 1000.0,
        )
    rates = serving.arrival_rate_qps
    for vid in catalog.variants:
        rate = serving.arrivals_this_window.get(vid, 0) / MONITOR_S
        rates[vid] = 0.5 * rates.get(vid, 0.0) + 0.5 * rate
    serving.arrivals_this_window.clear()
    serving.latencies_this_window.clear()
    return LiveSnapshot(taken_ms=now * 1000.0, workers=reports)


def _variant_load(
    now: float,
    catalog: CatalogSnapshot,
    states: StateSettings,
    serving: Serving,
    worker: SimWorker,
    vid: str,
    replicas: list[Replica],
    total: int,
) -> VariantLoad:
    ready = [r for r in replicas if r.ready_s <= now and not r.retiring]
    variant = catalog.variants[vid]
    if not ready:
        return VariantLoad(variant=vid, app=variant.app, state=LOADING, replicas=0)
    share = len(ready) / max(total, 1)
    stats = worker.window.get(vid) or WindowStats()
    batches = stats.batches
    arrived = serving.arrivals_this_window.get(vid, 0) * share
    backlog = int(len(serving.queues[vid]) * share) + sum(r.busy for r in ready)
    lat = serving.latencies_this_window.get(vid, [])
    p50 = float(np.median(lat)) if lat else 0.0
    mean_batch = stats.rows / batches if batches else 0.0
    obs = Observation(
        now_ms=now * 1000.0,
        window_s=MONITOR_S,
        replicas=len(ready),
        arrived=round(arrived),
        batches=batches,
        mean_batch=mean_batch,
        model_p50_ms=stats.typical_ms / batches if batches else 0.0,
        busy_ms=stats.busy_ms,
        backlog=backlog,
        p50_ms=p50,
    )
    assert variant.profile is not None
    health = next_health(worker.health.get(vid, Health()), obs, variant.profile, states)
    worker.health[vid] = health
    return VariantLoad(
        variant=vid,
        app=variant.app,
        state=health.state,
        replicas=len(ready),
        qps=arrived / MONITOR_S,
        p50_ms=p50,
        model_p50_ms=obs.model_p50_ms,
        mean_batch=mean_batch,
        outstanding=backlog,
        backlog=backlog,
        completed=len(lat),
        max_batch=variant.profile.batch_limit,
    )


def demands(
    now: float, class_arrivals: ClassArrivals, classes: Sequence[tuple[str, Requirements]]
) -> list[Demand]:
    """Each class's rate over the last whole seconds (older counts are dropped)."""
    newest = int(now) - 1
    oldest = newest - DEMAND_WINDOW_S + 1
    out = []
    for cls, counts in class_arrivals.items():
        for second in [s for s in counts if s < oldest]:
            del counts[second]
        count = sum(c for s, c in counts.items() if oldest <= s <= newest)
        if count:
            app, req = classes[cls]
            out.append(
                Demand(
                    app=app,
                    qps=count / DEMAND_WINDOW_S,
                    latency_ms=req.latency_ms,
                    min_accuracy=req.min_accuracy,
                    max_cost_per_hour=req.max_cost_per_hour,
                )
            )
    return out

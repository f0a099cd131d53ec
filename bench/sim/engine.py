"""A discrete-event simulation of the serving system, driving the real decision code.

Simulated: workers (CPU cores or one GPU each) that take time to start, variants that take
their profiled load time to load, one queue per variant shared by all its replicas,
replicas that serve what waits in batches (the real batching rule of
:mod:`workers.batching`), service times from the profiles (latency at the batch size,
with lognormal jitter fitted to the profiled p99/p50, slowed down when replicas share
cores or a GPU), queries that expire at their deadline, queues that refuse work past
their length limit.

Real: the selector (:mod:`registry.selector`, on an index rebuilt from simulated live
state at the gateway's refresh interval), the per-variant state machine
(:mod:`workers.states`, every monitoring second) and the scaler policy
(:mod:`scaler.policy`, every scaler tick). Deterministic for a seed.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.sim.profiles import World
from queues.errors import InfaasError
from registry.livestate import LOADING, LiveSnapshot, VariantLoad, WorkerReport
from registry.pricing import PriceTable
from registry.routing import Routes
from registry.selector import Requirements, SelectorIndex, select
from registry.types import Variant
from scaler.policy import ADD_WORKER, LOAD, REMOVE_WORKER, SET_REPLICAS, UNLOAD, Action
from scaler.snapshot import Demand
from workers.batching import batch_wait_ms
from workers.states import Health, Observation, StateSettings, next_health

MONITOR_S = 1.0
GATEWAY_REFRESH_S = 0.5
DEMAND_WINDOW_S = 5
QUEUE_MAX_LENGTH = 2000
NORMALS_BLOCK = 4096


def _memoized(latency_ms: Callable[[int], float]) -> Callable[[int], float]:
    """A profile's latency by batch size, computed once per size."""
    known: dict[int, float] = {}

    def at(batch: int) -> float:
        value = known.get(batch)
        if value is None:
            value = known[batch] = latency_ms(batch)
        return value

    return at


@dataclass(frozen=True)
class SimSettings:
    """What the simulator assumes beyond the profiles (documented in its output)."""

    cpu_worker_start_s: float = 20.0  # a CPU VM joining the fleet
    gpu_worker_start_s: float = 60.0  # a GPU VM, with its driver and CUDA context
    cpu_worker_cores: int = 2  # an m5.large, the paper's smallest CPU instance
    gpu_max_replicas: int = 4
    timeout_factor: float = 4.0  # gateway deadline: max(factor × objective, 1 s)
    batch_wait_ms: float = 2.0
    overhead_ms: float = 0.5  # gateway + broker time besides inference


@dataclass
class Replica:
    variant: Variant
    worker: SimWorker
    ready_s: float
    busy: bool = False
    retiring: bool = False


@dataclass
class SimWorker:
    worker_id: str
    hardware: str
    cores: int
    asked_s: float
    ready_s: float
    replicas: dict[str, list[Replica]] = field(default_factory=dict)
    health: dict[str, Health] = field(default_factory=dict)
    busy_threads: int = 0
    busy_thread_s: float = 0.0  # integral of busy threads over time, this window
    last_change_s: float = 0.0
    removed_s: float | None = None
    charged_to_s: float | None = None
    # per variant, this monitoring window: arrivals, batches, batch sizes, busy ms
    window: dict[str, list[float]] = field(default_factory=dict)

    def running(self, now: float) -> bool:
        return self.removed_s is None and now >= self.ready_s

    def account_busy(self, now: float, delta: int) -> None:
        self.busy_thread_s += self.busy_threads * (now - self.last_change_s)
        self.last_change_s = now
        self.busy_threads += delta


@dataclass
class Outcome:
    """Per-query results, kept as arrays at the end of a run."""

    arrivals: int = 0
    served: int = 0
    late: int = 0
    failed: int = 0  # refused (no worker, queue full) or expired
    accuracy_sum: float = 0.0
    wait_sum_s: float = 0.0  # time in queue of the queries that started service
    started: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    in_flight_at_end: int = 0  # still within their objective when the run ended
    late_by_class: dict[int, int] = field(default_factory=dict)

    def fail(self, code: str, count: int = 1) -> None:
        self.failed += count
        self.failures[code] = self.failures.get(code, 0) + count


@dataclass
class Timeline:
    """What the plots show, sampled every monitoring second."""

    t_s: list[float] = field(default_factory=list)
    load_qps: list[float] = field(default_factory=list)
    cost_per_hour: list[float] = field(default_factory=list)
    cpu_workers: list[int] = field(default_factory=list)
    gpu_workers: list[int] = field(default_factory=list)
    variants: list[dict[str, int]] = field(default_factory=list)


Decide = Callable[["Simulation", float], list[Action]]


class Simulation:
    def __init__(
        self,
        world: World,
        arrival_times_s: np.ndarray,
        class_of: np.ndarray,
        classes: list[tuple[str, Requirements]],
        *,
        prices: PriceTable,
        settings: SimSettings,
        states: StateSettings,
        seed: int,
        scaler_interval_s: float = 1.0,
    ) -> None:
        self.world = world
        self.catalog = world.catalog
        self.times = arrival_times_s
        self.class_of = class_of
        self.classes = classes
        self.prices = prices
        self.s = settings
        self.states = states
        self.rng = np.random.default_rng(seed)
        self.scaler_interval_s = scaler_interval_s
        self.now = 0.0
        self.workers: dict[str, SimWorker] = {}
        self.queues: dict[str, deque[tuple[float, float, float, int]]] = {
            vid: deque() for vid in self.catalog.variants
        }
        self.events: list[tuple[float, int, int, Any]] = []
        self.seq = 0
        self.outcome = Outcome()
        self.timeline = Timeline()
        self.actions = 0
        self.action_log: list[tuple[float, Action]] = []
        self.cost_usd = 0.0
        self.plan_ms: list[float] = []
        self.index = SelectorIndex(self.catalog, LiveSnapshot.empty())
        self.live = LiveSnapshot.empty()
        self.routes = Routes()  # the scaler's last split of each class, for the gateway
        self._memo: dict[int, tuple[str | None, str]] = {}
        self.class_arrivals: dict[int, dict[int, int]] = {i: {} for i in range(len(classes))}
        # hot-path caches, none of which changes a result: each variant's replica lists
        # in worker order (dropped whenever a variant's list comes or goes, or a worker
        # goes),
        # its profile's latencies by batch size, and the jitter's normals drawn in blocks
        # (the same stream as one draw at a time)
        self._placed: dict[str, list[list[Replica]]] = {}
        self._latency_ms: dict[str, Callable[[int], float]] = {
            vid: _memoized(v.profile.predict_latency_ms)
            for vid, v in self.catalog.variants.items()
            if v.profile is not None
        }
        self._normals: list[float] = []
        self._normal_at = 0
        self.variant_arrivals: dict[str, int] = {}
        self.arrival_rate: dict[str, float] = {}
        self.served_latencies: dict[str, list[float]] = {}
        self._worker_seq = 0

    # -- the event heap -------------------------------------------------------------------

    DONE, LOADED, WORKER_READY, START = range(4)

    def _push(self, when: float, kind: int, payload: Any) -> None:
        self.seq += 1
        heapq.heappush(self.events, (when, self.seq, kind, payload))

    # -- workers and replicas -------------------------------------------------------------

    def add_worker(self, hardware: str, *, ready_now: bool = False) -> SimWorker:
        self._worker_seq += 1
        start = 0.0 if ready_now else (
            self.s.gpu_worker_start_s if hardware == "gpu" else self.s.cpu_worker_start_s
        )  # fmt: skip
        worker = SimWorker(
            worker_id=f"{hardware}-sim-{self._worker_seq}",
            hardware=hardware,
            cores=self.s.cpu_worker_cores if hardware == "cpu" else 1,
            asked_s=self.now,
            ready_s=self.now + start,
            last_change_s=self.now,
        )
        self.workers[worker.worker_id] = worker
        if start:
            self._push(worker.ready_s, self.WORKER_READY, worker.worker_id)
        return worker

    def set_replicas(self, worker: SimWorker, vid: str, count: int, *, cold: bool) -> None:
        variant = self.catalog.variants[vid]
        self._placed.clear()
        replicas = [r for r in worker.replicas.get(vid, []) if not r.retiring]
        if count > len(replicas):
            profile = variant.profile
            assert profile is not None
            load_s = profile.load_ms / 1000.0 if cold or not replicas else 0.0
            ready = max(self.now, worker.ready_s) + load_s
            for _ in range(count - len(replicas)):
                replica = Replica(variant, worker, ready)
                worker.replicas.setdefault(vid, []).append(replica)
                self._push(ready, self.LOADED, replica)
            worker.health.setdefault(vid, Health(since_ms=self.now * 1000))
        else:
            # retire idle replicas first; busy ones finish their batch, then go
            ordered = sorted(replicas, key=lambda r: r.busy)
            for replica in ordered[: len(replicas) - count]:
                replica.retiring = True
                if not replica.busy:
                    worker.replicas[vid].remove(replica)
            if not worker.replicas.get(vid):
                worker.replicas.pop(vid, None)
                worker.health.pop(vid, None)

    def remove_worker(self, worker: SimWorker) -> None:
        for vid in list(worker.replicas):
            self.set_replicas(worker, vid, 0, cold=False)
        self._charge(worker, self.now)
        worker.removed_s = self.now
        del self.workers[worker.worker_id]
        self._placed.clear()

    def _price(self, worker: SimWorker) -> float:
        inst = self.prices.instance_for(worker.hardware)
        if worker.hardware == "cpu":
            return inst.usd_per_hour * worker.cores / inst.vcpus
        return inst.usd_per_hour

    def _charge(self, worker: SimWorker, until: float) -> None:
        """Cost accrues from the moment a worker is asked for until it is removed."""
        start = worker.asked_s if worker.charged_to_s is None else worker.charged_to_s
        self.cost_usd += self._price(worker) * max(until - start, 0.0) / 3600.0
        worker.charged_to_s = until

    # -- serving ----------------------------------------------------------------------------

    def _slowdown(self, worker: SimWorker) -> float:
        if worker.hardware == "gpu":
            return float(max(worker.busy_threads, 1))
        share = worker.busy_threads / worker.cores
        if share <= 1.0:
            return 1.0
        # time-slicing, and the cache contention measured for two models on one core
        return share * max(self.world.interference_slowdown / 2.0, 1.0)

    def _dispatch(self, vid: str) -> None:
        queue = self.queues[vid]
        if not queue:
            return
        variant = self.catalog.variants[vid]
        profile = variant.profile
        assert profile is not None
        placed = self._placed.get(vid)
        if placed is None:
            placed = [w.replicas[vid] for w in self.workers.values() if vid in w.replicas]
            self._placed[vid] = placed
        limit = profile.batch_limit
        for replicas in placed:  # nothing here adds or removes workers or replicas
            for replica in replicas:
                if not queue:
                    return
                if replica.busy or replica.retiring or replica.ready_s > self.now:
                    continue
                wait_ms = self._batch_wait_ms(vid, queue, limit)
                if wait_ms > 0:
                    replica.busy = True  # holding the batch open: the real rule
                    self._push(self.now + wait_ms / 1000.0, self.START, replica)
                    continue
                self._start(replica, queue, limit)

    def _batch_wait_ms(
        self, vid: str, queue: deque[tuple[float, float, float, int]], limit: int
    ) -> float:
        if len(queue) >= limit or self.s.batch_wait_ms <= 0:
            return 0.0
        # only the earliest objective counts
        earliest_ms = min((q[0] * 1000.0 + q[1] for q in queue if q[1] != math.inf), default=None)
        return batch_wait_ms(
            now_ms=self.now * 1000.0,
            rows=len(queue),
            limit=limit,
            slo_deadlines_ms=[] if earliest_ms is None else [earliest_ms],
            latency_ms=self._latency_ms[vid],
            arrival_qps=self.arrival_rate.get(vid, 0.0),
            max_wait_ms=self.s.batch_wait_ms,
        )

    def _start(self, replica: Replica, queue: deque[tuple[float, float, float, int]],
               limit: int) -> None:  # fmt: skip
        now = self.now
        batch: list[tuple[float, float, float, int]] = []
        while queue and len(batch) < limit:
            query = queue.popleft()
            if query[2] <= now:
                self.outcome.fail("deadline_exceeded")
                continue
            batch.append(query)
        if not batch:
            return
        self.outcome.started += len(batch)
        self.outcome.wait_sum_s += sum(now - q[0] for q in batch)
        variant = replica.variant
        profile = variant.profile
        assert profile is not None
        worker = replica.worker
        threads = max(variant.threads, 1) if worker.hardware == "cpu" else 1
        worker.account_busy(now, threads)
        typical_ms = self._latency_ms[variant.id](len(batch)) * self._slowdown(worker)
        jitter = math.exp(self._normal() * self.world.jitter_sigma.get(variant.id, 0))
        service_ms = typical_ms * jitter
        replica.busy = True
        stats = worker.window.setdefault(variant.id, [0.0, 0.0, 0.0, 0.0, 0.0])
        stats[1] += 1
        stats[2] += len(batch)
        stats[3] += service_ms
        stats[4] += typical_ms  # the median of the jittered times, for the state machine
        self._push(now + service_ms / 1000.0, self.DONE, (replica, batch, threads))

    def _normal(self) -> float:
        """The next standard normal of the run's stream."""
        if self._normal_at == len(self._normals):
            self._normals = self.rng.standard_normal(NORMALS_BLOCK).tolist()
            self._normal_at = 0
        self._normal_at += 1
        return self._normals[self._normal_at - 1]

    def _done(self, payload: tuple[Replica, list[tuple[float, float, float, int]], int]) -> None:
        replica, batch, threads = payload
        replica.busy = False
        worker = replica.worker
        if worker.removed_s is None:
            worker.account_busy(self.now, -threads)
        accuracy = replica.variant.profile.accuracy if replica.variant.profile else 0.0
        out = self.outcome
        latencies = self.served_latencies.setdefault(replica.variant.id, [])
        for arrived, slo, _deadline, cls in batch:
            latency_ms = (self.now - arrived) * 1000.0 + self.s.overhead_ms
            out.served += 1
            out.accuracy_sum += accuracy
            if latency_ms > slo:
                out.late += 1
                out.late_by_class[cls] = out.late_by_class.get(cls, 0) + 1
            latencies.append(latency_ms)
        if replica.retiring:
            replicas = worker.replicas.get(replica.variant.id, [])
            if replica in replicas:
                replicas.remove(replica)
            if not replicas:
                worker.replicas.pop(replica.variant.id, None)
                worker.health.pop(replica.variant.id, None)
                self._placed.clear()
        self._dispatch(replica.variant.id)

    # -- the gateway ----------------------------------------------------------------------

    def _choose(self, cls: int) -> tuple[str | None, str]:
        memo = self._memo.get(cls)
        if memo is None:
            try:
                decision = select(self.index, self.classes[cls][1])
            except InfaasError as exc:
                memo = (None, exc.code)
            else:
                vid = decision.variant.id
                running = bool(self.live.placements(vid))
                memo = (vid, "") if running else (None, "no_worker")
                if decision.dealt:
                    return memo  # dealt by the plan: the next query may go elsewhere
            self._memo[cls] = memo
        return memo

    def _arrive(self, t: float, cls: int) -> None:
        self.outcome.arrivals += 1
        second = int(t)
        counts = self.class_arrivals[cls]
        counts[second] = counts.get(second, 0) + 1
        vid, code = self._choose(cls)
        if vid is None:
            self.outcome.fail(code)
            return
        queue = self.queues[vid]
        if len(queue) >= QUEUE_MAX_LENGTH:
            self.outcome.fail("queue_full")
            return
        req = self.classes[cls][1]
        slo = req.latency_ms if req.latency_ms is not None else math.inf
        timeout_s = max(self.s.timeout_factor * slo, 1000.0) / 1000.0 if slo != math.inf else 10
        queue.append((t, slo, t + timeout_s, cls))
        self.variant_arrivals[vid] = self.variant_arrivals.get(vid, 0) + 1
        self._dispatch(vid)

    # -- monitoring -----------------------------------------------------------------------

    def _monitor(self) -> None:
        now = self.now
        reports = {}
        ready_total: dict[str, int] = {}  # ready replicas per variant across the fleet
        for w in self.workers.values():
            for vid, reps in w.replicas.items():
                ready_total[vid] = ready_total.get(vid, 0) + sum(r.ready_s <= now for r in reps)
        for worker in self.workers.values():
            if not worker.running(now):
                continue
            worker.account_busy(now, 0)
            cpu_util = worker.busy_thread_s / (MONITOR_S * worker.cores)
            worker.busy_thread_s = 0.0
            loads = {}
            for vid, replicas in worker.replicas.items():
                loads[vid] = self._variant_load(worker, vid, replicas, ready_total.get(vid, 0))
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
        for vid in self.catalog.variants:
            rate = self.variant_arrivals.get(vid, 0) / MONITOR_S
            self.arrival_rate[vid] = 0.5 * self.arrival_rate.get(vid, 0.0) + 0.5 * rate
        self.variant_arrivals.clear()
        self.served_latencies.clear()
        self.live = LiveSnapshot(taken_ms=now * 1000.0, workers=reports)

    def _variant_load(
        self, worker: SimWorker, vid: str, replicas: list[Replica], total: int
    ) -> VariantLoad:
        ready = [r for r in replicas if r.ready_s <= self.now and not r.retiring]
        variant = self.catalog.variants[vid]
        if not ready:
            return VariantLoad(variant=vid, app=variant.app, state=LOADING, replicas=0)
        share = len(ready) / max(total, 1)
        _, batches, rows, busy_ms, typical_ms = worker.window.get(vid, [0.0] * 5)
        arrived = self.variant_arrivals.get(vid, 0) * share
        backlog = int(len(self.queues[vid]) * share) + sum(r.busy for r in ready)
        lat = self.served_latencies.get(vid, [])
        p50 = float(np.median(lat)) if lat else 0.0
        mean_batch = rows / batches if batches else 0.0
        obs = Observation(
            now_ms=self.now * 1000.0,
            window_s=MONITOR_S,
            replicas=len(ready),
            arrived=round(arrived),
            batches=int(batches),
            mean_batch=mean_batch,
            model_p50_ms=typical_ms / batches if batches else 0.0,
            busy_ms=busy_ms,
            backlog=backlog,
            p50_ms=p50,
        )
        assert variant.profile is not None
        health = next_health(worker.health.get(vid, Health()), obs, variant.profile, self.states)
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

    def _refresh_index(self) -> None:
        self.index = SelectorIndex(self.catalog, self.live, previous=self.index, routes=self.routes)
        self._memo.clear()

    # -- what the scaler reads --------------------------------------------------------------

    def demands(self) -> list[Demand]:
        newest = int(self.now) - 1
        oldest = newest - DEMAND_WINDOW_S + 1
        out = []
        for cls, counts in self.class_arrivals.items():
            for second in [s for s in counts if s < oldest]:
                del counts[second]
            count = sum(c for s, c in counts.items() if oldest <= s <= newest)
            if count:
                app, req = self.classes[cls]
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

    def queue_depths(self) -> dict[str, int]:
        return {vid: len(q) for vid, q in self.queues.items() if q}

    def apply(self, actions: Iterable[Action]) -> None:
        for action in actions:
            self.actions += 1
            self.action_log.append((self.now, action))
            worker = self.workers.get(action.worker or "")
            if action.kind == ADD_WORKER:
                self.add_worker(action.hardware or "cpu")
            elif action.kind == REMOVE_WORKER and worker is not None:
                self.remove_worker(worker)
            elif action.kind in (LOAD, SET_REPLICAS) and worker is not None and action.variant:
                self.set_replicas(
                    worker, action.variant, action.replicas or 1, cold=action.kind == LOAD
                )
                self._dispatch(action.variant)
            elif action.kind == UNLOAD and worker is not None and action.variant:
                self.set_replicas(worker, action.variant, 0, cold=False)

    # -- the run ------------------------------------------------------------------------

    def _sample(self) -> None:
        tl = self.timeline
        tl.t_s.append(self.now)
        second = int(self.now) - 1
        tl.load_qps.append(float(sum(c.get(second, 0) for c in self.class_arrivals.values())))
        tl.cost_per_hour.append(sum(self._price(w) for w in self.workers.values()))
        tl.cpu_workers.append(sum(w.hardware == "cpu" for w in self.workers.values()))
        tl.gpu_workers.append(sum(w.hardware == "gpu" for w in self.workers.values()))
        counts: dict[str, int] = {}
        for w in self.workers.values():
            for vid, reps in w.replicas.items():
                counts[vid] = counts.get(vid, 0) + len(reps)
        tl.variants.append(counts)

    def _reset_metrics(self) -> None:
        """End of the warm-up: what happened so far is not counted."""
        for worker in self.workers.values():
            self._charge(worker, self.now)
        self.cost_usd = 0.0
        self.actions = 0
        self.action_log = []
        self.outcome = Outcome()
        self.timeline = Timeline()
        self.plan_ms = []

    def run(self, duration_s: float, decide: Decide | None, *, measure_from_s: float = 0.0) -> None:
        """Play the arrivals; monitor every second, refresh the gateway, tick the scaler.
        Nothing before ``measure_from_s`` (a warm-up) is counted."""
        times, classes = self.times, self.class_of
        n, i = len(times), 0
        next_monitor = MONITOR_S
        next_refresh = GATEWAY_REFRESH_S
        next_scaler = self.scaler_interval_s if decide is not None else math.inf
        self._monitor()  # the gateway starts with what runs at time 0
        self._refresh_index()
        while True:
            t_event = self.events[0][0] if self.events else math.inf
            t_arrival = times[i] if i < n else math.inf
            t_tick = min(next_monitor, next_refresh, next_scaler)
            t = min(t_event, t_arrival, t_tick)
            if t > duration_s:
                break
            if measure_from_s and self.now < measure_from_s <= t:
                self.now = measure_from_s
                self._reset_metrics()
            self.now = t
            if t == t_arrival:
                self._arrive(float(t_arrival), int(classes[i]))
                i += 1
            elif t == t_event:
                _, _, kind, payload = heapq.heappop(self.events)
                if kind == self.DONE:
                    self._done(payload)
                elif kind == self.LOADED:
                    self._dispatch(payload.variant.id)
                elif kind == self.START:
                    payload.busy = False
                    if not payload.retiring:
                        variant = payload.variant
                        assert variant.profile is not None
                        self._start(payload, self.queues[variant.id], variant.profile.batch_limit)
                    self._dispatch(payload.variant.id)
                elif kind == self.WORKER_READY and payload in self.workers:
                    for vid in list(self.workers[payload].replicas):
                        self._dispatch(vid)
            elif t == next_monitor:
                self._monitor()
                self._sample()
                next_monitor += MONITOR_S
            elif t == next_refresh:
                self._refresh_index()
                next_refresh += GATEWAY_REFRESH_S
            else:
                assert decide is not None
                self.apply(decide(self, t))
                next_scaler += self.scaler_interval_s
        self.now = duration_s
        for worker in list(self.workers.values()):
            self._charge(worker, duration_s)
        # Queries still queued or running at the end: those already past their objective
        # count as violations; the rest could still make it and are not counted at all.
        left = [item for q in self.queues.values() for item in q]
        left += list(self._in_service())
        overdue = sum(1 for t, slo, _, _ in left if (duration_s - t) * 1000.0 > slo)
        if overdue:
            self.outcome.fail("unfinished_past_objective", overdue)
        self.outcome.arrivals -= len(left) - overdue
        self.outcome.in_flight_at_end = len(left) - overdue

    def _in_service(self) -> Iterable[Any]:
        for when, _seq, kind, payload in self.events:
            if kind == self.DONE and when > self.now:
                yield from payload[1]

    def start_worker(self, hardware: str, replicas: dict[str, int]) -> SimWorker:
        """A worker running from time 0 with ``replicas`` already loaded (static fleets,
        and the starting point of the autoscaled ones)."""
        worker = self.add_worker(hardware, ready_now=True)
        for vid, count in replicas.items():
            self.set_replicas(worker, vid, count, cold=False)
        return worker

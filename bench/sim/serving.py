"""The simulated service: one queue per variant shared by all its replicas, replicas that
serve what waits in batches (the real batching rule of :mod:`workers.batching`), service
times from the profiles (latency at the batch size, with lognormal jitter fitted to the
profiled p99/p50, slowed down when replicas share cores or a GPU), queries that expire at
their deadline, queues that refuse work past their length limit."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from bench.sim.fleet import Fleet, Replica, SimWorker, WindowStats
from bench.sim.profiles import World
from bench.sim.settings import SimSettings
from workers.batching import batch_wait_ms

QUEUE_MAX_LENGTH = 2000
NORMALS_BLOCK = 4096


class Query(NamedTuple):
    """One query in a variant's queue or in a batch."""

    arrived_s: float
    slo_ms: float  # its latency objective (inf: none)
    deadline_s: float  # the gateway gives up on it then
    cls: int  # its class, an index into the simulation's classes


@dataclass(frozen=True, slots=True)
class BatchStart:
    """A replica held its batch open for more queries; now it starts."""

    replica: Replica


@dataclass(frozen=True, slots=True)
class BatchDone:
    """A replica finished a batch of ``threads`` threads."""

    replica: Replica
    batch: list[Query]
    threads: int


Schedule = Callable[[float, BatchStart | BatchDone], None]


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


def _memoized(latency_ms: Callable[[int], float]) -> Callable[[int], float]:
    """A profile's latency by batch size, computed once per size."""
    known: dict[int, float] = {}

    def at(batch: int) -> float:
        value = known.get(batch)
        if value is None:
            value = known[batch] = latency_ms(batch)
        return value

    return at


class Serving:
    """The variants' queues and the replicas' batches; ``schedule`` puts an event on the
    simulation's heap. What the monitor reads is counted per window
    (``arrivals_this_window``, ``latencies_this_window``); ``arrival_rate_qps`` is the
    monitor's smoothed rate, which the batching rule reads."""

    def __init__(
        self,
        world: World,
        fleet: Fleet,
        settings: SimSettings,
        rng: np.random.Generator,
        schedule: Schedule,
    ) -> None:
        self.world = world
        self.fleet = fleet
        self.settings = settings
        self.rng = rng
        self._schedule = schedule
        catalog = world.catalog
        self.queues: dict[str, deque[Query]] = {vid: deque() for vid in catalog.variants}
        self.outcome = Outcome()
        self.arrivals_this_window: dict[str, int] = {}
        self.latencies_this_window: dict[str, list[float]] = {}
        self.arrival_rate_qps: dict[str, float] = {}
        # hot-path caches, none of which changes a result: each profile's latencies by
        # batch size, and the jitter's normals drawn in blocks (the same stream as one
        # draw at a time)
        self.latency_ms: dict[str, Callable[[int], float]] = {
            vid: _memoized(v.profile.predict_latency_ms)
            for vid, v in catalog.variants.items()
            if v.profile is not None
        }
        self._normals: list[float] = []
        self._normal_at = 0

    def enqueue(self, vid: str, query: Query, now: float) -> None:
        """A query the gateway sent to ``vid``'s queue (refused when the queue is full)."""
        queue = self.queues[vid]
        if len(queue) >= QUEUE_MAX_LENGTH:
            self.outcome.fail("queue_full")
            return
        queue.append(query)
        self.arrivals_this_window[vid] = self.arrivals_this_window.get(vid, 0) + 1
        self.dispatch(vid, now)

    def dispatch(self, vid: str, now: float) -> None:
        """Hand what waits for ``vid`` to its free loaded replicas."""
        queue = self.queues[vid]
        if not queue:
            return
        profile = self.world.catalog.variants[vid].profile
        assert profile is not None
        limit = profile.batch_limit
        for replicas in self.fleet.placed(vid):  # nothing here adds or removes replicas
            for replica in replicas:
                if not queue:
                    return
                if replica.busy or replica.retiring or replica.ready_s > now:
                    continue
                wait_ms = self._batch_wait_ms(vid, queue, limit, now)
                if wait_ms > 0:
                    replica.busy = True  # holding the batch open: the real rule
                    self._schedule(now + wait_ms / 1000.0, BatchStart(replica))
                    continue
                self._start(replica, queue, limit, now)

    def _batch_wait_ms(self, vid: str, queue: deque[Query], limit: int, now: float) -> float:
        if len(queue) >= limit or self.settings.batch_wait_ms <= 0:
            return 0.0
        # only the earliest objective counts
        earliest_ms = min(
            (q.arrived_s * 1000.0 + q.slo_ms for q in queue if q.slo_ms != math.inf),
            default=None,
        )
        return batch_wait_ms(
            now_ms=now * 1000.0,
            rows=len(queue),
            limit=limit,
            slo_deadlines_ms=[] if earliest_ms is None else [earliest_ms],
            latency_ms=self.latency_ms[vid],
            arrival_qps=self.arrival_rate_qps.get(vid, 0.0),
            max_wait_ms=self.settings.batch_wait_ms,
        )

    def held_batch_starts(self, event: BatchStart, now: float) -> None:
        replica = event.replica
        replica.busy = False
        variant = replica.variant
        if not replica.retiring:
            assert variant.profile is not None
            self._start(replica, self.queues[variant.id], variant.profile.batch_limit, now)
        self.dispatch(variant.id, now)

    def _start(self, replica: Replica, queue: deque[Query], limit: int, now: float) -> None:
        batch: list[Query] = []
        while queue and len(batch) < limit:
            query = queue.popleft()
            if query.deadline_s <= now:
                self.outcome.fail("deadline_exceeded")
                continue
            batch.append(query)
        if not batch:
            return
        self.outcome.started += len(batch)
        self.outcome.wait_sum_s += sum(now - q.arrived_s for q in batch)
        variant = replica.variant
        profile = variant.profile
        assert profile is not None
        worker = replica.worker
        threads = max(variant.threads, 1) if worker.hardware == "cpu" else 1
        worker.account_busy(now, threads)
        typical_ms = self.latency_ms[variant.id](len(batch)) * self._slowdown(worker)
        jitter = math.exp(self._normal() * self.world.jitter_sigma.get(variant.id, 0))
        service_ms = typical_ms * jitter
        replica.busy = True
        stats = worker.window.get(variant.id)
        if stats is None:
            stats = worker.window[variant.id] = WindowStats()
        stats.batches += 1
        stats.rows += len(batch)
        stats.busy_ms += service_ms
        stats.typical_ms += typical_ms  # the median of the jittered times
        self._schedule(now + service_ms / 1000.0, BatchDone(replica, batch, threads))

    def _slowdown(self, worker: SimWorker) -> float:
        if worker.hardware == "gpu":
            return float(max(worker.busy_threads, 1))
        share = worker.busy_threads / worker.cores
        if share <= 1.0:
            return 1.0
        # time-slicing, and the cache contention measured for two models on one core
        return share * max(self.world.interference_slowdown / 2.0, 1.0)

    def _normal(self) -> float:
        """The next standard normal of the run's stream."""
        if self._normal_at == len(self._normals):
            self._normals = self.rng.standard_normal(NORMALS_BLOCK).tolist()
            self._normal_at = 0
        self._normal_at += 1
        return self._normals[self._normal_at - 1]

    def batch_done(self, event: BatchDone, now: float) -> None:
        replica = event.replica
        replica.busy = False
        worker = replica.worker
        if worker.removed_s is None:
            worker.account_busy(now, -event.threads)
        accuracy = replica.variant.profile.accuracy if replica.variant.profile else 0.0
        out = self.outcome
        latencies = self.latencies_this_window.setdefault(replica.variant.id, [])
        overhead_ms = self.settings.overhead_ms
        for query in event.batch:
            latency_ms = (now - query.arrived_s) * 1000.0 + overhead_ms
            out.served += 1
            out.accuracy_sum += accuracy
            if latency_ms > query.slo_ms:
                out.late += 1
                out.late_by_class[query.cls] = out.late_by_class.get(query.cls, 0) + 1
            latencies.append(latency_ms)
        if replica.retiring:
            self.fleet.retire(replica)
        self.dispatch(replica.variant.id, now)

"""The simulated fleet: workers that take time to start, replicas that take their profiled
load time to load, and what the fleet costs from the moment a worker is asked for."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from bench.sim.settings import SimSettings
from registry.pricing import PriceTable
from registry.types import CatalogSnapshot, Variant
from workers.states import Health


@dataclass
class Replica:
    variant: Variant
    worker: SimWorker
    ready_s: float
    busy: bool = False
    retiring: bool = False


@dataclass
class WindowStats:
    """One variant's work on one worker in this monitoring window."""

    batches: int = 0
    rows: int = 0
    busy_ms: float = 0.0  # jittered service times
    typical_ms: float = 0.0  # their medians, for the state machine


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
    window: dict[str, WindowStats] = field(default_factory=dict)  # per variant

    def running(self, now: float) -> bool:
        return self.removed_s is None and now >= self.ready_s

    def account_busy(self, now: float, delta: int) -> None:
        self.busy_thread_s += self.busy_threads * (now - self.last_change_s)
        self.last_change_s = now
        self.busy_threads += delta


@dataclass(frozen=True, slots=True)
class ReplicaLoaded:
    """A replica finished loading: it may take work."""

    replica: Replica


@dataclass(frozen=True, slots=True)
class WorkerReady:
    """A worker finished starting: its replicas may take work once loaded."""

    worker_id: str


Schedule = Callable[[float, ReplicaLoaded | WorkerReady], None]


class Fleet:
    """The workers and their replicas; ``schedule`` puts an event on the simulation's heap.

    ``cost_usd`` accrues per worker from the moment it is asked for until it is removed
    (charged when it goes, and on :meth:`charge_all`).
    """

    def __init__(
        self,
        catalog: CatalogSnapshot,
        prices: PriceTable,
        settings: SimSettings,
        schedule: Schedule,
    ) -> None:
        self.catalog = catalog
        self.prices = prices
        self.settings = settings
        self._schedule = schedule
        self.workers: dict[str, SimWorker] = {}
        self.cost_usd = 0.0
        self._worker_seq = 0
        # each variant's replica lists in worker order, a hot-path cache that changes no
        # result: dropped whenever a variant's list comes or goes, or a worker goes
        self._placed: dict[str, list[list[Replica]]] = {}

    def add_worker(self, hardware: str, now: float, *, ready_now: bool = False) -> SimWorker:
        self._worker_seq += 1
        s = self.settings
        start = 0.0 if ready_now else (
            s.gpu_worker_start_s if hardware == "gpu" else s.cpu_worker_start_s
        )  # fmt: skip
        worker = SimWorker(
            worker_id=f"{hardware}-sim-{self._worker_seq}",
            hardware=hardware,
            cores=s.cpu_worker_cores if hardware == "cpu" else 1,
            asked_s=now,
            ready_s=now + start,
            last_change_s=now,
        )
        self.workers[worker.worker_id] = worker
        if start:
            self._schedule(worker.ready_s, WorkerReady(worker.worker_id))
        return worker

    def set_replicas(
        self, worker: SimWorker, vid: str, count: int, now: float, *, cold: bool
    ) -> None:
        variant = self.catalog.variants[vid]
        self._placed.clear()
        replicas = [r for r in worker.replicas.get(vid, []) if not r.retiring]
        if count > len(replicas):
            profile = variant.profile
            assert profile is not None
            load_s = profile.load_ms / 1000.0 if cold or not replicas else 0.0
            ready = max(now, worker.ready_s) + load_s
            for _ in range(count - len(replicas)):
                replica = Replica(variant, worker, ready)
                worker.replicas.setdefault(vid, []).append(replica)
                self._schedule(ready, ReplicaLoaded(replica))
            worker.health.setdefault(vid, Health(since_ms=now * 1000))
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

    def retire(self, replica: Replica) -> None:
        """A retiring replica finished its batch: it goes."""
        worker, vid = replica.worker, replica.variant.id
        replicas = worker.replicas.get(vid, [])
        if replica in replicas:
            replicas.remove(replica)
        if not replicas:
            worker.replicas.pop(vid, None)
            worker.health.pop(vid, None)
            self._placed.clear()

    def remove_worker(self, worker: SimWorker, now: float) -> None:
        for vid in list(worker.replicas):
            self.set_replicas(worker, vid, 0, now, cold=False)
        self.charge(worker, now)
        worker.removed_s = now
        del self.workers[worker.worker_id]
        self._placed.clear()

    def placed(self, vid: str) -> list[list[Replica]]:
        """The variant's replica lists, one per worker that has it, in worker order."""
        placed = self._placed.get(vid)
        if placed is None:
            placed = [w.replicas[vid] for w in self.workers.values() if vid in w.replicas]
            self._placed[vid] = placed
        return placed

    def replica_counts(self) -> dict[str, int]:
        """Replicas per variant across the fleet, loading and retiring ones too."""
        counts: dict[str, int] = {}
        for w in self.workers.values():
            for vid, reps in w.replicas.items():
                counts[vid] = counts.get(vid, 0) + len(reps)
        return counts

    def ready_counts(self, now: float) -> dict[str, int]:
        """Loaded replicas per variant across the fleet."""
        ready: dict[str, int] = {}
        for w in self.workers.values():
            for vid, reps in w.replicas.items():
                ready[vid] = ready.get(vid, 0) + sum(r.ready_s <= now for r in reps)
        return ready

    # -- cost -----------------------------------------------------------------------------

    def price(self, worker: SimWorker) -> float:
        inst = self.prices.instance_for(worker.hardware)
        if worker.hardware == "cpu":
            return inst.usd_per_hour * worker.cores / inst.vcpus
        return inst.usd_per_hour

    def cost_per_hour(self) -> float:
        return sum(self.price(w) for w in self.workers.values())

    def charge(self, worker: SimWorker, until: float) -> None:
        """Cost accrues from the moment a worker is asked for until it is removed."""
        start = worker.asked_s if worker.charged_to_s is None else worker.charged_to_s
        self.cost_usd += self.price(worker) * max(until - start, 0.0) / 3600.0
        worker.charged_to_s = until

    def charge_all(self, until: float) -> None:
        for worker in list(self.workers.values()):
            self.charge(worker, until)

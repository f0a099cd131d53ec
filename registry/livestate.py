"""Live state: what each worker has loaded and how it is doing, right now.

Workers publish a report every second with a time-to-live, so a dead worker drops out
by itself; the gateway and the scaler read snapshots. Redis in the stack, a dict in
this process for the embedded default. Also holds small short-lived documents, whose kinds
are defined in :mod:`registry.live_docs`.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from queues.errors import Unavailable

# variant states on a worker (INFAAS.md)
INACTIVE = "inactive"
LOADING = "loading"
ACTIVE = "active"
OVERLOADED = "overloaded"
INTERFERED = "interfered"
VARIANT_STATES = (INACTIVE, LOADING, ACTIVE, OVERLOADED, INTERFERED)
HEALTHY_STATES = frozenset({ACTIVE})


def now_ms() -> float:
    return time.time() * 1000.0


@dataclass(frozen=True, slots=True)
class VariantLoad:
    """One loaded variant on one worker, over the last monitoring window."""

    variant: str
    app: str
    state: str = ACTIVE
    replicas: int = 1
    qps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    model_p50_ms: float = 0.0
    mean_batch: float = 0.0
    outstanding: int = 0
    completed: int = 0
    errors: int = 0
    expired: int = 0
    max_batch: int = 1
    since_ms: float = 0.0
    busy: float = 0.0  # share of the window the replicas spent running batches
    backlog: int = 0  # queries held by the replicas plus waiting in the variant's queue
    state_reason: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VariantLoad:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True, slots=True)
class WorkerReport:
    worker_id: str
    hardware: str
    host: str
    pid: int
    cores: int
    variants: dict[str, VariantLoad] = field(default_factory=dict)
    cpu_util: float = 0.0
    memory_mb: float = 0.0
    gpu_util: float = 0.0
    gpu_memory_mb: float = 0.0
    celery_name: str = ""
    started_ms: float = 0.0
    heartbeat_ms: float = 0.0
    loads_on_demand: bool = True  # its loader takes load requests (workers.loader)

    def to_json(self) -> str:
        data = asdict(self)
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> WorkerReport:
        data = json.loads(text)
        variants = {k: VariantLoad.from_dict(v) for k, v in data.pop("variants", {}).items()}
        known = set(cls.__dataclass_fields__)
        return cls(variants=variants, **{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True, slots=True)
class Placement:
    worker: WorkerReport
    load: VariantLoad


@dataclass(frozen=True, slots=True)
class LiveSnapshot:
    """All live workers at one moment, indexed by the variants they serve."""

    taken_ms: float
    workers: dict[str, WorkerReport]
    by_variant: dict[str, tuple[Placement, ...]] = field(init=False)

    def __post_init__(self) -> None:
        index: dict[str, list[Placement]] = {}
        for worker in sorted(self.workers.values(), key=lambda w: w.worker_id):
            for load in worker.variants.values():
                index.setdefault(load.variant, []).append(Placement(worker, load))
        object.__setattr__(self, "by_variant", {k: tuple(v) for k, v in index.items()})

    @classmethod
    def empty(cls) -> LiveSnapshot:
        return cls(taken_ms=0.0, workers={})

    def placements(self, variant: str) -> tuple[Placement, ...]:
        return self.by_variant.get(variant, ())


class LiveState(Protocol):
    def put_worker(self, report: WorkerReport) -> None: ...

    def remove_worker(self, worker_id: str) -> None: ...

    def snapshot(self) -> LiveSnapshot: ...

    def put_doc(self, name: str, doc: dict[str, Any], ttl_s: float | None = None) -> None: ...

    def get_doc(self, name: str) -> dict[str, Any] | None: ...

    def delete_doc(self, name: str) -> None: ...

    def list_docs(self, prefix: str) -> dict[str, dict[str, Any]]:
        """Every live document whose name starts with ``prefix``."""
        ...

    def close(self) -> None: ...


class MemoryLiveState:
    """Live state inside one process (the embedded default)."""

    def __init__(self, ttl_s: float = 5.0) -> None:
        self._ttl_s = ttl_s
        self._lock = threading.Lock()
        self._workers: dict[str, tuple[float, WorkerReport]] = {}
        self._docs: dict[str, tuple[float, dict[str, Any]]] = {}

    def put_worker(self, report: WorkerReport) -> None:
        with self._lock:
            self._workers[report.worker_id] = (time.monotonic() + self._ttl_s, report)

    def remove_worker(self, worker_id: str) -> None:
        with self._lock:
            self._workers.pop(worker_id, None)

    def snapshot(self) -> LiveSnapshot:
        now = time.monotonic()
        with self._lock:
            for wid in [w for w, (exp, _) in self._workers.items() if exp <= now]:
                del self._workers[wid]
            workers = {wid: report for wid, (_, report) in self._workers.items()}
        return LiveSnapshot(taken_ms=now_ms(), workers=workers)

    def put_doc(self, name: str, doc: dict[str, Any], ttl_s: float | None = None) -> None:
        expires = time.monotonic() + ttl_s if ttl_s else float("inf")
        with self._lock:
            self._docs[name] = (expires, json.loads(json.dumps(doc)))

    def get_doc(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            item = self._docs.get(name)
        if item is None or item[0] <= time.monotonic():
            return None
        return item[1]

    def delete_doc(self, name: str) -> None:
        with self._lock:
            self._docs.pop(name, None)

    def list_docs(self, prefix: str) -> dict[str, dict[str, Any]]:
        now = time.monotonic()
        with self._lock:
            return {
                name: doc
                for name, (expires, doc) in self._docs.items()
                if name.startswith(prefix) and expires > now
            }

    def close(self) -> None:
        return None


class RedisLiveState:
    """Live state in Redis: one key per worker, each with the heartbeat's TTL."""

    def __init__(self, url: str, *, prefix: str = "infaas", ttl_s: float = 5.0) -> None:
        import redis

        self._redis = redis.Redis.from_url(
            url, socket_connect_timeout=2, socket_timeout=2, health_check_interval=30
        )
        self._prefix = prefix
        self._ttl_ms = int(ttl_s * 1000)
        self._url = url

    def _worker_key(self, worker_id: str) -> str:
        return f"{self._prefix}:worker:{worker_id}"

    def _unavailable(self, exc: Exception) -> Unavailable:
        host = self._url.split("@")[-1]
        return Unavailable(f"live state (Redis at {host}) is unreachable: {exc}")

    def put_worker(self, report: WorkerReport) -> None:
        import redis

        try:
            self._redis.set(self._worker_key(report.worker_id), report.to_json(), px=self._ttl_ms)
        except redis.RedisError as exc:
            raise self._unavailable(exc) from exc

    def remove_worker(self, worker_id: str) -> None:
        import redis

        try:
            self._redis.delete(self._worker_key(worker_id))
        except redis.RedisError as exc:
            raise self._unavailable(exc) from exc

    def snapshot(self) -> LiveSnapshot:
        import redis

        try:
            keys = list(self._redis.scan_iter(match=self._worker_key("*"), count=500))
            values = self._redis.mget(keys) if keys else []
        except redis.RedisError as exc:
            raise self._unavailable(exc) from exc
        workers: dict[str, WorkerReport] = {}
        for value in values:
            if value is None:
                continue  # expired between SCAN and MGET
            report = WorkerReport.from_json(value)
            workers[report.worker_id] = report
        return LiveSnapshot(taken_ms=now_ms(), workers=workers)

    def put_doc(self, name: str, doc: dict[str, Any], ttl_s: float | None = None) -> None:
        import redis

        try:
            self._redis.set(
                f"{self._prefix}:doc:{name}",
                json.dumps(doc, separators=(",", ":")),
                px=int(ttl_s * 1000) if ttl_s else None,
            )
        except redis.RedisError as exc:
            raise self._unavailable(exc) from exc

    def get_doc(self, name: str) -> dict[str, Any] | None:
        import redis

        try:
            value = self._redis.get(f"{self._prefix}:doc:{name}")
        except redis.RedisError as exc:
            raise self._unavailable(exc) from exc
        if value is None:
            return None
        doc: dict[str, Any] = json.loads(value)
        return doc

    def delete_doc(self, name: str) -> None:
        import redis

        try:
            self._redis.delete(f"{self._prefix}:doc:{name}")
        except redis.RedisError as exc:
            raise self._unavailable(exc) from exc

    def list_docs(self, prefix: str) -> dict[str, dict[str, Any]]:
        import redis

        head = f"{self._prefix}:doc:"
        try:
            keys = list(self._redis.scan_iter(match=f"{head}{prefix}*", count=500))
            values = self._redis.mget(keys) if keys else []
        except redis.RedisError as exc:
            raise self._unavailable(exc) from exc
        docs: dict[str, dict[str, Any]] = {}
        for key, value in zip(keys, values, strict=True):
            if value is not None:
                name = key.decode() if isinstance(key, bytes) else str(key)
                docs[name[len(head) :]] = json.loads(value)
        return docs

    def close(self) -> None:
        self._redis.close()


def open_live_state(url: str | None, *, prefix: str, ttl_s: float) -> LiveState:
    """Redis when ``url`` is set, else a new in-process state.

    In the embedded default gateway, worker and scaler run in one process and must be
    handed the same in-process state (the composition root in ``infaas.embedded`` does it).
    """
    if url:
        return RedisLiveState(url, prefix=prefix, ttl_s=ttl_s)
    return MemoryLiveState(ttl_s)

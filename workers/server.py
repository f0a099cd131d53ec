"""The variants one worker has loaded, and the replicas consuming their queues.

Loading fetches the artifact from the object store into a local cache, loads it with
its runtime (after the worker process started: CUDA does not survive a fork) and starts
replicas on the variant's queue. Every public method is safe to call from any thread
(Celery control commands, the scaler's requests, the monitor).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kombu import Connection

from queues import topology
from queues.errors import InvalidRequest, WorkerError
from queues.heap import settle_heap
from queues.settings import BrokerSettings
from registry.catalog import Catalog
from registry.livestate import now_ms
from registry.store import ObjectStore
from registry.types import Variant
from workers.artifacts import fetch_artifact
from workers.batching import consumer_prefetch
from workers.consumer import Replica, ReplicaConfig
from workers.runtimes.base import Runtime, RuntimeSpec, load_runtime
from workers.states import Health
from workers.stats import VariantStats

log = logging.getLogger(__name__)


@dataclass
class LoadedVariant:
    variant: Variant
    runtime: Runtime
    stats: VariantStats
    config: ReplicaConfig
    replicas: list[Replica] = field(default_factory=list)
    loaded_ms: float = field(default_factory=now_ms)
    load_ms: float = 0.0
    health: Health = field(default_factory=Health)

    @property
    def state(self) -> str:
        return self.health.state


class VariantServer:
    def __init__(
        self,
        *,
        worker_id: str,
        hardware: str,
        broker: BrokerSettings,
        catalog: Catalog,
        store: ObjectStore,
        cache_dir: Path,
        connect: Callable[[], Connection],
        max_prefetch: int = 256,
        batch_cap: int = 0,
        batch_wait_ms: float = 2.0,
        freeze_heap: bool = False,
    ) -> None:
        self.worker_id = worker_id
        self.hardware = hardware
        self._broker = broker
        self._catalog = catalog
        self._store = store
        self._cache_dir = cache_dir
        self._connect = connect
        self._max_prefetch = max_prefetch
        self._batch_cap = batch_cap
        self._batch_wait_ms = batch_wait_ms
        self._freeze_heap = freeze_heap
        self._lock = threading.RLock()
        self._loaded: dict[str, LoadedVariant] = {}
        self._replica_seq = 0

    # -- loading --------------------------------------------------------------------

    def load(self, variant_id: str, replicas: int = 1) -> LoadedVariant:
        """Load a variant (idempotent) and make sure it has at least ``replicas``."""
        if replicas < 1:
            raise InvalidRequest(f"replicas must be >= 1, got {replicas}")
        with self._lock:
            loaded = self._loaded.get(variant_id)
            new = loaded is None
            if loaded is None:
                loaded = self._load_new(variant_id)
                self._loaded[variant_id] = loaded
            self._resize(loaded, max(replicas, len(loaded.replicas)))
        if new and self._freeze_heap:
            settle_heap()  # outside the lock: the monitor and other loads need not wait
        return loaded

    def _load_new(self, variant_id: str) -> LoadedVariant:
        variant = self._catalog.get_variant(variant_id)
        if variant.hardware != self.hardware:
            raise WorkerError(
                f"variant {variant_id} needs {variant.hardware} hardware; this worker "
                f"({self.worker_id}) has {self.hardware}"
            )
        if not variant.ready or variant.profile is None:
            raise WorkerError(f"variant {variant_id} is {variant.status}, not ready to serve")
        model = self._catalog.get_model(variant.model)
        app = self._catalog.get_app(variant.app)
        started = time.perf_counter()
        artifact = self._fetch(variant)
        spec = RuntimeSpec.of_variant(variant, app.signature.name, model.output_name)
        runtime = load_runtime(spec, artifact)
        load_ms = (time.perf_counter() - started) * 1000
        batch = variant.profile.batch_limit
        if self._batch_cap:
            batch = min(batch, self._batch_cap)
        config = ReplicaConfig(
            worker_id=self.worker_id,
            variant=variant.id,
            queue=topology.variant_queue(self._broker.queue_prefix, variant.app, variant.id),
            queue_arguments=topology.variant_queue_arguments(
                self._broker.queue_prefix, self._broker.queue_max_length
            ),
            max_batch=batch,
            prefetch=consumer_prefetch(batch, bound=self._max_prefetch),
            item_shape=app.signature.item_shape,
            max_wait_ms=self._batch_wait_ms if batch > 1 else 0.0,
        )
        log.info("loaded %s in %.0f ms", variant_id, load_ms)
        return LoadedVariant(variant, runtime, VariantStats(), config, load_ms=load_ms)

    def _fetch(self, variant: Variant) -> Path:
        return fetch_artifact(self._store, self._cache_dir, variant)

    def unload(self, variant_id: str) -> bool:
        """Stop the variant's replicas (their held queries go back to the queue) and
        free it; False if it was not loaded."""
        with self._lock:
            loaded = self._loaded.pop(variant_id, None)
        if loaded is None:
            return False
        for replica in loaded.replicas:
            replica.stop()
        loaded.runtime.close()
        log.info("unloaded %s", variant_id)
        return True

    def set_replicas(self, variant_id: str, replicas: int) -> int:
        if replicas < 1:
            raise InvalidRequest(f"replicas must be >= 1 (unload to go to 0), got {replicas}")
        with self._lock:
            loaded = self._loaded.get(variant_id)
            if loaded is None:
                raise WorkerError(f"variant {variant_id} is not loaded on {self.worker_id}")
            self._resize(loaded, replicas)
            return len(loaded.replicas)

    def _resize(self, loaded: LoadedVariant, replicas: int) -> None:
        while len(loaded.replicas) < replicas:
            self._replica_seq += 1
            profile = loaded.variant.profile
            replica = Replica(
                loaded.config,
                loaded.runtime,
                loaded.stats,
                self._connect,
                index=self._replica_seq,
                latency_ms=profile.predict_latency_ms if profile is not None else None,
            )
            replica.start()
            if not replica.wait_consuming(15):
                replica.stop()
                raise WorkerError(
                    f"replica of {loaded.variant.id} could not consume {loaded.config.queue}; "
                    "is the broker reachable?"
                )
            loaded.replicas.append(replica)
        while len(loaded.replicas) > replicas:
            loaded.replicas.pop().stop()

    # -- reading --------------------------------------------------------------------

    def loaded(self) -> dict[str, LoadedVariant]:
        with self._lock:
            return dict(self._loaded)

    def stop_consuming(self) -> None:
        """Ask every replica to stop (:meth:`Replica.request_stop`) and return at once:
        the first step of a worker's shutdown, so that the broker stops delivering here
        while the rest of the worker closes."""
        with self._lock:
            replicas = [r for loaded in self._loaded.values() for r in loaded.replicas]
        for replica in replicas:
            replica.request_stop()

    def stop(self) -> None:
        # every replica is told first, so that they stop together rather than one by one
        self.stop_consuming()
        for variant_id in list(self.loaded()):
            self.unload(variant_id)

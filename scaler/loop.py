"""The scaler's control loop: every tick, read the world, ask the policy, act.

Reads: the catalog (reloaded when its revision changes), live state (worker reports and
the gateways' demand documents), queue depths from the broker. Decides: the pure policy
of :mod:`scaler.policy`. Acts: Celery remote control to make a worker load, resize or
unload a variant, and an actuator to add or remove workers. Actions run on a small pool
so a tick never waits on a slow load; a failed action leaves the plan's other steps
intact and is retried with exponential back-off, never in a tight loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from queues import topology
from queues.depth import QueueProbe
from queues.errors import InfaasError, WorkerError
from queues.settings import BrokerSettings
from registry import live_docs
from registry.catalog import Catalog
from registry.livestate import LiveSnapshot, LiveState
from registry.pricing import PriceTable
from registry.types import CatalogSnapshot
from scaler.actuators import Actuator, WorkerRef
from scaler.policy import (
    ADD_WORKER,
    LOAD,
    REMOVE_WORKER,
    SET_REPLICAS,
    UNLOAD,
    Action,
    Plan,
    ScalerState,
    decide,
    decide_replicate_only,
)
from scaler.settings import ScalerSettings
from scaler.snapshot import Demand, build_snapshot

log = logging.getLogger(__name__)
BACKOFF_FIRST_S = 2.0
BACKOFF_MAX_S = 60.0
CONTROL_TIMEOUT_S = 30.0


@dataclass
class Backoff:
    """Failed actions wait before they are tried again: 2 s, 4 s, 8 s … up to a minute."""

    failures: int = 0
    next_try: float = 0.0
    last_error: str = ""


@dataclass
class ScalerMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.actions = Counter(
            "infaas_scaler_actions", "Scaling actions taken, by kind and outcome",
            ["kind", "outcome"], registry=self.registry,
        )  # fmt: skip
        self.ticks = Counter("infaas_scaler_ticks", "Ticks run", registry=self.registry)
        self.tick_ms = Histogram(
            "infaas_scaler_tick_ms", "Time of one tick (ms)", registry=self.registry,
            buckets=(5, 10, 25, 50, 100, 250, 500, 750, 1000, 2000),
        )  # fmt: skip
        self.cost_per_hour = Gauge(
            "infaas_scaler_planned_cost_per_hour", "Hardware cost of the plan ($/h)",
            registry=self.registry,
        )  # fmt: skip


class ScalerLoop:
    def __init__(
        self,
        *,
        settings: ScalerSettings,
        broker: BrokerSettings,
        catalog: Catalog,
        live: LiveState,
        prices: PriceTable,
        celery: Any,
        actuator: Actuator,
        probe: QueueProbe,
        policy: str = "infaas",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.catalog = catalog
        self.live = live
        self.prices = prices
        self.celery = celery
        self.actuator = actuator
        self.probe = probe
        self.decide = decide_replicate_only if policy == "replicate-only" else decide
        self.clock = clock
        self.state = ScalerState()
        self.metrics = ScalerMetrics()
        self.last_plan: Plan | None = None
        self._last_ms = 0.0
        self._catalog = CatalogSnapshot.empty()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="scaler-act")
        self._in_flight: dict[tuple[str, str, str], Future[None]] = {}
        self._backoff: dict[tuple[str, str, str], Backoff] = {}
        self._lock = threading.Lock()

    # -- reading ----------------------------------------------------------------------

    def _catalog_snapshot(self) -> CatalogSnapshot:
        if self.catalog.revision() != self._catalog.revision:
            self._catalog = self.catalog.snapshot()
        return self._catalog

    def _demands(self, catalog: CatalogSnapshot) -> list[Demand]:
        """The gateways' demand documents; classes of apps the catalog no longer has
        (deleted since) are left out, not allowed to fail the tick."""
        demands = []
        for doc in live_docs.read_demands(self.live):
            for c in doc.classes:
                r = c.requirements
                if r.app not in catalog.apps or c.qps <= 0:
                    continue
                demands.append(
                    Demand(
                        app=r.app,
                        qps=c.qps,
                        latency_ms=r.latency_ms,
                        min_accuracy=r.min_accuracy,
                        max_cost_per_hour=r.max_cost_per_hour,
                    )
                )
        return demands

    def _queue_depths(self, catalog: CatalogSnapshot) -> dict[str, int]:
        prefix = self.broker.queue_prefix
        queues = {
            topology.variant_queue(prefix, v.app, v.id): v.id
            for v in catalog.variants.values()
            if v.ready
        }
        try:
            depths = self.probe.depths(queues)
        except InfaasError as exc:
            log.warning("queue depths unavailable this tick: %s", exc.message)
            return {}
        return {queues[q]: d.messages for q, d in depths.items()}

    # -- one tick ---------------------------------------------------------------------

    def tick(self) -> Plan:
        started = time.perf_counter()
        # the policy refuses time going backwards: a wall clock stepped back waits
        now_ms = max(self.clock() * 1000.0, self._last_ms + 1.0)
        self._last_ms = now_ms
        catalog = self._catalog_snapshot()
        live = self.live.snapshot()
        snapshot = build_snapshot(
            now_ms,
            catalog,
            live,
            self._demands(catalog),
            self._queue_depths(catalog),
            self.prices,
            self.settings,
        )
        read_ms = (time.perf_counter() - started) * 1000
        plan, self.state = self.decide(snapshot, self.state, self.settings)
        self.last_plan = plan
        for action in plan.actions:
            self._submit(action, live)
        tick_ms = (time.perf_counter() - started) * 1000
        self.metrics.ticks.inc()
        self.metrics.tick_ms.observe(tick_ms)
        self.metrics.cost_per_hour.set(plan.cost_per_hour)
        self._publish(plan, read_ms, tick_ms)
        return plan

    def _publish(self, plan: Plan, read_ms: float, tick_ms: float) -> None:
        doc = plan.to_dict()
        doc["actuator"] = self.actuator.name
        doc["tick_ms"] = round(tick_ms, 3)
        doc["read_ms"] = round(read_ms, 3)
        with self._lock:
            doc["retrying"] = [
                {"action": "/".join(k), "failures": b.failures, "error": b.last_error}
                for k, b in self._backoff.items()
                if b.failures
            ]
        try:
            live_docs.put_plan(self.live, doc)
        except InfaasError as exc:
            log.warning("could not publish the plan: %s", exc.message)

    # -- acting -----------------------------------------------------------------------

    @staticmethod
    def _key(action: Action) -> tuple[str, str, str]:
        target = action.worker or action.hardware or ""
        return (action.kind, target, action.variant or "")

    def _submit(self, action: Action, live: LiveSnapshot) -> None:
        key = self._key(action)
        with self._lock:
            running = self._in_flight.get(key)
            if running is not None and not running.done():
                return
            backoff = self._backoff.get(key)
            if backoff is not None and backoff.next_try > time.monotonic():
                self.metrics.actions.labels(action.kind, "deferred").inc()
                return
            self._in_flight[key] = self._pool.submit(self._run, action, key, live)

    def _run(self, action: Action, key: tuple[str, str, str], live: LiveSnapshot) -> None:
        try:
            said = self._execute(action, live)
        except (InfaasError, OSError) as exc:
            message = getattr(exc, "message", str(exc))
            with self._lock:
                backoff = self._backoff.setdefault(key, Backoff())
                backoff.failures += 1
                backoff.last_error = message
                delay = min(BACKOFF_FIRST_S * 2 ** (backoff.failures - 1), BACKOFF_MAX_S)
                backoff.next_try = time.monotonic() + delay
            self.metrics.actions.labels(action.kind, "failed").inc()
            log.warning("scaling action %s failed (retry in %.0f s): %s", key, delay, message)
            return
        with self._lock:
            self._backoff.pop(key, None)
        self.metrics.actions.labels(action.kind, "ok").inc()
        log.info("scaling: %s — %s (%s)", said, action.reason, action.kind)

    def _execute(self, action: Action, live: LiveSnapshot) -> str:
        if action.kind == ADD_WORKER:
            return self.actuator.add_worker(action.hardware or "cpu")
        report = live.workers.get(action.worker or "")
        if action.kind == REMOVE_WORKER:
            if report is None:
                return f"worker {action.worker} is already gone"
            return self.actuator.remove_worker(
                WorkerRef(report.worker_id, report.hardware, report.host, report.pid)
            )
        if report is None:
            raise WorkerError(f"worker {action.worker} is not in live state any more")
        variant = action.variant or ""
        if action.kind == LOAD:
            self._control(report.celery_name, "infaas_load",
                          {"variant": variant, "replicas": action.replicas or 1})  # fmt: skip
            return f"loaded {variant} on {report.worker_id}"
        if action.kind == SET_REPLICAS:
            self._control(report.celery_name, "infaas_replicas",
                          {"variant": variant, "replicas": action.replicas or 1})  # fmt: skip
            return f"{variant} on {report.worker_id}: {action.replicas} replicas"
        if action.kind == UNLOAD:
            self._control(report.celery_name, "infaas_unload", {"variant": variant})
            return f"unloaded {variant} from {report.worker_id}"
        raise WorkerError(f"unknown scaling action {action.kind!r}")

    def _control(self, destination: str, command: str, arguments: dict[str, Any]) -> None:
        replies = self.celery.control.broadcast(
            command,
            arguments=arguments,
            destination=[destination],
            reply=True,
            timeout=CONTROL_TIMEOUT_S,
        )
        if not replies:
            raise WorkerError(f"worker {destination} did not answer {command} in time")
        for reply in replies:
            for answer in reply.values():
                if not answer.get("ok", False):
                    error = answer.get("error", answer)
                    message = error.get("message", error) if isinstance(error, dict) else error
                    raise WorkerError(f"{destination} refused {command}: {message}")

    # -- running ----------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        interval = self.settings.tick_interval_s
        next_tick = time.monotonic()
        while not stop.is_set():
            try:
                self.tick()
            except InfaasError as exc:
                log.warning("scaler tick skipped: %s", exc.message)
            except Exception:  # a bug must not kill the loop; it is logged loudly
                log.exception("scaler tick failed")
            next_tick += interval
            stop.wait(max(next_tick - time.monotonic(), 0.0))
            if time.monotonic() - next_tick > 5 * interval:
                next_tick = time.monotonic()  # fell far behind: don't try to catch up

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.probe.close()
        self.actuator.close()

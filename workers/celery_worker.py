"""The worker process: a Celery worker with the variant server as a bootstep.

Celery brings the process model, remote control and the task queues (registration,
profiling and batch-job work); the bootstep starts the variant server, whose replicas
serve online queries on their own connections, and the monitor that publishes this
worker to live state. Control commands let the scaler load, unload and resize variants.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery import bootsteps
from celery.worker.control import control_command
from kombu import Connection

from queues import topology
from queues.celery_app import create_celery_app
from queues.errors import ConfigError, InfaasError
from queues.memory_rpc import memory_connection
from queues.settings import BrokerSettings
from registry.catalog import Catalog
from registry.jobs.settings import JobSettings
from registry.livestate import LiveState
from registry.pricing import PriceTable
from registry.store import ObjectStore
from registry.types import READY
from workers.loader import Loader
from workers.metrics import MetricsServer, start_metrics_server
from workers.monitor import Monitor
from workers.server import VariantServer
from workers.settings import WorkerSettings

log = logging.getLogger(__name__)
# Celery's event loop sleeps in epoll until its next timer, up to 10 s, and SIGTERM only
# sets a flag that the loop reads when it wakes: a timer this often bounds how late the
# worker notices (measured with bench/worker_stop.py: stops took 0.5-10.4 s without it).
SHUTDOWN_CHECK_S = 0.1


@dataclass
class WorkerServices:
    """What a worker talks to, built once by the caller and handed in."""

    broker: BrokerSettings
    catalog: Catalog
    store: ObjectStore
    live: LiveState
    cache_dir: Path
    prices: PriceTable  # this worker's instance and its price, for the variants it builds
    jobs: JobSettings = field(default_factory=JobSettings)  # read once, with the registry's


def make_worker_id(hardware: str) -> str:
    return f"{hardware}-{socket.gethostname()}-{os.getpid()}-{threading.get_ident() % 10_000}"


def broker_connector(broker: BrokerSettings) -> Any:
    """A factory of fresh broker connections for replicas (one each)."""
    if broker.embedded:
        return lambda: memory_connection(broker.url)
    return lambda: Connection(broker.url, heartbeat=broker.broker_heartbeat_s)


def initial_variants(settings: WorkerSettings, catalog: Catalog) -> list[str]:
    if settings.variants is not None:
        return list(settings.variants)
    return [v.id for v in catalog.list_variants(hardware=settings.hardware, status=READY)]


class VariantServerStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Starts the variant server and the monitor with the worker, stops them with it."""

    label = "infaas variant server"

    def __init__(
        self,
        worker: Any,
        infaas_services: WorkerServices | None = None,
        infaas_settings: WorkerSettings | None = None,
        infaas_worker_id: str = "",
        **kwargs: Any,
    ) -> None:
        super().__init__(worker, **kwargs)
        self.services = infaas_services
        self.settings = infaas_settings
        self.worker_id = infaas_worker_id
        self.monitor: Monitor | None = None
        self.loader: Loader | None = None

    def start(self, worker: Any) -> None:
        if self.services is None or self.settings is None:
            raise ConfigError("the infaas worker step needs infaas_services and infaas_settings")
        services, settings = self.services, self.settings
        server = VariantServer(
            worker_id=self.worker_id,
            hardware=settings.hardware,
            broker=services.broker,
            catalog=services.catalog,
            store=services.store,
            cache_dir=services.cache_dir,
            connect=broker_connector(services.broker),
            max_prefetch=settings.max_prefetch,
            batch_cap=settings.batch_cap,
            batch_wait_ms=settings.batch_wait_ms,
            freeze_heap=settings.freeze_heap,
        )
        worker.infaas_server = server
        hub = getattr(worker, "hub", None)  # None without an event loop (memory transport)
        if hub is not None:
            hub.call_repeatedly(SHUTDOWN_CHECK_S, _nothing)
        self.metrics_server = (
            start_metrics_server(server, settings.metrics_port)
            if settings.metrics_port is not None
            else None
        )
        # tasks reach the services through their app (each worker process has its own)
        worker.app.infaas_services = services
        worker.app.infaas_server = server
        for variant_id in initial_variants(settings, services.catalog):
            try:
                server.load(variant_id, settings.replicas)
            except InfaasError as exc:
                log.error("could not load %s: %s", variant_id, exc.message)
        self.monitor = Monitor(
            server,
            services.live,
            cores=settings.core_count(),
            connect=broker_connector(services.broker),
            interval_s=settings.monitor_interval_s,
            state_settings=settings.states,
            celery_name=str(getattr(worker, "hostname", "")),
            loads_on_demand=settings.load_on_demand,
        )
        self.monitor.start()
        worker.infaas_monitor = self.monitor
        if settings.load_on_demand:
            self.loader = Loader(
                worker_id=self.worker_id,
                hardware=settings.hardware,
                live=services.live,
                load=server.load,
                report_now=self.monitor.report_soon,
            )
            self.loader.start()

    def close(self, worker: Any) -> None:
        """The first thing a shutdown does (before Celery stops its own consumers): the
        replicas stop consuming, answer the batches they run and put back what they hold."""
        server: VariantServer | None = getattr(worker, "infaas_server", None)
        if server is not None:
            server.stop_consuming()

    def stop(self, worker: Any) -> None:
        if self.loader is not None:
            self.loader.stop()
            self.loader = None
        if self.monitor is not None:
            self.monitor.stop()
            self.monitor = None
        metrics_server: MetricsServer | None = getattr(self, "metrics_server", None)
        if metrics_server is not None:
            metrics_server.stop()
            self.metrics_server = None
        server: VariantServer | None = getattr(worker, "infaas_server", None)
        if server is not None:
            server.stop()

    shutdown = stop


def _nothing() -> None:
    return None


def _server_of(state: Any) -> VariantServer:
    server: VariantServer | None = getattr(state.consumer.controller, "infaas_server", None)
    if server is None:
        raise ConfigError("this worker runs no variant server")
    return server


def _answer(action: Any) -> dict[str, Any]:
    try:
        result: dict[str, Any] = action()
    except InfaasError as exc:
        return {"ok": False, "error": {"code": exc.code, "message": exc.message}}
    result["ok"] = True
    return result


@control_command(  # type: ignore[untyped-decorator]
    args=[("variant", str), ("replicas", int)], signature="<variant> [replicas=1]"
)
def infaas_load(state: Any, variant: str, replicas: int = 1) -> dict[str, Any]:
    """Load a variant (if needed) with at least ``replicas`` consumers."""

    def act() -> dict[str, Any]:
        loaded = _server_of(state).load(variant, int(replicas))
        return {"variant": variant, "replicas": len(loaded.replicas)}

    return _answer(act)


@control_command(args=[("variant", str)], signature="<variant>")  # type: ignore[untyped-decorator]
def infaas_unload(state: Any, variant: str) -> dict[str, Any]:
    return _answer(lambda: {"variant": variant, "unloaded": _server_of(state).unload(variant)})


@control_command(  # type: ignore[untyped-decorator]
    args=[("variant", str), ("replicas", int)], signature="<variant> <replicas>"
)
def infaas_replicas(state: Any, variant: str, replicas: int) -> dict[str, Any]:
    return _answer(
        lambda: {
            "variant": variant,
            "replicas": _server_of(state).set_replicas(variant, int(replicas)),
        }
    )


@control_command()  # type: ignore[untyped-decorator]
def infaas_status(state: Any) -> dict[str, Any]:
    def act() -> dict[str, Any]:
        server = _server_of(state)
        return {
            "worker": server.worker_id,
            "hardware": server.hardware,
            "variants": {k: len(v.replicas) for k, v in server.loaded().items()},
        }

    return _answer(act)


def build_worker_app(broker: BrokerSettings) -> Any:
    from workers.job_tasks import register_job_tasks
    from workers.tasks import register_tasks

    app = create_celery_app(broker)
    app.steps["worker"].add(VariantServerStep)
    register_tasks(app)
    register_job_tasks(app)
    return app


def worker_options(
    broker: BrokerSettings, settings: WorkerSettings, services: WorkerServices, worker_id: str
) -> dict[str, Any]:
    return {
        "hostname": f"{worker_id}@{socket.gethostname()}",
        "pool": "threads",
        "concurrency": settings.celery_concurrency,
        "queues": [topology.control_queue(broker.queue_prefix, settings.hardware)],
        "without_mingle": True,
        "without_gossip": True,
        "without_heartbeat": True,
        "infaas_services": services,
        "infaas_settings": settings,
        "infaas_worker_id": worker_id,
    }


def run_worker(
    broker: BrokerSettings, settings: WorkerSettings, services: WorkerServices, *, loglevel: str
) -> None:
    """Run a worker in this process until it is told to stop (SIGTERM, SIGINT)."""
    if broker.embedded:
        raise ConfigError("a worker process needs a broker (INFAAS_BROKER_URL)")
    if settings.cores:
        os.sched_setaffinity(0, settings.cores)
    worker_id = make_worker_id(settings.hardware)
    app = build_worker_app(broker)
    options = worker_options(broker, settings, services, worker_id)
    app.Worker(loglevel=loglevel, **options).start()


class EmbeddedWorker:
    """A worker on a thread of this process (the embedded default and tests)."""

    def __init__(
        self, broker: BrokerSettings, settings: WorkerSettings, services: WorkerServices
    ) -> None:
        from celery.worker import WorkController

        self.worker_id = make_worker_id(settings.hardware)
        self.app = build_worker_app(broker)
        self.app.finalize()
        options = worker_options(broker, settings, services, self.worker_id)
        options["pool"] = "solo"
        self._controller = WorkController(app=self.app, loglevel="WARNING", **options)
        self._thread = threading.Thread(
            target=self._controller.start, name="infaas-worker", daemon=True
        )

    @property
    def server(self) -> VariantServer | None:
        server: VariantServer | None = getattr(self._controller, "infaas_server", None)
        return server

    def start(self, timeout_s: float = 120.0) -> None:
        self._thread.start()
        deadline = timeout_s
        waited = 0.0
        while getattr(self._controller, "infaas_monitor", None) is None:
            if not self._thread.is_alive() or waited >= deadline:
                raise ConfigError(f"the embedded worker did not start within {timeout_s} s")
            threading.Event().wait(0.05)
            waited += 0.05

    def stop(self) -> None:
        self._controller.stop(in_sighandler=False)
        self._thread.join(30)

"""Gateway and a worker in this process: the embedded default, the demo and the tests.

The same code as the separate services; only the transports differ (the settings say
which: kombu's memory transport, SQLite, a local folder and in-process live state when
nothing is configured; RabbitMQ, PostgreSQL, S3 and Redis otherwise).
"""

from __future__ import annotations

import threading
import time

import uvicorn

from api_gateway.app import create_app
from api_gateway.serving import uvicorn_config
from api_gateway.settings import GatewaySettings
from infaas.gateway_wiring import gateway_services
from infaas.services import Services
from queues.errors import ConfigError
from workers.celery_worker import EmbeddedWorker, WorkerServices
from workers.settings import WorkerSettings


class LocalStack:
    def __init__(
        self,
        services: Services,
        *,
        gateway: GatewaySettings | None = None,
        worker: WorkerSettings | None = None,
        with_worker: bool = True,
    ) -> None:
        self.services = services
        self.gateway_settings = gateway or GatewaySettings(port=0)
        self.worker_settings = worker or WorkerSettings()
        self.worker: EmbeddedWorker | None = None
        if with_worker:
            cache = services.registry.home / "cache" / "artifacts"
            self.worker = EmbeddedWorker(
                services.broker,
                self.worker_settings,
                WorkerServices(
                    broker=services.broker,
                    catalog=services.catalog,
                    store=services.store,
                    live=services.live,
                    cache_dir=cache,
                    prices=services.prices,
                    jobs=services.registry.jobs,
                ),
            )
        self.app = create_app(self.gateway_settings, gateway_services(services))
        self._server = uvicorn.Server(
            uvicorn_config(self.app, self.gateway_settings.host, self.gateway_settings.port)
        )
        self._thread = threading.Thread(target=self._server.run, name="infaas-gateway", daemon=True)
        self.url = ""
        self.grpc_address = ""  # host:port of the Open Inference Protocol's gRPC, if served

    def start(self, timeout_s: float = 120.0) -> LocalStack:
        if self.worker is not None:
            self.worker.start(timeout_s)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError(
                    f"the gateway did not start on {self.gateway_settings.host}:"
                    f"{self.gateway_settings.port} (port in use?)"
                )
            time.sleep(0.02)
        sock = self._server.servers[0].sockets[0]
        host, port = sock.getsockname()[:2]
        self.url = f"http://{host}:{port}"
        grpc_server = self.app.state.grpc
        self.grpc_address = grpc_server.address if grpc_server is not None else ""
        self._wait_for_worker(deadline)
        return self

    def _wait_for_worker(self, deadline: float) -> None:
        if self.worker is None:
            return
        state = self.app.state.infaas
        while self.worker.worker_id not in state.live_snapshot.workers:
            if time.monotonic() > deadline:
                raise ConfigError("the worker did not appear in live state in time")
            time.sleep(0.05)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(15)
        if self.worker is not None:
            self.worker.stop()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

"""A benchmark's own copy of the system on the real local services, as separate processes:
gateway and worker(s) started with ``infaas gateway`` / ``infaas worker``, exactly as a
user would run them, on a private RabbitMQ vhost and Redis prefix, SQLite catalog and a
local object store in a temporary folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from infaas.demo import ensure_demo_app
from infaas.demo_models import DemoSet
from infaas.services import Services, open_services
from queues.settings import BrokerSettings
from registry.settings import RegistrySettings
from tests import services as isolation

REPO = Path(__file__).resolve().parent.parent
DEMO_CACHE = REPO / ".infaas" / "test-cache" / "demo-models"


@dataclass
class BenchStack:
    home: Path
    env: dict[str, str]
    services: Services
    demo: DemoSet
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    gateway_url: str = ""
    grpc_address: str = ""

    def spawn(
        self, *args: str, name: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with (self.home / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "infaas.cli", "--loglevel", "WARNING", *args],
                env={**self.env, **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(proc)
        return proc

    def start_gateway(self, *, name: str = "gateway", env: dict[str, str] | None = None) -> str:
        """A gateway (its process is the last of ``processes``); its URL."""
        port, grpc_port = isolation.free_port(), isolation.free_port()
        self.spawn(
            "gateway", "--port", str(port), "--grpc-port", str(grpc_port), name=name, env=env
        )
        self.gateway_url = f"http://127.0.0.1:{port}"
        self.grpc_address = f"127.0.0.1:{grpc_port}"
        return self.gateway_url

    def start_worker(
        self, *args: str, name: str = "worker", env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        return self.spawn("worker", *args, name=name, env=env)

    def stop_process(self, proc: subprocess.Popen[bytes]) -> None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        self.processes.remove(proc)

    def wait_ready(self, workers: int, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for proc in self.processes:
                if proc.poll() is not None:
                    raise RuntimeError(f"a process exited ({proc.args!r}); see {self.home}/*.log")
            try:
                ready = httpx.get(f"{self.gateway_url}/readyz", timeout=2).json()
                if ready.get("status") == "ready" and ready.get("workers", 0) >= workers:
                    time.sleep(1.0)
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"the stack did not become ready; see {self.home}/*.log")

    def stop(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


@contextmanager
def bench_stack(*, queue_max_length: int = 5000) -> Iterator[BenchStack]:
    with ExitStack() as stack:
        broker_url = stack.enter_context(isolation.rabbitmq_vhost())
        redis_url, prefix = stack.enter_context(isolation.redis_prefix())
        home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="infaas-bench-")))
        queue_prefix = "bench"
        broker = BrokerSettings(
            broker_url=broker_url, queue_prefix=queue_prefix, queue_max_length=queue_max_length
        )
        registry = RegistrySettings(home=home, state_url=redis_url, state_prefix=prefix)
        services = open_services(broker, registry)
        stack.callback(services.close)
        demo = ensure_demo_app(
            services, say=lambda _m: None, models_dir=DEMO_CACHE, budget_s_per_batch=0.2
        )
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("INFAAS_")},
            "INFAAS_HOME": str(home),
            "INFAAS_BROKER_URL": broker_url,
            "INFAAS_QUEUE_PREFIX": queue_prefix,
            "INFAAS_QUEUE_MAX_LENGTH": str(queue_max_length),
            "INFAAS_STATE_URL": redis_url,
            "INFAAS_STATE_PREFIX": prefix,
        }
        bench = BenchStack(home=home, env=env, services=services, demo=demo)
        stack.callback(bench.stop)
        yield bench


def chosen_variant(url: str, path: str, body: bytes) -> str:
    return str(
        httpx.post(url + path, content=body, headers={"content-type": "application/json"}).json()[
            "variant"
        ]
    )

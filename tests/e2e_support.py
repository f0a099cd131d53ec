"""Starting the whole system for end-to-end tests: embedded, or on the real services
with the gateway in the test process and workers as separate processes."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Collection, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from api_gateway.settings import GatewaySettings
from infaas.client import InfaasClient
from infaas.demo import DEMO_APP, ensure_demo_app
from infaas.demo_models import DemoSet
from infaas.embedded import LocalStack
from infaas.services import Services, open_services
from queues.settings import BrokerSettings
from registry.settings import RegistrySettings
from registry.types import READY
from tests.demo_build import (
    DEMO_CACHE,
    REPO,
    build_once,
    demo_models_key,
    ensure_demo_models,
    source_key,
)
from tests.services import unique_name
from workers.settings import WorkerSettings

__all__ = [
    "DEMO_CACHE",
    "REPO",
    "Stack",
    "embedded_stack",
    "register_demo",
    "seed_demo",
    "services_stack",
]

PROFILE_BUDGET_S = 0.05
# The demo's slowest variant takes 0.9 s a batch of 64: 20 runs of it were 20 s of setup.
PROFILE_MIN_RUNS = 5
# Left unloaded at start, so tests can query a variant that no worker serves.
UNSERVED = "digits-logreg.onnx-fp32.cpu-t2"
# Served only by the workers a test starts itself (to kill one mid-load).
DEDICATED = "digits-cnn.onnx-fp32.cpu-t1"


@dataclass
class Stack:
    kind: str
    services: Services
    demo: DemoSet
    gateway: LocalStack
    client: InfaasClient
    worker_env: dict[str, str] = field(default_factory=dict)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.gateway.url

    def served_variants(self) -> list[str]:
        ready = self.services.catalog.list_variants(app_id=DEMO_APP, status=READY)
        # nor the CNN's int8 variants: a strict query (accuracy >= 0.995) then has exactly
        # two candidates, DEDICATED and the main worker's fp32 CNN on two threads
        return [
            v.id
            for v in ready
            if v.id not in (UNSERVED, DEDICATED)
            and not (v.model == "digits-cnn" and v.precision.startswith("int8"))
        ]

    def start_worker(self, *args: str, log: Path) -> subprocess.Popen[bytes]:
        """Start ``infaas worker`` as a separate process on the stack's services."""
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "infaas.cli", "--loglevel", "INFO", "worker", *args],
                env=self.worker_env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(proc)
        return proc

    def wait_for_workers(self, count: int, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        # workers stopped or killed on purpose by earlier tests are not watched
        watched = [proc for proc in self.processes if proc.poll() is None]
        while len(self.services.live.snapshot().workers) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{count} workers did not appear in live state in time")
            for proc in watched:
                if proc.poll() is not None:
                    raise AssertionError(f"worker process exited with {proc.returncode}")
            time.sleep(0.2)
        # the gateway refreshes its snapshots every 0.5 s
        time.sleep(1.0)


def register_demo(services: Services) -> DemoSet:
    """The demo app, registered and profiled briefly (through the demo's own registration),
    with the models trained at most once per version of their code (tests/demo_build.py)."""
    ensure_demo_models()
    return ensure_demo_app(
        services,
        say=lambda _m: None,
        models_dir=DEMO_CACHE,
        budget_s_per_batch=PROFILE_BUDGET_S,
        min_runs_per_batch=PROFILE_MIN_RUNS,
    )


def demo_catalog_key() -> str:
    """What decides the demo catalog: the demo models, the code that registers and
    profiles them (any change registers again) and the machine's core count."""
    digest = hashlib.sha256(demo_models_key().encode())
    digest.update(source_key("registry", "workers", "queues", "infaas").encode())
    digest.update(f"cores {os.cpu_count()}".encode())
    return digest.hexdigest()[:16]


def demo_catalog_home() -> Path:
    """The home of the demo app registered and profiled on the embedded services, once
    per :func:`demo_catalog_key` (in the test cache; the first process to ask builds it,
    the others wait on its lock)."""

    def register(home: Path) -> None:
        home.mkdir()
        with closing(open_embedded(home)) as fresh:
            register_demo(fresh)

    return build_once("demo-catalog", demo_catalog_key(), register, "registered")


def open_embedded(home: Path) -> Services:
    """Services with nothing to install: SQLite, a local folder, the memory transport."""
    broker = BrokerSettings(broker_url=None, queue_prefix=unique_name("q")[-20:])
    return open_services(broker, RegistrySettings(home=home))


def seed_demo(source: Services, target: Services, models: Collection[str] | None = None) -> None:
    """Copy the demo app, registered and profiled in ``source``, into ``target``: the app,
    its models (all, or those named) with their files, and their variants with the
    profiles measured there. A stack seeded so starts in seconds instead of profiling
    every variant again (a minute on two cores), and every stack of a run serves the same
    profiles."""
    target.catalog.create_app(source.catalog.get_app(DEMO_APP))

    def copy(key: str) -> None:
        if key and not target.store.exists(key):
            target.store.put_bytes(key, source.store.get_bytes(key))

    for model in source.catalog.list_models(DEMO_APP):
        if models is not None and model.id not in models:
            continue
        copy(model.artifact_key)
        copy(model.validation_key)
        target.catalog.add_model(model)
        for variant in source.catalog.list_variants(model_id=model.id):
            copy(variant.artifact_key)
            target.catalog.upsert_variant(variant)


@contextmanager
def embedded_stack(home: Path, *, source: Services | None = None) -> Iterator[Stack]:
    """The embedded default; with ``source``, seeded from it instead of registering."""
    services = open_embedded(home)
    if source is None:
        demo = register_demo(services)
    else:
        seed_demo(source, services)
        demo = ensure_demo_models().demo
    variants = tuple(v.id for v in services.catalog.list_variants(status=READY) if v.id != UNSERVED)
    gateway = LocalStack(
        services, gateway=GatewaySettings(port=0), worker=WorkerSettings(variants=variants)
    ).start()
    client = InfaasClient(gateway.url, timeout_s=60)
    try:
        yield Stack("embedded", services, demo, gateway, client)
    finally:
        client.close()
        gateway.stop()
        services.close()


@contextmanager
def services_stack(
    home: Path,
    *,
    broker_url: str,
    catalog_url: str,
    state: tuple[str, str],
    store_url: str,
    queue_max_length: int = 50,
    source: Services | None = None,
) -> Iterator[Stack]:
    """The real services, the gateway in this process and one worker process; with
    ``source``, the catalog and store are seeded from it instead of registering."""
    state_url, state_prefix = state
    prefix = unique_name("q")[-20:]
    broker = BrokerSettings(
        broker_url=broker_url, queue_prefix=prefix, queue_max_length=queue_max_length
    )
    registry = RegistrySettings(
        home=home,
        catalog_url=catalog_url,
        state_url=state_url,
        state_prefix=state_prefix,
        store_url=store_url,
    )
    services = open_services(broker, registry)
    if source is None:
        demo = register_demo(services)
    else:
        seed_demo(source, services)
        demo = ensure_demo_models().demo
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("INFAAS_")},
        "INFAAS_BROKER_URL": broker_url,
        "INFAAS_QUEUE_PREFIX": prefix,
        "INFAAS_QUEUE_MAX_LENGTH": str(queue_max_length),
        "INFAAS_CATALOG_URL": catalog_url,
        "INFAAS_STATE_URL": state_url,
        "INFAAS_STATE_PREFIX": state_prefix,
        "INFAAS_STORE_URL": store_url,
        "INFAAS_HOME": str(home),
        "PYTHONUNBUFFERED": "1",
    }
    gateway = LocalStack(services, gateway=GatewaySettings(port=0), with_worker=False).start()
    client = InfaasClient(gateway.url, timeout_s=60)
    stack = Stack("services", services, demo, gateway, client, worker_env=env)
    try:
        served = ",".join(stack.served_variants())
        stack.start_worker("--variants", served, log=home / "worker-main.log")
        stack.wait_for_workers(1)
        yield stack
    finally:
        client.close()
        for proc in stack.processes:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in stack.processes:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        gateway.stop()
        services.close()

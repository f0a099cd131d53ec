"""The fault bench's stack (bench/faults.py): the system as separate processes on
services of the bench's own, which it may stop (bench/fault_services.py), one small model
registered, and the helpers that read from RabbitMQ what a process holds."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

from bench.fault_load import job_figures
from bench.fault_services import PostgresNode, RabbitNode, RedisNode, S3Node, remove_tree
from bench.worker_stop import register_model
from infaas.demo import DEMO_APP
from infaas.demo_models import DemoSet
from infaas.services import Services, open_services
from queues import topology
from queues.settings import BrokerSettings
from registry.jobs import JobStore
from registry.jobs.objects import store_for
from registry.settings import RegistrySettings
from registry.types import READY
from tests import netns
from tests.services import free_port
from workers.artifacts import fetch_artifact
from workers.runtimes.base import RuntimeSpec, load_runtime

MODEL = "digits-logreg"
PREFIX = "faults"
MIN_ACCURACY = 0.9
DEADLINE_MS = 2_000
CHUNK_ITEMS = 500


# ------------------------------------------------------------------------ the stack


@dataclass
class FaultStack:
    home: Path
    rabbit: RabbitNode
    redis: RedisNode
    postgres: PostgresNode
    s3: S3Node
    env: dict[str, str]
    services: Services
    demo: DemoSet
    variants: list[str]
    bucket: str
    gateway_port: int
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    partition_host: netns.Host | None = None

    @property
    def data_bucket(self) -> str:
        """Where the job reads and writes: a bucket of its own, since no job may use the
        system's (registry/jobs/buckets.py)."""
        return f"{self.bucket}-data"

    def env_via(self, address: str) -> dict[str, str]:
        """The services' URLs as a process behind a forwarder on ``address`` reaches them."""
        keys = ("INFAAS_BROKER_URL", "INFAAS_CATALOG_URL", "INFAAS_STATE_URL", "INFAAS_STORE_URL")
        return {k: self.env[k].replace("127.0.0.1", address) for k in keys}

    def service_ports(self) -> list[int]:
        return [self.rabbit.port, self.redis.port, self.postgres.port, self.s3.port]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    def spawn(
        self,
        name: str,
        *args: str,
        env: dict[str, str] | None = None,
        wrap: list[str] | None = None,
    ) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "infaas.cli", "--loglevel", "INFO", *args]
        with (self.home / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                [*(wrap or []), *argv],
                env={**self.env, **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs[name] = proc
        return proc

    def start_gateway(self) -> None:
        self.spawn("gateway", "gateway", "--port", str(self.gateway_port))

    def start_worker(self, name: str, **kwargs: Any) -> subprocess.Popen[bytes]:
        return self.spawn(name, "worker", "--variants", ",".join(self.variants), **kwargs)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(name)
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def stop_all(self) -> None:
        """Everything the bench started, and any worker the scaler started."""
        started = [psutil.Process(p.pid) for p in self.procs.values() if p.poll() is None]
        children = [c for p in started for c in p.children(recursive=True)]
        for name in list(self.procs):
            self.kill(name, signal.SIGTERM)
        _gone, alive = psutil.wait_procs(children, timeout=20)
        for proc in alive:
            proc.kill()

    def ready(self) -> tuple[bool, int]:
        try:
            doc = httpx.get(f"{self.url}/readyz", timeout=2).json()
        except (httpx.HTTPError, ValueError):
            return False, 0
        return doc.get("status") == "ready", int(doc.get("workers", 0))

    def wait_ready(self, workers: int = 2, timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    # the home is removed on the way out: say why here
                    log = self.home / f"{name}.log"
                    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                    raise RuntimeError(f"{name} exited ({proc.returncode}); its log ends:\n{tail}")
            ok, seen = self.ready()
            if ok and seen >= workers:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"not ready with {workers} workers; see {self.home}/*.log")
            time.sleep(0.3)

    def broker_ports(self, name: str) -> set[int]:
        """The local ports of a process's (and its children's) broker connections."""
        root = psutil.Process(self.procs[name].pid)
        ports: set[int] = set()
        for proc in [root, *root.children(recursive=True)]:
            for conn in proc.net_connections(kind="tcp"):
                if conn.raddr and conn.raddr.port == self.rabbit.port:
                    ports.add(conn.laddr.port)
        return ports

    def held(self, name: str, queue: Callable[[str], bool]) -> int:
        """Messages of the queues ``queue`` accepts that process ``name`` holds unacked."""
        channels = {
            row[1]
            for row in self.rabbit.ctl(
                "list_consumers", "--no-table-headers", "queue_name", "channel_pid"
            )
            if queue(row[0])
        }
        ports = self.broker_ports(name)
        rows = self.rabbit.ctl(
            "list_channels", "--no-table-headers", "pid", "name", "messages_unacknowledged"
        )
        # a channel's name is "<client ip>:<client port> -> <broker ip>:<port> (<number>)"
        return sum(
            int(unacked)
            for pid, channel, unacked in rows
            if pid in channels and int(channel.split(" ")[0].rsplit(":", 1)[1]) in ports
        )


def variant_queue_held(stack: FaultStack, name: str) -> int:
    """Online queries process ``name`` holds unacknowledged."""
    return stack.held(name, lambda queue: topology.parse_variant_queue(PREFIX, queue) is not None)


def batch_queue_held(stack: FaultStack, name: str) -> int:
    """Job chunks process ``name`` holds unacknowledged."""
    return stack.held(name, lambda queue: queue == topology.batch_queue(PREFIX, DEMO_APP))


def references(services: Services, demo: DemoSet, inputs: np.ndarray) -> dict[str, np.ndarray]:
    """Each ready variant's own label for every validation row, computed here: an answer
    is correct when it is the label its variant gives that row."""
    found: dict[str, np.ndarray] = {}
    model = next(m for m in demo.models if m.id == MODEL)
    for variant in services.catalog.list_variants(model_id=MODEL, status=READY):
        spec = RuntimeSpec.of_variant(variant, demo.input_name, model.output_name)
        path = fetch_artifact(services.store, services.registry.home / "refs", variant)
        runtime = load_runtime(spec, path)
        found[variant.id] = np.asarray(runtime.predict(inputs)).argmax(axis=1)
        runtime.close()
    return found


@contextmanager
def fault_stack(*, queue_max_length: int = 5000) -> Iterator[FaultStack]:
    with ExitStack() as cleanup:
        home = Path(tempfile.mkdtemp(prefix="infaas-faults-"))
        os.chmod(home, 0o755)  # the rabbitmq and postgres users work in folders under it
        cleanup.callback(remove_tree, home)
        rabbit, redis = RabbitNode(home / "rabbit"), RedisNode(home / "redis")
        postgres, s3 = PostgresNode(home / "postgres"), S3Node()
        for service in (rabbit, redis, postgres, s3):
            cleanup.callback(service.stop)
            service.start()
        bucket = f"infaas-{uuid.uuid4().hex[:8]}"
        broker = BrokerSettings(
            broker_url=rabbit.url, queue_prefix=PREFIX, queue_max_length=queue_max_length
        )
        registry = RegistrySettings(
            home=home / "bench",
            catalog_url=postgres.url,
            state_url=redis.url,
            state_prefix=PREFIX,
            store_url=s3.url(bucket),
        )
        services = open_services(broker, registry)
        cleanup.callback(services.close)
        demo = register_model(services, MODEL, budget_s_per_batch=0.05)
        variants = sorted(v.id for v in services.catalog.list_variants(status=READY))
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("INFAAS_")},
            "INFAAS_HOME": str(home / "procs"),
            "INFAAS_BROKER_URL": rabbit.url,
            "INFAAS_QUEUE_PREFIX": PREFIX,
            "INFAAS_QUEUE_MAX_LENGTH": str(queue_max_length),
            "INFAAS_CATALOG_URL": postgres.url,
            "INFAAS_STATE_URL": redis.url,
            "INFAAS_STATE_PREFIX": PREFIX,
            "INFAAS_GRPC_PORT": "0",  # any free port: --port + 1 may be another's socket
            "INFAAS_STORE_URL": s3.url(bucket),
            # the bench starts the two workers itself and restarts a killed one; the scaler
            # places replicas on them and adds none (nor stops an idle one between faults)
            "INFAAS_SCALER_MIN_CPU_WORKERS": "1",
            "INFAAS_SCALER_MAX_CPU_WORKERS": "2",
            "INFAAS_SCALER_WORKER_IDLE_S": "86400",
            "INFAAS_LOCAL_LOG_DIR": str(home),
            "PYTHONUNBUFFERED": "1",
        }
        stack = FaultStack(
            home,
            rabbit,
            redis,
            postgres,
            s3,
            env,
            services,
            demo,
            variants,
            bucket,
            gateway_port=free_port(),
        )
        cleanup.callback(stack.stop_all)
        stack.start_gateway()
        stack.start_worker("worker-a")
        stack.start_worker("worker-b")
        stack.wait_ready(2)
        # after the workers: seeing none, it would start one of its own
        stack.spawn("scaler", "scaler", "--actuator", "local")
        yield stack


# --------------------------------------------------------------------------- the job


def upload_job_input(stack: FaultStack, inputs: np.ndarray, items: int) -> str:
    rows = np.resize(inputs, (items, inputs.shape[1])).astype(np.float32)
    buffer = io.BytesIO()
    np.savez(buffer, inputs=rows)
    data = stack.services.store.bucket(stack.data_bucket)
    data.put_bytes("job-in/part-000.npz", buffer.getvalue())
    return f"s3://{stack.data_bucket}/job-in"


def submit_job(stack: FaultStack, source: str) -> str:
    body = {
        "app": DEMO_APP,
        "input": source,
        "output": f"s3://{stack.data_bucket}/job-out",
        "min_accuracy": MIN_ACCURACY,
        "chunk_items": CHUNK_ITEMS,
    }
    answer = httpx.post(f"{stack.url}/v1/jobs", json=body, timeout=120)
    if answer.status_code != 202:
        raise RuntimeError(f"the job was refused: {answer.status_code} {answer.text}")
    return str(answer.json()["job_id"])


def wait_job(stack: FaultStack, job_id: str, timeout_s: float) -> dict[str, Any]:
    jobs = JobStore(stack.services.catalog)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            job, chunks = jobs.get_with_chunks(job_id)
        except Exception:  # the catalog may be coming back
            job, chunks = None, []
        if job is not None and job.status in ("succeeded", "failed", "cancelled"):
            break
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)

    def output_exists(chunk: Any) -> bool:
        if job is None:
            return False
        try:
            return store_for(stack.services.store, job.output).exists(chunk.output_key)
        except Exception:  # the store may be coming back: counted missing
            return False

    figures = job_figures(chunks, output_exists)
    return {"job_status": job.status if job else "unknown", **figures}

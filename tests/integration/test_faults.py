"""Faults survived, on the real services: a worker killed while it holds unacknowledged
queries, the broker dropping every connection, the live-state Redis stopped and started
again, a gateway killed during a batch job, and a registration its gateway recorded but
never sent.

One stack of its own for the module (its own vhost, database, Redis server, gateway in
this process and a worker process), so what these tests break never reaches the shared
stacks of the other tests.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlalchemy import select, update

from bench.fault_inject import record_unsent_registration
from infaas.client import InfaasClient
from infaas.demo import DEMO_APP
from infaas.demo_models import load_validation
from infaas.services import Services
from queues import topology
from registry.jobs import JobStore
from registry.jobs.status import CHUNK_DONE, JOB_SUCCEEDED
from registry.livestate import now_ms
from registry.registrations import (
    RegistrationResendRow,
    RegistrationRow,
    RegistrationStore,
)
from registry.types import READY, utcnow
from tests import services
from tests.e2e_support import DEDICATED, Stack, services_stack
from tests.services import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.timeout(900),  # the first stack test of a run waits for the demo's profiling
    pytest.mark.xdist_group("stacks"),
]

DEADLINE_MS = 5_000
SLOW_FLOOR = 0.99  # only the CNN variants reach it: a job of them runs long enough to kill
FIRST_ANSWERS = 20  # answers after a fault that show the system serves again


# ------------------------------------------------------------------------- helpers


def _rabbitmqctl(*args: str) -> list[list[str]]:
    exe = shutil.which("rabbitmqctl")
    assert exe is not None, "rabbitmqctl is needed by the fault tests"
    done = subprocess.run(
        [exe, "-q", *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return [line.split("\t") for line in done.stdout.splitlines() if line.strip()]


def _vhost(stack: Stack) -> str:
    return stack.services.broker.url.rsplit("/", 1)[1]


def _unacked(stack: Stack, queue: str) -> int:
    rows = _rabbitmqctl(
        "list_queues", "--no-table-headers", "-p", _vhost(stack), "name", "messages_unacknowledged"
    )
    return sum(int(row[1]) for row in rows if row[0] == queue)


def _close_connections(stack: Stack) -> int:
    """The broker closes every connection of the stack's vhost; returns how many."""
    vhost = _vhost(stack)
    count = len(_rabbitmqctl("list_connections", "--no-table-headers", "-p", vhost, "pid"))
    _rabbitmqctl("close_all_connections", "-p", vhost, "fault test: connection dropped")
    return count


@dataclass(frozen=True)
class Answer:
    sent: float  # time.monotonic()
    elapsed_s: float
    status: int
    code: str  # the error code; "" for an answer
    label: int
    truth: int


@dataclass
class Load:
    """Queries sent back to back by a few threads until stopped; every answer is kept."""

    url: str
    path: str
    inputs: np.ndarray
    labels: np.ndarray
    timeout_ms: int = DEADLINE_MS
    threads: int = 4
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Load:
        for n in range(self.threads):
            thread = threading.Thread(target=self._run, args=(n,), daemon=True)
            thread.start()
            self._workers.append(thread)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._workers:
            thread.join(self.timeout_ms / 1000 + 60)

    def _run(self, n: int) -> None:
        i = n
        with httpx.Client(base_url=self.url, timeout=self.timeout_ms / 1000 + 30) as client:
            while not self._stop.is_set():
                row = i % len(self.inputs)
                i += self.threads
                body = {
                    "inputs": self.inputs[row : row + 1].tolist(),
                    "timeout_ms": self.timeout_ms,
                }
                sent = time.monotonic()
                try:
                    response = client.post(self.path, json=body)
                    status = response.status_code
                    doc = response.json()
                except httpx.HTTPError as exc:  # no HTTP answer at all: kept as status 0
                    status, doc = 0, {"error": {"code": type(exc).__name__}}
                elapsed = time.monotonic() - sent
                code = doc.get("error", {}).get("code", "") if status != 200 else ""
                label = int(doc["labels"][0]) if status == 200 else -1
                with self._lock:
                    self.answers.append(
                        Answer(sent, elapsed, status, code, label, int(self.labels[row]))
                    )

    def good_since(self, moment: float) -> int:
        with self._lock:
            return sum(a.status == 200 for a in self.answers if a.sent > moment)

    def first_good_after(self, moment: float) -> float:
        with self._lock:
            return min(a.sent for a in self.answers if a.sent > moment and a.status == 200)

    def wait_for_good(
        self, moment: float, count: int = FIRST_ANSWERS, timeout_s: float = 90
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while self.good_since(moment) < count:
            assert time.monotonic() < deadline, (
                f"no {count} answers in {timeout_s} s: {self.summary()}"
            )
            time.sleep(0.1)

    def summary(self) -> dict[tuple[int, str], int]:
        counts: dict[tuple[int, str], int] = {}
        with self._lock:
            for a in self.answers:
                counts[(a.status, a.code)] = counts.get((a.status, a.code), 0) + 1
        return counts

    def accuracy(self) -> float:
        good = [a for a in self.answers if a.status == 200]
        return sum(a.label == a.truth for a in good) / max(len(good), 1)


@dataclass
class RedisServer:
    """A Redis of the test's own, to stop and start again (never the shared one)."""

    port: int
    home: Path

    def start(self) -> None:
        subprocess.run(
            [
                "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--daemonize", "yes",
                "--dir", str(self.home), "--logfile", str(self.home / "redis.log"),
            ],
            check=True,
            timeout=30,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while (
            subprocess.run(
                ["redis-cli", "-p", str(self.port), "ping"],
                capture_output=True,
                timeout=30,
                check=False,
            ).stdout.strip()
            != b"PONG"
        ):
            assert time.monotonic() < deadline, "the test's Redis did not start"
            time.sleep(0.1)

    def stop(self) -> None:
        subprocess.run(
            ["redis-cli", "-p", str(self.port), "shutdown", "nosave"],
            capture_output=True,
            timeout=30,
            check=False,
        )


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), tmp_path_factory.mktemp("fault-redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def fault_stack(
    tmp_path_factory: pytest.TempPathFactory,
    redis_server: RedisServer,
    s3_store_url_session: str,
    demo_catalog: Services,
) -> Iterator[Stack]:
    with (
        services.rabbitmq_vhost() as broker_url,
        services.postgres_database() as catalog_url,
        services_stack(
            tmp_path_factory.mktemp("faults"),
            broker_url=broker_url,
            catalog_url=catalog_url,
            state=(f"redis://127.0.0.1:{redis_server.port}/0", "faults"),
            store_url=s3_store_url_session,
            queue_max_length=500,
            source=demo_catalog,
        ) as stack,
    ):
        yield stack


def _validation(stack: Stack) -> tuple[np.ndarray, np.ndarray]:
    inputs, labels = load_validation(stack.demo.validation_path)
    return inputs.astype(np.float32), labels


def _variant_load(
    stack: Stack, variant: str, *, threads: int = 4, timeout_ms: int = DEADLINE_MS
) -> Load:
    inputs, labels = _validation(stack)
    path = f"/v1/variants/{variant}/infer"
    return Load(stack.url, path, inputs, labels, timeout_ms=timeout_ms, threads=threads)


# ----------------------------------------------------------------- a worker killed


def test_a_worker_killed_holding_unacknowledged_queries_loses_none(
    fault_stack: Stack, tmp_path: Path
) -> None:
    """Only the victim serves DEDICATED; it is killed once RabbitMQ shows it holds
    queries it has not acknowledged, and the replacement answers them all."""
    stack = fault_stack
    queue = topology.variant_queue(stack.services.broker.queue_prefix, DEMO_APP, DEDICATED)
    before = len(stack.services.live.snapshot().workers)
    victim = stack.start_worker("--variants", DEDICATED, log=tmp_path / "victim.log")
    stack.wait_for_workers(before + 1)
    replacement = None
    try:
        with _variant_load(stack, DEDICATED, threads=8, timeout_ms=60_000) as load:
            load.wait_for_good(0.0)
            deadline = time.monotonic() + 90
            while (held := _unacked(stack, queue)) == 0:
                assert time.monotonic() < deadline, "the victim never held a query"
            os.killpg(victim.pid, signal.SIGKILL)
            killed = time.monotonic()
            victim.wait(10)
            replacement = stack.start_worker("--variants", DEDICATED, log=tmp_path / "repl.log")
            load.wait_for_good(killed, timeout_s=120)
        assert held > 0
        summary = load.summary()
        assert set(summary) == {(200, "")}, summary
        assert load.accuracy() > 0.9
        waited = [a for a in load.answers if a.sent < killed < a.sent + a.elapsed_s]
        assert waited, "no query was in flight when the victim died"
        print(  # the figures the report quotes
            f"\nkilled holding {held} unacked; {len(load.answers)} queries, none lost; "
            f"{len(waited)} in flight across the kill, "
            f"the longest {max(a.elapsed_s for a in waited):.1f} s"
        )
    finally:
        if replacement is not None:
            os.killpg(replacement.pid, signal.SIGTERM)
            replacement.wait(30)


# ------------------------------------------------------------- the broker drops us


def test_a_broker_connection_drop_is_survived(fault_stack: Stack) -> None:
    """Every connection of the stack's vhost is closed by the broker under load: each
    query gets its answer or a clear error by its deadline (none waits it out: those in
    flight are sent again on the gateway's next connection), and answers resume."""
    stack = fault_stack
    variant = stack.served_variants()[0]
    with _variant_load(stack, variant) as load:
        load.wait_for_good(0.0)
        dropped_at = time.monotonic()
        dropped_ms = now_ms()
        closed = _close_connections(stack)
        load.wait_for_good(dropped_at + 1.0, timeout_s=120)
    # the worker still reports itself (its monitor once died with the connection)
    _wait_for_heartbeat_after(stack, dropped_ms + 3_000)
    assert closed >= 3  # the gateway's query client, the worker's replica and its Celery
    late = [a for a in load.answers if a.elapsed_s > DEADLINE_MS / 1000 + 1.0]
    assert not late, late[:5]
    codes = {(a.status, a.code) for a in load.answers if a.status != 200}
    assert codes <= {(503, "broker_unavailable"), (503, "no_worker")}, codes
    recovered = load.first_good_after(dropped_at + 1.0) - dropped_at
    print(f"\nclosed {closed} connections; {load.summary()}; answers again {recovered:.1f} s after")


DROPS = 7  # enough for a back-off that grew from drop to drop to outlast DROP_TIMEOUT_MS
DROP_TIMEOUT_MS = 3_000


def test_broker_connection_drops_in_a_row_make_no_query_wait_out_its_deadline(
    fault_stack: Stack,
) -> None:
    """The broker closes every connection of the stack's vhost again and again, each
    time once answers have resumed. A drop costs no query its deadline: the gateway
    sends those in flight again on its next connection, and the worker's replica
    subscribes again at once each time (its reconnect back-off once grew from drop to
    drop, leaving the queue with no consumer for up to 5 s while queries expired in it).
    Each query gets its answer or a clear 503."""
    stack = fault_stack
    variant = stack.served_variants()[0]
    drops: list[float] = []
    with _variant_load(stack, variant, timeout_ms=DROP_TIMEOUT_MS) as load:
        load.wait_for_good(0.0)
        for _ in range(DROPS):
            drops.append(time.monotonic())
            assert _close_connections(stack) >= 3
            load.wait_for_good(drops[-1] + 0.5, count=10, timeout_s=120)
    summary = load.summary()
    expired = [a for a in load.answers if a.code == "deadline_exceeded"]
    assert not expired, (summary, [round(a.sent - drops[0], 2) for a in expired[:10]])
    late = [a for a in load.answers if a.elapsed_s > DROP_TIMEOUT_MS / 1000 + 1.0]
    assert not late, late[:5]
    codes = {(a.status, a.code) for a in load.answers if a.status != 200}
    assert codes <= {(503, "broker_unavailable"), (503, "no_worker")}, summary
    assert load.accuracy() > 0.9
    gaps = [load.first_good_after(d) - d for d in drops]
    print(f"\n{DROPS} drops; {summary}; answers again after {[round(g, 1) for g in gaps]} s")


def _wait_for_heartbeat_after(stack: Stack, moment_ms: float, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not any(
        w.heartbeat_ms > moment_ms for w in stack.services.live.snapshot().workers.values()
    ):
        assert time.monotonic() < deadline, "no worker reported itself to live state again"
        time.sleep(0.2)


# --------------------------------------------------------------- live state lost


def _ready(stack: Stack) -> tuple[int, dict[str, object]]:
    response = httpx.get(f"{stack.url}/readyz", timeout=30)
    doc: dict[str, object] = response.json()
    return response.status_code, doc


# One retry: a fresh clone's .ci/run once saw a 503 broker_unavailable during the Redis
# outage with the other xdist worker busy (a cause outside live state, not reproduced
# alone). A real regression fails both tries.
@pytest.mark.flaky(reruns=1)
def test_live_state_lost_and_back_is_survived(
    fault_stack: Stack, redis_server: RedisServer
) -> None:
    """Redis stops under load: queries go on from the last snapshot, readiness says the
    live state is unavailable; Redis comes back empty and the workers fill it again."""
    stack = fault_stack
    variant = stack.served_variants()[0]
    with _variant_load(stack, variant) as load:
        load.wait_for_good(0.0)
        redis_server.stop()
        stopped = time.monotonic()
        try:
            deadline = time.monotonic() + 30
            while (ready := _ready(stack))[0] != 503:
                assert time.monotonic() < deadline, "readiness never noticed Redis was gone"
                time.sleep(0.2)
            assert "live state" in str(ready[1]["problems"]), ready
            load.wait_for_good(stopped + 1.0)  # served while Redis is down
            down_answers = load.good_since(stopped)
        finally:
            # from the moment it is asked to start, Redis may be back (empty): an answer
            # after that may be no_worker, one before it may not
            started = time.monotonic()
            redis_server.start()
        deadline = time.monotonic() + 60
        while (ready := _ready(stack))[0] != 200 or not ready[1]["workers"]:
            assert time.monotonic() < deadline, f"never ready again: {ready}"
            time.sleep(0.2)
        back = time.monotonic()
        load.wait_for_good(back)
    down = [a for a in load.answers if a.sent + a.elapsed_s < started]
    assert {(a.status, a.code) for a in down} == {(200, "")}
    # Redis comes back empty: until the workers report again (their next heartbeat, 1 s)
    # the gateway sees none, and says so clearly
    window = [a for a in load.answers if a.sent + a.elapsed_s >= started and a.sent <= back]
    assert {(a.status, a.code) for a in window} <= {(200, ""), (503, "no_worker")}
    after = [a for a in load.answers if a.sent > back]
    assert {(a.status, a.code) for a in after} == {(200, "")}
    refused = sum(a.status != 200 for a in window)
    print(
        f"\n{down_answers} answers while Redis was down; workers seen again "
        f"{back - started:.1f} s after it came back, {refused} no_worker answers meanwhile"
    )


# ------------------------------------------------------ a gateway killed mid-job


def _spawn_gateway(stack: Stack, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "infaas.cli", "gateway", "--port", str(port)],
            # gRPC on any free port: --port + 1, its default, may be a client's by now
            env={**stack.worker_env, "INFAAS_GRPC_PORT": "0"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stack.processes.append(proc)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        assert proc.poll() is None, f"the gateway exited; see {log}"
        assert time.monotonic() < deadline, f"the gateway never became ready; see {log}"
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)


def test_a_gateway_killed_mid_job_loses_nothing(fault_stack: Stack, tmp_path: Path) -> None:
    stack = fault_stack
    inputs, _ = _validation(stack)
    rows = np.resize(inputs, (600, inputs.shape[1]))
    bucket = f"faults-{uuid.uuid4().hex[:8]}"
    store = stack.services.store.bucket(bucket)
    with np.errstate(all="ignore"):
        import io

        buffer = io.BytesIO()
        np.savez(buffer, inputs=rows)
    store.put_bytes("in/part-000.npz", buffer.getvalue())
    first, first_url = _spawn_gateway(stack, tmp_path / "gateway-1.log")
    body = {
        "app": DEMO_APP,
        "input": f"s3://{bucket}/in",
        "output": f"s3://{bucket}/out",
        "min_accuracy": SLOW_FLOOR,
        "chunk_items": 40,
    }
    answer = httpx.post(f"{first_url}/v1/jobs", json=body, timeout=120)
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["job_id"]
    jobs = JobStore(stack.services.catalog)
    deadline = time.monotonic() + 90
    while sum(c.status == CHUNK_DONE for c in jobs.get_with_chunks(job_id)[1]) < 2:
        assert time.monotonic() < deadline, "the job made no progress"
        time.sleep(0.02)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(10)
    killed_at = jobs.get_with_chunks(job_id)[1]
    done_at_kill = sum(c.status == CHUNK_DONE for c in killed_at)
    assert done_at_kill < len(killed_at), "the job finished before its gateway was killed"
    _second, second_url = _spawn_gateway(stack, tmp_path / "gateway-2.log")
    client = InfaasClient(second_url, timeout_s=60)
    try:
        status = client.wait_for_job(job_id, timeout_s=180, poll_s=0.2)
    finally:
        client.close()
    assert status["status"] == JOB_SUCCEEDED, status["errors"]
    assert status["progress"]["items_done"] == 600
    chunks = jobs.get_with_chunks(job_id)[1]
    assert [c.output_writes for c in chunks] == [1] * len(chunks)
    assert len(store.list("out/")) == len(chunks) + 1  # each chunk once, and the manifest
    print(f"\ngateway killed with {done_at_kill}/{len(chunks)} chunks done")


# ------------------------------------------------- a registration never sent


def test_a_registration_its_gateway_never_sent_is_sent_by_the_sweeper(fault_stack: Stack) -> None:
    """Recorded exactly as the gateway records an upload, then the gateway 'died' before
    sending its task: nothing is in the control queue, the model stays queued. The
    gateway's sweeper (its refresh loop) sends it again and a worker completes it."""
    stack = fault_stack
    catalog = stack.services.catalog
    model_id = f"faults-logreg-{uuid.uuid4().hex[:8]}"
    registration_id = record_unsent_registration(catalog, "digits-logreg", model_id)
    # nothing was sent (checked before it looks old: from then on the sweeper, every
    # 5 s, may send it at any moment)
    control = topology.control_queue(stack.services.broker.queue_prefix, "cpu")
    rows = _rabbitmqctl(
        "list_queues", "--no-table-headers", "-p", _vhost(stack), "name", "messages"
    )
    assert [r for r in rows if r[0] == control] in ([], [[control, "0"]])
    # ... and its gateway died right here, a minute ago
    with catalog.write_session(bump=False) as session:
        session.execute(
            update(RegistrationRow)
            .where(RegistrationRow.id == registration_id)
            .values(created_at=utcnow() - timedelta(minutes=1))
        )
    registrations = RegistrationStore(catalog)
    deadline = time.monotonic() + 240
    while not (found := registrations.get(registration_id)).finished:
        assert time.monotonic() < deadline, f"never finished: {found.to_dict()}"
        time.sleep(0.5)
    assert found.status == READY, found.to_dict()
    task = found.task("cpu")
    assert task is not None
    assert task.attempts == 1
    assert catalog.get_model(model_id).status == READY
    assert catalog.list_variants(model_id=model_id, status=READY)
    with catalog.read_session() as session:
        resent = session.scalars(
            select(RegistrationResendRow.sends).where(
                RegistrationResendRow.registration_id == registration_id
            )
        ).all()
    assert list(resent) == [1]

"""What only the real services show: a worker killed mid-load, a full queue, queries
that expire in their queue, a broker that cannot be reached, and the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from kombu import Connection, Producer
from kombu import Queue as KombuQueue

from api_gateway.settings import GatewaySettings
from infaas.demo import DEMO_APP
from infaas.demo_models import load_validation
from infaas.embedded import LocalStack
from infaas.services import Services
from queues import topology
from queues.settings import BrokerSettings
from registry.livestate import VariantLoad, WorkerReport, now_ms
from tests.e2e_support import DEDICATED, UNSERVED, Stack
from tests.services import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _fire(url: str, path: str, bodies: list[dict[str, object]]) -> list[httpx.Response]:
    with httpx.Client(base_url=url, timeout=60) as client, ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(lambda body: client.post(path, json=body), bodies))


def test_worker_killed_mid_load_loses_no_query(services_e2e: Stack, tmp_path: Path) -> None:
    stack = services_e2e
    inputs, labels = load_validation(stack.demo.validation_path)
    workers_before = len(stack.services.live.snapshot().workers)
    victim = stack.start_worker("--variants", DEDICATED, log=tmp_path / "victim.log")
    stack.wait_for_workers(workers_before + 1)
    bodies: list[dict[str, object]] = [
        {"inputs": inputs[i : i + 1].tolist(), "timeout_ms": 30_000} for i in range(24)
    ]
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(_fire, stack.url, f"/v1/variants/{DEDICATED}/infer", bodies)
        time.sleep(0.08)  # the victim is now working through the queue, holding messages
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(10)
        replacement = stack.start_worker("--variants", DEDICATED, log=tmp_path / "repl.log")
        responses = pending.result(timeout=90)
    try:
        assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
        answers = [r.json() for r in responses]
        predicted = np.array([a["labels"][0] for a in answers])
        assert (predicted == labels[:24]).mean() > 0.9
    finally:
        os.killpg(replacement.pid, signal.SIGTERM)
        replacement.wait(30)


def _stalled_worker(stack: Stack, variant_id: str) -> WorkerReport:
    """A worker that announces a variant but never consumes (a stalled process)."""
    return WorkerReport(
        worker_id="stalled-test-worker",
        hardware="cpu",
        host="nowhere",
        pid=0,
        cores=1,
        variants={variant_id: VariantLoad(variant=variant_id, app=DEMO_APP)},
        heartbeat_ms=now_ms(),
    )


def test_full_queue_is_a_429_and_expired_queries_are_answered(services_e2e: Stack) -> None:
    """Two steps, so neither depends on how fast a busy machine publishes: the queue is
    filled to its length by messages nobody waits for and the extra queries are refused;
    then, emptied, it takes exactly its length of queries that all expire in it and are
    answered."""
    stack = services_e2e
    broker = stack.services.broker
    queue = topology.variant_queue(broker.queue_prefix, DEMO_APP, UNSERVED)
    with Connection(broker.url) as conn:
        channel = conn.default_channel
        KombuQueue(
            queue,
            routing_key=queue,
            durable=True,
            queue_arguments=topology.variant_queue_arguments(
                broker.queue_prefix, broker.queue_max_length
            ),
        )(channel).declare()
        stack.services.live.put_worker(_stalled_worker(stack, UNSERVED))
        try:
            time.sleep(1.0)  # the gateway sees the stalled worker
            # full: the queue's length in messages that never expire, then the extra queries
            producer = Producer(channel)
            for i in range(broker.queue_max_length):
                producer.publish({"filler": i}, routing_key=queue)
            _wait_for_depth(channel, queue, broker.queue_max_length)
            extra = 6
            refused = _fire(
                stack.url,
                f"/v1/variants/{UNSERVED}/infer",
                [{"inputs": [[0.0] * 64], "timeout_ms": 60_000} for _ in range(extra)],
            )
            channel.queue_purge(queue)
            # expiring: exactly the queue's length of queries, none refused, all expire
            bodies: list[dict[str, object]] = [
                {"inputs": [[0.0] * 64], "timeout_ms": 2_000}
                for _ in range(broker.queue_max_length)
            ]
            responses = _fire(stack.url, f"/v1/variants/{UNSERVED}/infer", bodies)
        finally:
            stack.services.live.remove_worker("stalled-test-worker")
            channel.queue_delete(queue)
    assert [r.status_code for r in refused] == [429] * extra, [r.text for r in refused]
    for full in refused:
        assert full.json()["error"]["code"] == "queue_full"
        assert full.headers["Retry-After"] == "1"
    codes = sorted(r.status_code for r in responses)
    assert codes.count(504) == broker.queue_max_length, codes
    late = [r.json()["error"] for r in responses if r.status_code == 504]
    assert {e["code"] for e in late} == {"deadline_exceeded"}
    assert any("expired in its queue" in e["message"] for e in late)
    metrics = httpx.get(f"{stack.url}/metrics").text
    expired = [line for line in metrics.splitlines() if line.startswith("infaas_expired_in_queue")]
    assert float(expired[0].split()[-1]) >= 1
    published = {
        line.split()[0]: float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith(("infaas_query_messages_published", "infaas_queries_published"))
    }
    assert published["infaas_queries_published"] >= broker.queue_max_length
    assert (
        1 <= published["infaas_query_messages_published"] <= published["infaas_queries_published"]
    )


def _wait_for_depth(channel: Any, queue: str, depth: int, timeout_s: float = 30.0) -> None:
    """Until ``depth`` messages wait in ``queue`` (a passive declare counts them; the
    broker enqueues what was published a moment later)."""
    deadline = time.monotonic() + timeout_s
    while (seen := int(channel.queue_declare(queue=queue, passive=True).message_count)) < depth:
        if time.monotonic() > deadline:
            raise AssertionError(f"{seen} of {depth} messages reached {queue} in {timeout_s} s")
        time.sleep(0.1)
    assert seen == depth


def test_unreachable_broker_is_a_503(services_e2e: Stack) -> None:
    services = services_e2e.services
    dead = BrokerSettings(broker_url=f"amqp://guest:guest@127.0.0.1:{free_port()}/")
    orphan = Services(
        dead, services.registry, services.catalog, services.store, services.live, services.prices
    )
    with LocalStack(orphan, gateway=GatewaySettings(port=0), with_worker=False) as gateway:
        variant = services_e2e.served_variants()[0]
        response = httpx.post(
            f"{gateway.url}/v1/variants/{variant}/infer", json={"inputs": [[0.0] * 64]}
        )
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "broker_unavailable"
        ready = httpx.get(f"{gateway.url}/readyz")
        assert ready.status_code == 503
        assert "broker" in ready.json()["problems"][0]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("INFAAS_")}
    return subprocess.run(
        [sys.executable, "-m", "infaas.cli", *args],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_query(services_e2e: Stack, tmp_path: Path) -> None:
    inputs, _ = load_validation(services_e2e.demo.validation_path)
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps(inputs[:3].tolist()))
    done = _cli(
        "query", DEMO_APP, "--input", str(rows), "--latency-ms", "50", "--min-accuracy", "0.97",
        "--url", services_e2e.url, "--explain",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "variant digits-" in done.stdout
    assert "why:" in done.stdout
    npy = tmp_path / "rows.npy"
    np.save(npy, inputs[:2])
    as_json = _cli("query", DEMO_APP, "--input", str(npy), "--json", "--url", services_e2e.url)
    assert as_json.returncode == 0, as_json.stderr
    assert len(json.loads(as_json.stdout)["labels"]) == 2


@pytest.mark.parametrize(
    ("args", "env", "code", "says"),
    [
        (["worker"], {}, 2, "a separate worker needs a broker"),
        (["gateway"], {}, 2, "a separate gateway needs a broker"),
        (
            ["gateway"],
            {"INFAAS_BROKER_URL": "amqp://x@127.0.0.1:1//"},
            2,
            "needs INFAAS_STATE_URL",
        ),
        (["worker", "--cores", "999"], {"INFAAS_BROKER_URL": "amqp://x@127.0.0.1:1//"}, 2, "cores"),
        (["worker"], {"INFAAS_BROKER_URL": "http://nope"}, 2, "INFAAS_BROKER_URL must be amqp"),
        (["query", "digits", "--input", "/nonexistent.json"], {}, 2, "does not exist"),
    ],
)
def test_cli_refuses_bad_settings_clearly(
    args: list[str], env: dict[str, str], code: int, says: str
) -> None:
    done = _cli(*args, env=env)
    assert done.returncode == code, done.stderr
    assert says in done.stderr


def test_cli_query_to_a_dead_gateway(tmp_path: Path) -> None:
    rows = tmp_path / "rows.json"
    rows.write_text("[[0]]")
    done = _cli("query", "digits", "--input", str(rows), "--url", f"http://127.0.0.1:{free_port()}")
    assert done.returncode == 1
    assert "cannot reach the gateway" in done.stderr

"""The faults of bench/faults.py, one function each: inject, wait for the fault's end,
and return when it ended (``time.monotonic()``) with what was seen on the way; then
:func:`restore` puts the stack back as it was (two workers, one gateway, all ready)."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.faults_stack import MODEL, FaultStack, batch_queue_held, variant_queue_held
from infaas.demo import DEMO_APP
from registry.catalog import Catalog
from registry.registrations import (
    RegistrationOptions,
    RegistrationStore,
    new_registration_id,
    new_registration_rows,
)
from registry.types import QUEUED
from tests import netns


@dataclass(frozen=True)
class Options:
    outage_s: float
    partition_s: float


@dataclass
class Injected:
    end: float  # the fault's end: from then on the system should serve again
    details: dict[str, Any]


WORKERS = ("worker-a", "worker-b")
Fault = Callable[[FaultStack, Options], Injected]


def _kill_holding(stack: FaultStack, held: Callable[[FaultStack, str], int]) -> tuple[str, int]:
    """SIGKILL a worker while RabbitMQ shows it holds unacknowledged messages.

    A small model answers in well under a millisecond, and a ``rabbitmqctl`` call takes
    a second: a running worker is almost never caught holding a query. So the worker is
    frozen first (SIGSTOP, as a long pause would), the broker goes on pushing up to its
    prefetch into its socket, and it is killed once RabbitMQ reports what it holds; a
    worker that holds nothing is thawed and the other one tried. Returns which worker,
    holding how many."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for name in WORKERS:
            proc = stack.procs[name]
            os.killpg(proc.pid, signal.SIGSTOP)
            time.sleep(0.5)
            count = held(stack, name)
            if count > 0:
                stack.kill(name)
                return name, count
            os.killpg(proc.pid, signal.SIGCONT)
            time.sleep(1.0)
    raise RuntimeError("no worker held a message for 120 s")


def worker_kill_queries(stack: FaultStack, _o: Options) -> Injected:
    name, held = _kill_holding(stack, variant_queue_held)
    end = time.monotonic()
    stack.start_worker(name)
    return Injected(end, {"unacked_queries_held": held})


def worker_kill_job(stack: FaultStack, _o: Options) -> Injected:
    name, held = _kill_holding(stack, batch_queue_held)
    end = time.monotonic()
    stack.start_worker(name)
    return Injected(end, {"unacked_chunks_held": held})


def gateway_kill(stack: FaultStack, _o: Options) -> Injected:
    stack.kill("gateway")
    end = time.monotonic()
    stack.start_gateway()
    return Injected(end, {"restarted_at_end": True})


def broker_stop(stack: FaultStack, o: Options) -> Injected:
    stack.rabbit.stop()
    time.sleep(o.outage_s)
    started = time.monotonic()
    stack.rabbit.start()
    return Injected(time.monotonic(), {"down_s": o.outage_s, "start_s": _s(started)})


def broker_connections(stack: FaultStack, _o: Options) -> Injected:
    closed = stack.rabbit.close_all_connections()
    return Injected(time.monotonic(), {"connections_closed": closed})


def redis_stop(stack: FaultStack, o: Options) -> Injected:
    stack.redis.stop()
    time.sleep(o.outage_s)
    stack.redis.start()
    return Injected(time.monotonic(), {"down_s": o.outage_s})


def postgres_stop(stack: FaultStack, o: Options) -> Injected:
    stack.postgres.stop()
    time.sleep(o.outage_s)
    stack.postgres.start()
    return Injected(time.monotonic(), {"down_s": o.outage_s})


def s3_down(stack: FaultStack, o: Options) -> Injected:
    stack.s3.stop()
    time.sleep(o.outage_s)
    stack.s3.start()
    return Injected(time.monotonic(), {"down_s": o.outage_s})


def worker_partition(stack: FaultStack, o: Options) -> Injected:
    """worker-b runs in a network namespace of its own (see :func:`partitioned_worker`);
    its link goes down for ``partition_s`` and up again."""
    host = stack.partition_host
    if host is None:
        raise RuntimeError("worker-partition needs the namespaced worker")
    subprocess.run(["ip", "link", "set", host.veth, "down"], check=True, timeout=30)
    time.sleep(o.partition_s)
    subprocess.run(["ip", "link", "set", host.veth, "up"], check=True, timeout=30)
    return Injected(time.monotonic(), {"cut_s": o.partition_s})


def record_unsent_registration(catalog: Catalog, source_model: str, model_id: str) -> str:
    """Record a copy of ``source_model`` as ``model_id`` exactly as the gateway records an
    upload (model, registration and task rows in one transaction) and send nothing, as a
    gateway killed right after would; returns the registration's id."""
    registration_id = new_registration_id()
    catalog.add_model(
        dataclasses.replace(
            catalog.get_model(source_model), id=model_id, status=QUEUED, metadata={}
        ),
        with_rows=new_registration_rows(
            registration_id,
            DEMO_APP,
            model_id,
            ["cpu"],
            RegistrationOptions(budget_s_per_batch=0.05, batch_sizes=(1, 8)),
        ),
    )
    return registration_id


def registration_unsent(stack: FaultStack, _o: Options) -> Injected:
    """Recorded exactly as the gateway records an upload (model, registration and task
    rows in one transaction), and the gateway SIGKILLed before it sent the task; it is
    started again, and its sweeper must send the task."""
    catalog = stack.services.catalog
    model_id = f"faults-{MODEL}-{time.monotonic_ns() % 10**8}"
    registration_id = record_unsent_registration(catalog, MODEL, model_id)
    recorded = time.monotonic()
    stack.kill("gateway")
    end = time.monotonic()
    stack.start_gateway()
    registrations = RegistrationStore(catalog)
    deadline = time.monotonic() + 300
    while not (found := registrations.get(registration_id)).finished:
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    return Injected(
        end,
        {
            "registration_status": found.status,
            "registration_finished_s": _s(recorded),
            "registration_attempts": [t.attempts for t in found.tasks],
        },
    )


def _s(since: float) -> float:
    return round(time.monotonic() - since, 2)


def none(_stack: FaultStack, _o: Options) -> Injected:
    """No fault: the figures of the same load and job on a healthy stack."""
    return Injected(time.monotonic(), {})


FAULTS: dict[str, Fault] = {
    "none": none,
    "worker-kill-queries": worker_kill_queries,
    "worker-kill-job": worker_kill_job,
    "gateway-kill": gateway_kill,
    "broker-stop": broker_stop,
    "broker-connections": broker_connections,
    "redis-stop": redis_stop,
    "postgres-stop": postgres_stop,
    "s3-down": s3_down,
    "worker-partition": worker_partition,
    "registration-unsent": registration_unsent,
}


def restore(stack: FaultStack) -> None:
    """Two workers and a gateway again, whatever the fault left."""
    for name in ("gateway", *WORKERS):
        proc = stack.procs.get(name)
        if proc is not None and proc.poll() is not None:
            del stack.procs[name]
        if name not in stack.procs:
            if name == "gateway":
                stack.start_gateway()
            else:
                stack.start_worker(name)
    stack.wait_ready(2)


def partitioned_worker(stack: FaultStack, host: netns.Host) -> None:
    """worker-b moved into ``host``: it reaches the services through forwarders."""
    stack.kill("worker-b", signal.SIGTERM)
    stack.partition_host = host
    stack.start_worker("worker-b", wrap=host.command(), env=stack.env_via(host.gateway))

"""A worker told to stop on real RabbitMQ: it answers the batch it is running, puts back
what it holds and has not started, exits, and no query sent before the stop is lost.

How fast it exits (the 2 s target) is measured by ``python -m bench.worker_stop``, not
here: these tests wait generously.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from kombu import Connection
from kombu import Queue as KombuQueue

from bench.worker_stop import (
    VARIANT,
    QueryLoad,
    one_model_stack,
    serving_workers,
    wait_serving,
)
from infaas.demo import DEMO_APP
from infaas.demo_models import load_validation
from queues import topology
from queues.depth import QueueProbe
from queues.messages import Query, Reply, now_ms
from queues.rpc import create_query_client
from queues.settings import BrokerSettings
from tests import services
from tests.demo_build import DemoBuild
from workers.consumer import Replica, ReplicaConfig
from workers.runtimes.base import RuntimeSpec
from workers.stats import VariantStats

pytestmark = pytest.mark.integration

WAIT_S = 30.0


class Gate:
    """A runtime whose batches wait until the test opens the gate (the first one waits;
    with ``open_`` set from the start, none do)."""

    spec = RuntimeSpec("onnx", "fp32", "cpu")

    def __init__(self, *, open_: bool = False) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()
        if open_:
            self.opened.set()

    def predict(self, batch: np.ndarray) -> np.ndarray:
        self.entered.set()
        if not self.opened.wait(WAIT_S):
            raise RuntimeError("the test never opened the gate")
        return np.asarray(batch[:, :10] * 2, dtype=np.float32)

    def memory_bytes(self) -> int:
        return 0

    def close(self) -> None:
        return None


def _replica(broker_url: str, queue: str, worker_id: str, runtime: Gate) -> Replica:
    config = ReplicaConfig(
        worker_id=worker_id,
        variant="m.onnx-fp32.cpu-t1",
        queue=queue,
        queue_arguments=topology.variant_queue_arguments("stop", 10_000),
        max_batch=1,  # one query a batch: the rest of a round is held, not started
        prefetch=16,
        item_shape=(64,),
    )
    replica = Replica(config, runtime, VariantStats(), lambda: Connection(broker_url))
    replica.start()
    assert replica.wait_consuming(WAIT_S)
    return replica


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {WAIT_S} s")
        time.sleep(0.05)


def test_a_stopped_replica_answers_its_batch_and_puts_back_what_it_holds(
    broker_url: str,
) -> None:
    # one message per query: the replica must hold several messages when told to stop
    # (packed, the 16 queries would be one message of 16 rows, one batch)
    settings = BrokerSettings(broker_url=broker_url, queue_prefix="stop", edge_batch_rows=1)
    queue = topology.variant_queue("stop", "app", f"m{uuid.uuid4().hex[:8]}.onnx-fp32.cpu-t1")
    gate = Gate()
    probe = QueueProbe(lambda: Connection(broker_url))
    with Connection(broker_url) as conn:  # the queue, so that queries wait in it
        KombuQueue(
            queue,
            routing_key=queue,
            durable=True,
            queue_arguments=topology.variant_queue_arguments("stop", 10_000),
        )(conn.default_channel).declare()
    first: Replica | None = None
    x = np.arange(64, dtype=np.float32)[None]

    def ready_in_queue() -> int:
        depth = probe.depth(queue)
        assert depth is not None
        return depth.messages

    async def run() -> list[Reply]:
        nonlocal first
        client = create_query_client(settings)
        await client.start()
        try:
            calls = [
                asyncio.create_task(
                    client.call(
                        queue,
                        Query(uuid.uuid4().hex, "app", "v", x, now_ms() + 60_000, now_ms()),
                        timeout_s=60,
                    )
                )
                for _ in range(16)
            ]
            # all 16 wait before ``first`` consumes, so its first round takes several of
            # them: it runs one batch and is told to stop while the broker has handed it all
            await asyncio.to_thread(_until, lambda: ready_in_queue() == 16, "the queries")
            first = _replica(broker_url, queue, "first", gate)
            await asyncio.to_thread(_until, gate.entered.is_set, "the first batch")
            await asyncio.to_thread(_until, lambda: ready_in_queue() == 0, "the prefetch")
            first.request_stop()
            gate.opened.set()
            await asyncio.to_thread(first.stop, WAIT_S)
            assert not first.alive
            second = _replica(broker_url, queue, "second", Gate(open_=True))
            try:
                return list(await asyncio.gather(*calls))
            finally:
                second.stop()
        finally:
            await client.close()

    try:
        replies = asyncio.run(run())
    finally:
        if first is not None:
            first.stop()
        probe.close()
    assert all(reply.ok for reply in replies), [reply.error_message for reply in replies]
    for reply in replies:
        assert reply.outputs is not None
        np.testing.assert_array_equal(reply.outputs, x[:, :10] * 2)
    # the batch that was running was answered; the 15 held were put back and served
    assert Counter(reply.worker for reply in replies) == {"first": 1, "second": 15}


@pytest.mark.slow
@pytest.mark.timeout(900)  # training the demo models once per code version, then ~1 minute
def test_a_worker_told_to_stop_under_load_exits_and_loses_no_query(
    s3_store_url: str, demo_build: DemoBuild
) -> None:
    clients = 16
    with (
        services.postgres_database() as catalog_url,
        one_model_stack(
            catalog_url=catalog_url, store_url=s3_store_url, models_dir=demo_build.folder
        ) as stack,
    ):
        inputs, _ = load_validation(stack.demo.validation_path)
        victim = stack.start_worker("--variants", VARIANT, name="victim")
        (victim_id,) = wait_serving(stack.services, VARIANT, 1, [victim])
        queue = topology.variant_queue("bench", DEMO_APP, VARIANT)
        load = QueryLoad(stack.services.broker, queue, inputs, clients=clients)
        load.start()
        try:
            _until(lambda: load.outcome.answered_by[victim_id] >= 200, "answers under load")
            os.killpg(victim.pid, signal.SIGTERM)
            assert victim.wait(WAIT_S) == 0
            stack.processes.remove(victim)
            assert victim_id not in serving_workers(stack.services, VARIANT)
            # every caller now waits on a query nobody serves: none answered, none refused
            _until(lambda: load.outcome.unanswered == clients, "all callers waiting")
            load.stop_sending()
            replacement = stack.start_worker("--variants", VARIANT, name="replacement")
            (replacement_id,) = wait_serving(stack.services, VARIANT, 1, [replacement])
        finally:
            done = load.join(120)
        assert done, "queries were still unanswered two minutes after the stop"
        outcome = load.outcome
        assert not outcome.errors
        assert outcome.wrong == 0
        assert outcome.unanswered == 0
        assert outcome.answered == outcome.sent
        assert set(outcome.answered_by) == {victim_id, replacement_id}
        assert outcome.answered_by[replacement_id] == clients
        log = Path(stack.home / "victim.log").read_text(errors="replace")
        assert "Traceback" not in log, log[-3000:]

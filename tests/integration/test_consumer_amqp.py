"""The replica on real RabbitMQ: every query is answered promptly, under concurrency.

A regression test: py-amqp reads incoming deliveries while it publishes replies, so
queries can arrive in the middle of a round. The loop once left them waiting for the next
frame, which never came after the last query of a burst (answers seconds late).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
from kombu import Connection

from queues import topology
from queues.messages import Query, now_ms
from queues.rpc import create_query_client
from queues.settings import BrokerSettings
from workers.consumer import Replica, ReplicaConfig
from workers.runtimes.base import RuntimeSpec
from workers.stats import VariantStats

pytestmark = pytest.mark.integration
BURSTS = 3
CLIENTS = 16
QUERIES_PER_CLIENT = 25  # 1,200 queries in all (3 s bursts answered about as many)
ANSWER_WITHIN_MS = 30_000  # a stalled query waits for this, then fails the test


class Doubler:
    spec = RuntimeSpec("onnx", "fp32", "cpu")

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(batch[:, :10] * 2, dtype=np.float32)

    def memory_bytes(self) -> int:
        return 0

    def close(self) -> None:
        return None


@pytest.fixture
def replica(broker_url: str) -> Iterator[tuple[BrokerSettings, str, VariantStats]]:
    settings = BrokerSettings(broker_url=broker_url, queue_prefix="rep")
    queue = topology.variant_queue("rep", "app", "m.onnx-fp32.cpu-t1")
    config = ReplicaConfig(
        worker_id="w",
        variant="m.onnx-fp32.cpu-t1",
        queue=queue,
        queue_arguments=topology.variant_queue_arguments("rep", 10_000),
        max_batch=32,
        prefetch=32,
        item_shape=(64,),
    )
    stats = VariantStats()
    worker = Replica(config, Doubler(), stats, lambda: Connection(broker_url))
    worker.start()
    assert worker.wait_consuming(10)
    yield settings, queue, stats
    worker.stop()


def test_every_query_of_concurrent_bursts_is_answered_promptly(
    replica: tuple[BrokerSettings, str, VariantStats],
) -> None:
    """A fixed number of queries, so the count is exact whatever the machine's speed; a
    query the replica leaves waiting (the last one of a burst, when nothing more arrives
    to wake it) fails at its generous time-out instead of being timed with a stopwatch."""
    settings, queue, stats = replica

    async def run() -> list[float]:
        client = create_query_client(settings)
        await client.start()
        x = np.arange(64, dtype=np.float32)[None]
        latencies: list[float] = []

        async def one_client() -> None:
            for _ in range(QUERIES_PER_CLIENT):
                started = time.perf_counter()
                query = Query(
                    uuid.uuid4().hex, "app", "v", x, now_ms() + ANSWER_WITHIN_MS, now_ms()
                )
                reply = await client.call(queue, query, timeout_s=ANSWER_WITHIN_MS / 1000)
                assert reply.ok
                assert reply.outputs is not None
                np.testing.assert_array_equal(reply.outputs, x[:, :10] * 2)
                latencies.append(time.perf_counter() - started)

        try:
            for _ in range(BURSTS):  # bursts, each ending with a last query that must not stall
                await asyncio.gather(*(one_client() for _ in range(CLIENTS)))
                await asyncio.sleep(0.3)
        finally:
            await client.close()
        return latencies

    latencies = asyncio.run(run())
    count = BURSTS * CLIENTS * QUERIES_PER_CLIENT
    assert len(latencies) == count
    # the typical answer, not the slowest one a busy machine can delay
    assert float(np.percentile(latencies, 50)) < 1.0
    assert stats.collect().completed == count

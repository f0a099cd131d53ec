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
from queues.amqp_rpc import AmqpQueryClient
from queues.messages import Query, Reply, now_ms
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


def _packing_run(
    settings: BrokerSettings, queue: str, sizes: list[int], width: int = 64, pack_rows: int = 0
) -> tuple[list[tuple[np.ndarray, object]], int, int]:
    """``len(sizes)`` queries sent at once (each of ``sizes[i]`` distinct rows); their
    inputs with what each got, and the messages and queries the client published."""

    async def run() -> tuple[list[tuple[np.ndarray, object]], int, int]:
        client = create_query_client(settings)
        assert isinstance(client, AmqpQueryClient)
        await client.start()
        rng = np.random.default_rng(7)

        async def one(rows: int) -> tuple[np.ndarray, object]:
            x = rng.standard_normal((rows, width)).astype(np.float32)
            query = Query(uuid.uuid4().hex, "app", "v", x, now_ms() + ANSWER_WITHIN_MS, now_ms())
            try:
                reply = await client.call(
                    queue, query, timeout_s=ANSWER_WITHIN_MS / 1000, pack_rows=pack_rows
                )
            except Exception as exc:  # the test inspects what each got
                return x, exc
            return x, reply

        try:
            answers = await asyncio.gather(*(one(rows) for rows in sizes))
        finally:
            await client.close()
        return list(answers), client.messages_sent, client.queries_sent

    return asyncio.run(run())


def test_queries_that_arrive_together_leave_packed_and_each_gets_its_own_rows(
    replica: tuple[BrokerSettings, str, VariantStats],
) -> None:
    settings, queue, stats = replica
    sizes = [1, 3, 1, 2] * 10 + [40]  # 40 rows: over the 32-row pack, it goes alone
    answers, messages, queries = _packing_run(settings, queue, sizes)
    for x, reply in answers:
        assert isinstance(reply, Reply)
        assert reply.ok
        assert reply.outputs is not None
        np.testing.assert_array_equal(reply.outputs, x[:, :10] * 2)
    assert queries == len(sizes)
    assert messages < queries  # sent in one loop turn: packed
    assert stats.collect().completed == len(sizes)  # the worker counts queries, not messages


def test_packing_off_sends_one_message_per_query(
    replica: tuple[BrokerSettings, str, VariantStats],
) -> None:
    settings, queue, _ = replica
    unpacked = settings.model_copy(update={"edge_batch_rows": 1})
    answers, messages, queries = _packing_run(unpacked, queue, [1, 2, 1, 1])
    assert all(isinstance(r, Reply) and r.ok for _, r in answers)
    assert messages == queries == 4
    # a variant whose batch is one row: never packed, whatever the client's limit
    answers, messages, queries = _packing_run(settings, queue, [1, 1, 1], pack_rows=1)
    assert all(isinstance(r, Reply) and r.ok for _, r in answers)
    assert messages == queries == 3


def test_a_query_of_the_wrong_shape_is_not_packed_with_the_others(
    replica: tuple[BrokerSettings, str, VariantStats],
) -> None:
    """Packs group by row shape: the misfit gets its own error, the rest their answers."""
    settings, queue, _ = replica
    good = _packing_run(settings, queue, [1] * 6)
    bad_and_good = asyncio.run(_mixed(settings, queue))
    assert all(isinstance(r, Reply) and r.ok for _, r in good[0])
    misfit, fits = bad_and_good
    assert isinstance(misfit, Reply)
    assert misfit.error_code == "invalid_input"
    assert all(isinstance(r, Reply) and r.ok for r in fits)


async def _mixed(settings: BrokerSettings, queue: str) -> tuple[object, list[object]]:
    client = create_query_client(settings)
    await client.start()

    async def one(width: int) -> object:
        x = np.ones((1, width), dtype=np.float32)
        query = Query(uuid.uuid4().hex, "app", "v", x, now_ms() + ANSWER_WITHIN_MS, now_ms())
        return await client.call(queue, query, timeout_s=ANSWER_WITHIN_MS / 1000)

    try:
        misfit, *fits = await asyncio.gather(one(32), *(one(64) for _ in range(5)))
    finally:
        await client.close()
    return misfit, fits

"""A replica counts each query it takes in once and out once, even when its connection
is lost mid-round: what it held then is released, not left as a backlog for ever (a
backlog the batch jobs on the worker yield to, so they never ran again). And it counts a
batch's size in rows, as the profile and the batch limit do."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from queues.messages import Query, encode_query, now_ms
from workers.consumer import Replica, ReplicaConfig
from workers.runtimes.base import RuntimeSpec
from workers.stats import VariantStats


class Doubler:
    spec = RuntimeSpec("onnx", "fp32", "cpu")

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return batch * 2

    def memory_bytes(self) -> int:
        return 0

    def close(self) -> None:
        pass


class Message:
    def __init__(self, index: int, rows: int = 1) -> None:
        query = Query(
            request_id=f"q{index}",
            app="a",
            variant="m.onnx-fp32.cpu-t1",
            inputs=np.ones((rows, 4), np.float32),
            deadline_ms=now_ms() + 60_000,
            sent_ms=now_ms(),
        )
        self.body, self.headers = encode_query(query)
        self.properties = {"reply_to": "replies", "correlation_id": f"q{index}"}


class Producer:
    """Publishes ``ok`` replies, then loses its connection."""

    def __init__(self, ok: int) -> None:
        self.ok = ok
        self.published = 0

    def publish(self, *_args: Any, **_kwargs: Any) -> None:
        if self.published == self.ok:
            raise ConnectionResetError("connection lost")
        self.published += 1


def _replica(stats: VariantStats, max_batch: int) -> Replica:
    config = ReplicaConfig(
        worker_id="w",
        variant="m.onnx-fp32.cpu-t1",
        queue="q",
        queue_arguments={},
        max_batch=max_batch,
        prefetch=16,
        item_shape=(4,),
    )
    return Replica(config, Doubler(), stats, lambda: None)


@pytest.mark.parametrize("max_batch", [1, 3, 16])
def test_queries_held_when_the_connection_is_lost_are_released(max_batch: int) -> None:
    stats = VariantStats()
    replica = _replica(stats, max_batch)
    producer = Producer(ok=4)
    with pytest.raises(ConnectionResetError):
        replica._process([Message(i) for i in range(10)], producer)
    window = stats.collect()
    assert window.outstanding == 0
    assert window.arrived == 10
    # a round on the next connection is counted as before
    replica._process([Message(i) for i in range(3)], Producer(ok=3))
    assert stats.collect().outstanding == 0


def test_a_whole_round_answered_leaves_nothing_held() -> None:
    stats = VariantStats()
    replica = _replica(stats, max_batch=4)
    assert replica._process([Message(i) for i in range(9)], Producer(ok=9)) == []
    window = stats.collect()
    assert (window.outstanding, window.arrived, window.completed) == (0, 9, 9)


def test_a_batch_is_as_big_as_its_rows() -> None:
    """Queries of four rows each, at a batch limit of four: every batch is full (four
    rows), which is what the monitor compares with the limit and the profile; counted
    in queries it looked like batches of one, a quarter full, and a replica running
    them back to back never looked saturated."""
    stats = VariantStats()
    replica = _replica(stats, max_batch=4)
    replica._process([Message(i, rows=4) for i in range(6)], Producer(ok=6))
    window = stats.collect()
    assert (window.batches, window.mean_batch) == (6, 4.0)
    assert (window.completed, window.outstanding) == (6, 0)
    # single-row queries batch up to the limit
    replica._process([Message(i) for i in range(8)], Producer(ok=8))
    window = stats.collect()
    assert (window.batches, window.mean_batch) == (2, 4.0)

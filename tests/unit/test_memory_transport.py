"""The embedded broker's consumers are woken by a put on their queue, not by polling."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from kombu import Consumer, Producer, Queue
from kombu.message import Message

from queues import memory_transport
from queues.memory_rpc import memory_connection
from queues.memory_transport import ARRIVALS


def _queue() -> str:
    return f"t.{uuid.uuid4().hex[:10]}"


def test_a_waiting_consumer_is_woken_by_a_put_not_by_its_fallback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a fallback far beyond the test's patience: only the put's wake-up can deliver in time
    monkeypatch.setattr(memory_transport, "FALLBACK_WAIT_S", 600.0)
    name = _queue()
    got: list[bytes] = []
    registered = ARRIVALS.waiting()
    with memory_connection() as conn:
        queue = Queue(name, routing_key=name)

        def on_message(message: Message) -> None:
            got.append(message.body)
            message.ack()

        with Consumer(conn.channel(), [queue], on_message=on_message):
            waiter = threading.Thread(
                target=conn.drain_events, kwargs={"timeout": 600}, daemon=True
            )
            waiter.start()
            deadline = time.monotonic() + 30
            while ARRIVALS.waiting() == registered and time.monotonic() < deadline:
                time.sleep(0.01)  # until the consumer waits on its queue
            assert ARRIVALS.waiting() == registered + 1
            with memory_connection() as other:
                Producer(other.channel()).publish(b"hello", routing_key=name, serializer=None)
            waiter.join(30)
            assert not waiter.is_alive(), "the put did not wake the waiting consumer"
    assert got == [b"hello"]
    assert ARRIVALS.waiting() == registered  # the waiter left no registration behind


def test_nothing_arriving_is_a_timeout_and_leaves_no_registration() -> None:
    registered = ARRIVALS.waiting()
    name = _queue()
    with (
        memory_connection() as conn,
        Consumer(conn.channel(), [Queue(name)], on_message=print),
        pytest.raises(TimeoutError),
    ):
        conn.drain_events(timeout=0.1)
    assert ARRIVALS.waiting() == registered


def test_a_message_already_there_is_delivered_without_waiting() -> None:
    name = _queue()
    with memory_connection() as conn:
        queue = Queue(name, routing_key=name)
        queue(conn.channel()).declare()
        Producer(conn.channel()).publish(b"early", routing_key=name, serializer=None)
        got: list[bytes] = []
        with Consumer(conn.channel(), [queue], on_message=lambda m: got.append(m.body)):
            conn.drain_events(timeout=5)
    assert got == [b"early"]

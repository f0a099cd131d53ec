"""A replica: one consumer of one variant queue, batching what waits.

Each replica is a thread with its own broker connection and channel, so the channel is
only ever touched by the thread that owns it. The loop takes whatever is waiting on the
queue (up to the variant's batch limit, as prefetched by the broker), drops queries
whose deadline has passed (answering them with a deadline error), runs the rest as one
model batch, replies to each query through its ``reply_to`` and only then acknowledges,
so a worker that dies mid-batch loses nothing: the broker redelivers. Told to stop, a
replica cancels its consumer, answers the batch it is running and puts back on the queue
what it holds and has not started, so a stopping worker ends within a batch's time and
another worker serves the rest.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from kombu import Connection, Consumer, Producer
from kombu import Queue as KombuQueue
from kombu.message import Message

from queues.errors import DeadlineExceeded, InvalidInput, WorkerError
from queues.messages import (
    CONTENT_TYPE,
    Query,
    Reply,
    decode_query,
    encode_reply,
    error_reply,
    message_count,
    now_ms,
)
from workers.batching import batch_wait_ms, group_rows
from workers.runtimes.base import Runtime
from workers.stats import VariantStats

log = logging.getLogger(__name__)
IDLE_WAIT_S = 0.25
FRAME_REST_S = 0.05
RECONNECT_FIRST_S = 0.1
RECONNECT_MAX_S = 5.0


@dataclass(frozen=True, slots=True)
class ReplicaConfig:
    worker_id: str
    variant: str
    queue: str
    queue_arguments: dict[str, Any]
    max_batch: int
    prefetch: int
    item_shape: tuple[int, ...]
    max_wait_ms: float = 0.0  # longest wait for more queries to fill a batch


def reconnect_delay_s(failures: int) -> float:
    """The wait before connecting again, after ``failures`` losses in a row with no
    consuming between them.

    The count starts again at 1 whenever a connection got as far as consuming: a broker
    that drops a healthy connection (``close_all_connections``, a node that restarts) is
    usually back at once, and a delay grown during an earlier outage would leave the
    queue with no consumer for seconds while the gateway, reconnected, sends queries
    into it that expire there. It grows only while attempts keep failing (a broker
    down), so a dead broker is not hammered.
    """
    return min(RECONNECT_FIRST_S * 2.0 ** max(failures - 1, 0), RECONNECT_MAX_S)


def _bytes_waiting(conn: Connection) -> bool | None:
    """Whether the AMQP socket (or py-amqp's read buffer) holds unread bytes; None for a
    transport that cannot tell.

    Not ``drain_events(timeout=0)``: py-amqp busy-spins on a partly arrived frame. Not a
    tiny positive timeout either: ``poll`` rounds it up to a whole millisecond, which
    would add a millisecond to every round.
    """
    transport = getattr(conn.connection, "transport", None)
    sock = getattr(transport, "sock", None)
    if sock is None:
        return None
    if getattr(transport, "_read_buffer", b""):
        return True
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


def ack_messages(channel: Any, messages: list[Message], *, multiple: bool) -> None:
    """Acknowledge ``messages``: at once up to the last (``multiple``), or each."""
    if not messages:
        return
    if multiple:
        channel.basic_ack(messages[-1].delivery_tag, multiple=True)
    else:
        for message in messages:
            message.ack()


def publish_reply(producer: Producer, message: Message, reply: Reply) -> None:
    """Send ``reply`` to the query's reply-to address (none: a query nobody waits for)."""
    reply_to = message.properties.get("reply_to")
    if not reply_to:
        return
    body, headers = encode_reply(reply)
    producer.publish(
        body,
        exchange="",
        routing_key=reply_to,
        correlation_id=message.properties.get("correlation_id"),
        headers=headers,
        content_type=CONTENT_TYPE,
        content_encoding="binary",
        serializer=None,
        delivery_mode=1,
        retry=False,
    )


class Replica:
    def __init__(
        self,
        config: ReplicaConfig,
        runtime: Runtime,
        stats: VariantStats,
        connect: Callable[[], Connection],
        *,
        index: int = 0,
        latency_ms: Callable[[int], float] | None = None,
    ) -> None:
        self.config = config
        self._runtime = runtime
        self._stats = stats
        self._connect = connect
        self._stop = threading.Event()
        self._consuming = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"replica-{config.variant}-{index}", daemon=True
        )
        self._pending: list[Message] = []
        self._open = 0  # queries of this round counted in and not yet counted out
        self._latency_ms = latency_ms or (lambda _batch: 0.0)
        self._arrival_qps = 0.0
        self._last_round = time.monotonic()

    def start(self) -> None:
        self._thread.start()

    def wait_consuming(self, timeout_s: float) -> bool:
        """True once the replica consumes its queue (the queue then exists)."""
        return self._consuming.wait(timeout_s)

    def request_stop(self) -> None:
        """Ask the replica to stop and return at once (:meth:`stop` waits for it): it
        cancels its consumer, answers the batch it is running and puts back on the queue
        what it holds and has not started, for another worker to serve."""
        self._stop.set()

    def stop(self, timeout_s: float = 10.0) -> None:
        """:meth:`request_stop`, then wait until the replica has closed its connection."""
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # -- the loop -------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0  # losses in a row with no consuming between them
        while not self._stop.is_set():
            try:
                with self._connect() as conn:
                    self._serve(conn)
            except Exception as exc:  # connection lost: back off and reconnect
                log.debug("replica error", exc_info=True)
                failures = 1 if self._consuming.is_set() else failures + 1
                self._consuming.clear()
                self._pending.clear()  # the broker redelivers what was not acked
                if self._stop.is_set():
                    break
                delay_s = reconnect_delay_s(failures)
                log.warning(
                    "replica of %s lost its broker: %s; connecting again in %.1f s",
                    self.config.variant,
                    exc,
                    delay_s,
                )
                self._stop.wait(delay_s)

    def _serve(self, conn: Connection) -> None:
        cfg = self.config
        channel = conn.channel()
        queue = KombuQueue(
            cfg.queue,
            routing_key=cfg.queue,
            durable=True,
            auto_delete=False,
            queue_arguments=cfg.queue_arguments,
        )
        producer = Producer(channel, auto_declare=False)
        multiple_ack = conn.transport.driver_type == "amqp"
        consumer = Consumer(
            channel,
            [queue],
            on_message=self._on_message,
            no_ack=False,
            prefetch_count=cfg.prefetch,
        )
        with consumer:
            self._consuming.set()
            while not self._stop.is_set():
                # Messages can already be pending here: py-amqp reads incoming frames
                # while it publishes (to notice connection.blocked), so replies of one
                # round may pull in queries of the next. Never block on those.
                if not self._pending:
                    try:
                        conn.drain_events(timeout=IDLE_WAIT_S)
                    except TimeoutError:
                        conn.heartbeat_check()
                        continue
                self._take_waiting(conn)
                self._wait_for_more(conn)
                messages, self._pending = self._pending, []
                self._track_rate(len(messages))
                unstarted = self._process(messages, producer)
                if unstarted:  # told to stop mid-round: the rest is put back below
                    held = {id(message) for message in unstarted}
                    messages = [m for m in messages if id(m) not in held]
                    self._pending = unstarted + self._pending
                ack_messages(channel, messages, multiple=multiple_ack and not unstarted)
            # Stop: the batches already run were answered above. Cancel first so the broker
            # sends nothing more (deliveries that raced the cancel arrive before its reply
            # and join the pending), then put back what was prefetched and not started:
            # another worker serves it now rather than after this one worked through it.
            consumer.cancel()
            messages, self._pending = self._pending, []
            for message in messages:  # basic.reject with requeue (py-amqp has no nack)
                message.requeue()
            log.info("replica of %s stopped; put back %d queries", cfg.variant, len(messages))

    def _on_message(self, message: Message) -> None:
        self._pending.append(message)

    def _take_waiting(self, conn: Connection) -> None:
        """Pull in whatever the broker already sent, without waiting for more."""
        while len(self._pending) < self.config.prefetch:
            waiting = _bytes_waiting(conn)
            if waiting is False:
                return
            try:
                # A virtual transport (memory) reads whole messages: timeout 0 is right.
                # On AMQP, data is there: wait briefly for the rest of a partial frame.
                conn.drain_events(timeout=0 if waiting is None else FRAME_REST_S)
            except TimeoutError:
                return

    def _rows(self) -> int:
        return sum(int((m.headers or {}).get("shape", [1])[0]) for m in self._pending)

    def _wait_for_more(self, conn: Connection) -> None:
        """Wait a little for more queries when the batch is not full and the objectives
        in hand allow it (:func:`workers.batching.batch_wait_ms`)."""
        cfg = self.config
        if cfg.max_wait_ms <= 0:
            return
        rows = self._rows()
        wait_ms = batch_wait_ms(
            now_ms=now_ms(),
            rows=rows,
            limit=cfg.max_batch,
            slo_deadlines_ms=[
                int((m.headers or {}).get("slo_us", 0)) / 1000.0 for m in self._pending
            ],
            latency_ms=self._latency_ms,
            arrival_qps=self._arrival_qps,
            max_wait_ms=cfg.max_wait_ms,
        )
        end = time.monotonic() + wait_ms / 1000.0
        while rows < cfg.max_batch and len(self._pending) < cfg.prefetch:
            remaining_s = end - time.monotonic()
            if remaining_s <= 0.0002:
                return
            try:
                conn.drain_events(timeout=remaining_s)
            except TimeoutError:
                return
            self._take_waiting(conn)
            rows = self._rows()

    def _track_rate(self, count: int) -> None:
        now = time.monotonic()
        elapsed = max(now - self._last_round, 1e-4)
        self._last_round = now
        self._arrival_qps = 0.7 * self._arrival_qps + 0.3 * (count / elapsed)

    # -- one round ------------------------------------------------------------------

    def _process(self, messages: list[Message], producer: Producer) -> list[Message]:
        """Answer ``messages``, batch by batch; returns those of the batches not started
        because the replica was told to stop meanwhile (empty when all were run).

        Each query counted in is counted out once: answered, failed, or released when
        the round ends without answering it (put back, or its connection lost). A
        message packed by the gateway counts as the queries in it."""
        count = sum(message_count(m.headers or {}) for m in messages)
        self._stats.arrived(count)
        self._open = count
        try:
            return self._answer(messages, producer)
        finally:
            if self._open:
                self._stats.released(self._open)
                self._open = 0

    def _answer(self, messages: list[Message], producer: Producer) -> list[Message]:
        now = now_ms()
        ready: list[tuple[Message, Query]] = []
        for message in messages:
            try:
                query = decode_query(message.body, message.headers or {})
            except ValueError as exc:
                self._fail(producer, message, InvalidInput(f"cannot decode the query: {exc}"))
                continue
            if query.deadline_ms and query.deadline_ms <= now:
                self._fail(
                    producer,
                    message,
                    DeadlineExceeded(
                        "the query's deadline passed before a worker could run it; "
                        "the variant is overloaded, retry or relax the latency objective"
                    ),
                    expired=True,
                )
                continue
            if query.inputs.shape[1:] != self.config.item_shape:
                self._fail(
                    producer,
                    message,
                    InvalidInput(
                        f"inputs of shape {list(query.inputs.shape)} do not fit "
                        f"[n, {', '.join(map(str, self.config.item_shape))}]"
                    ),
                )
                continue
            ready.append((message, query))
        sizes = [len(query.inputs) for _, query in ready]
        for group in group_rows(sizes, self.config.max_batch):
            if self._stop.is_set():
                return [message for message, _ in ready[group.start :]]
            self._run_batch(ready[group], producer)
        return []

    def _run_batch(self, items: list[tuple[Message, Query]], producer: Producer) -> None:
        arrays = [query.inputs for _, query in items]
        batch = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
        started = time.perf_counter_ns()
        try:
            outputs = self._runtime.predict(batch)
        except Exception as exc:
            log.exception("variant %s failed on a batch of %d", self.config.variant, len(batch))
            error = WorkerError(f"variant {self.config.variant} failed: {exc}")
            for message, _ in items:
                self._fail(producer, message, error)
            return
        model_ms = (time.perf_counter_ns() - started) / 1e6
        done_ms = now_ms()
        offset = 0
        latencies: list[float] = []
        for message, query in items:
            rows = len(query.inputs)
            reply = Reply(
                request_id=query.request_id,
                ok=True,
                outputs=outputs[offset : offset + rows],
                model_ms=model_ms,
                worker=self.config.worker_id,
                batch_size=len(batch),
                queued_ms=max(0.0, done_ms - model_ms - query.sent_ms),
            )
            offset += rows
            publish_reply(producer, message, reply)
            latencies.extend([done_ms - query.sent_ms] * query.count)
        self._stats.finished_batch(len(latencies), model_ms, latencies, rows=len(batch))
        self._open -= len(latencies)

    def _fail(
        self, producer: Producer, message: Message, error: Exception, *, expired: bool = False
    ) -> None:
        code = getattr(error, "code", WorkerError.code)
        cid = str(message.properties.get("correlation_id", ""))
        publish_reply(producer, message, error_reply(cid, code, str(error), self.config.worker_id))
        count = message_count(message.headers or {})
        self._stats.failed(count, expired=expired)
        self._open -= count

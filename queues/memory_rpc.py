"""Query client on kombu's in-process memory transport (the embedded default).

The memory transport has no direct reply-to, no publisher confirms and no queue
arguments, so this client emulates what the AMQP client gets from RabbitMQ: a reply
queue of its own, a passive declare before each publish (NoWorker when the queue does
not exist) and a length check (QueueFull). Replies are drained by one thread and handed
to the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import uuid

from kombu import Connection, Consumer, Producer
from kombu import Queue as KombuQueue
from kombu.exceptions import ChannelError
from kombu.message import Message

from queues.errors import BrokerUnavailable, QueueFull
from queues.memory_transport import Transport
from queues.messages import CONTENT_TYPE, Query, Reply, decode_reply, encode_query
from queues.replies import PendingReplies, no_answer, no_worker
from queues.settings import BrokerSettings

log = logging.getLogger(__name__)


def memory_connection(url: str = "memory://") -> Connection:
    """A connection to the process's memory broker whose consumers are woken by arrivals
    (queues/memory_transport.py), not by polling."""
    return Connection(url, transport=Transport)


class MemoryQueryClient:
    def __init__(self, settings: BrokerSettings) -> None:
        self._settings = settings
        self._reply_queue = f"{settings.queue_prefix}.replies.{uuid.uuid4().hex[:12]}"
        self._pending = PendingReplies()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connection: Connection | None = None
        self._producer: Producer | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.messages_sent = 0
        self.queries_sent = 0

    @property
    def connected(self) -> bool:
        return self._producer is not None

    @property
    def expired_answered(self) -> int:
        return 0  # no queue expiry in memory: the worker answers late queries itself

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._connection = memory_connection(self._settings.url)
        channel = self._connection.channel()
        KombuQueue(self._reply_queue, channel=channel, routing_key=self._reply_queue).declare()
        self._producer = Producer(channel, auto_declare=False)
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._drain_replies, args=(ready,), name="infaas-replies", daemon=True
        )
        self._thread.start()
        ready.wait(5)

    async def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5)
        self._pending.fail_all(BrokerUnavailable("the gateway is shutting down"))
        if self._connection is not None:
            self._connection.release()
        self._producer = None

    def _drain_replies(self, ready: threading.Event) -> None:
        with memory_connection(self._settings.url) as conn:
            queue = KombuQueue(self._reply_queue, routing_key=self._reply_queue)
            with Consumer(conn.channel(), [queue], on_message=self._on_reply, no_ack=True):
                ready.set()
                while not self._stop.is_set():
                    with contextlib.suppress(socket.timeout):
                        conn.drain_events(timeout=0.2)

    def _on_reply(self, message: Message) -> None:
        cid = str(message.properties.get("correlation_id", ""))
        try:
            reply: Reply | Exception = decode_reply(message.body, message.headers or {})
        except ValueError as exc:
            reply = BrokerUnavailable(f"malformed reply from a worker: {exc}")
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._pending.resolve, cid, reply)

    async def call(
        self,
        queue: str,
        query: Query,
        *,
        timeout_s: float,
        pack_rows: int = 0,  # noqa: ARG002
    ) -> Reply:
        """:meth:`queues.rpc.QueryClient.call`; this transport never packs queries."""
        producer = self._producer
        if producer is None:
            raise BrokerUnavailable("the in-process transport is not started")
        try:
            _name, depth, _consumers = producer.channel.queue_declare(queue=queue, passive=True)
        except ChannelError as exc:
            raise no_worker(queue) from exc
        if depth >= self._settings.queue_max_length:
            raise QueueFull(
                "the variant's queue is full; slow down and retry after the Retry-After delay"
            )
        body, headers = encode_query(query)
        self.messages_sent += 1
        self.queries_sent += 1
        cid = query.request_id or uuid.uuid4().hex
        future = self._pending.open(cid)
        try:
            producer.publish(
                body,
                routing_key=queue,
                exchange="",
                headers=headers,
                correlation_id=cid,
                reply_to=self._reply_queue,
                content_type=CONTENT_TYPE,
                content_encoding="binary",
                serializer=None,
                retry=False,
            )
            return await asyncio.wait_for(future, timeout=timeout_s)
        except TimeoutError as exc:
            raise no_answer(queue, timeout_s) from exc
        finally:
            self._pending.discard(cid)

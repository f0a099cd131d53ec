"""Query client on RabbitMQ: pika's asyncio adapter on the gateway's own event loop.

One connection and one channel in confirm mode carry every query of this gateway;
replies come back through direct reply-to (``amq.rabbitmq.reply-to``), so there is no
reply queue to declare and no thread hop. Publishes are ``mandatory``: a query for a
variant queue that does not exist is returned (NoWorker); a queue at its length limit
nacks (QueueFull). The gateway also consumes the dead-letter queue of expired queries
and answers each one with a deadline error, so expired work is still answered.

A direct reply-to address dies with its connection: a reply sent to it after a drop is
lost. So when the connection drops, every query in flight is sent again on the next
connection (a model-less query only reads, running it twice is harmless), and new
queries wait for that connection, both within ``broker_reconnect_grace_s`` of the drop
and the query's own deadline; past that they are answered 503 broker_unavailable at
once (a broker that is down, not a connection dropped). The connection and its recovery
are :class:`queues.amqp_link.QueryLink`'s.

Queries for one variant that reach the gateway together leave as one message
(:mod:`queues.packing`; ``edge_batch_rows``, ``edge_batch_window_ms``): they are held
until the event loop's current turn ends (or the window, never more than a tenth of
what is left of their objective), so a lone query waits for nothing.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from pika.channel import Channel
from pika.exceptions import AMQPError
from pika.spec import Basic, BasicProperties

from queues.amqp_channel import DIRECT_REPLY_TO
from queues.amqp_link import ConnectionLost, LinkCallbacks, QueryLink
from queues.confirms import PublishConfirms
from queues.errors import BrokerUnavailable, DeadlineExceeded, QueueFull
from queues.messages import (
    CONTENT_TYPE,
    Query,
    Reply,
    decode_reply,
    encode_query,
    message_count,
    now_ms,
    pack_queries,
    split_reply,
)
from queues.packing import Outbox, Packs, Waiting
from queues.replies import PendingReplies, no_answer, no_worker
from queues.settings import BrokerSettings

log = logging.getLogger(__name__)
EXPIRY_GRACE_S = 0.2
MAX_SENDS = 3  # a query sent on this many connections, each of them lost, is refused


class AmqpQueryClient:
    def __init__(self, settings: BrokerSettings) -> None:
        self._settings = settings
        self._pending = PendingReplies()
        self._confirms = PublishConfirms()
        self._expired_answered = 0
        self._outbox = Outbox(settings.edge_batch_rows)
        self._packs = Packs()
        self._flush_handle: asyncio.Handle | None = None
        self.messages_sent = 0  # query messages published (a packed one counts once)
        self.queries_sent = 0  # queries published in them
        self._link = self._open_link(
            LinkCallbacks(
                on_return=self._on_return,
                on_confirm=self._on_confirm,
                on_reply=self._on_reply,
                on_expired=self._on_expired,
                on_connected=self._confirms.reset,
                on_lost=self._fail_all,
            )
        )

    def _open_link(self, callbacks: LinkCallbacks) -> QueryLink:
        return QueryLink(self._settings, callbacks)

    @property
    def connected(self) -> bool:
        return self._link.channel is not None

    @property
    def expired_answered(self) -> int:
        return self._expired_answered

    async def start(self) -> None:
        await self._link.start()

    async def close(self) -> None:
        await self._link.close()

    def _fail_all(self, error: Exception) -> None:
        self._confirms.clear()
        self._packs.clear()
        self._outbox.take()
        self._pending.fail_all(error)

    # -- the query path -------------------------------------------------------------

    async def call(
        self, queue: str, query: Query, *, timeout_s: float, pack_rows: int = 0
    ) -> Reply:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + timeout_s
        correlation_id = query.request_id or uuid.uuid4().hex
        lost = ConnectionLost("no connection")
        for _send in range(MAX_SENDS):
            channel = await self._link.channel_by(give_up)
            try:
                return await self._send(
                    channel, queue, query, correlation_id, give_up, timeout_s, pack_rows
                )
            except ConnectionLost as exc:
                lost = exc
                log.debug("query %s lost with its connection, sent again", correlation_id)
        raise BrokerUnavailable(f"{lost.message}; lost {MAX_SENDS} times in a row, retry shortly")

    async def _send(
        self,
        channel: Channel,
        queue: str,
        query: Query,
        correlation_id: str,
        give_up: float,
        timeout_s: float,
        pack_rows: int = 0,
    ) -> Reply:
        """One send of ``query`` (now on ``channel``, or packed with others at the end
        of this loop turn) and the wait for its reply; raises ConnectionLost when the
        connection drops first (its reply address died)."""
        loop = asyncio.get_running_loop()
        future = self._pending.open(correlation_id)
        try:
            if self._outbox.max_rows > 1 and pack_rows != 1:
                self._hold(queue, query, correlation_id, pack_rows)
            else:
                self._publish_query(channel, queue, query, correlation_id)
            # a little past the deadline, so an expired query's dead-letter answer wins
            remaining_s = max(0.0, give_up - loop.time())
            return await asyncio.wait_for(future, timeout=remaining_s + EXPIRY_GRACE_S)
        except TimeoutError as exc:
            raise no_answer(queue, timeout_s) from exc
        finally:
            self._pending.discard(correlation_id)
            self._packs.forget_member(correlation_id)

    def _publish_query(self, channel: Channel, queue: str, query: Query, cid: str) -> None:
        body, headers = encode_query(query)
        expiration_ms = max(1, int(query.deadline_ms - now_ms()))
        props = BasicProperties(
            content_type=CONTENT_TYPE,
            correlation_id=cid,
            reply_to=DIRECT_REPLY_TO,
            headers=headers,
            expiration=str(expiration_ms),
            delivery_mode=1,
        )
        try:
            self._publish(channel, queue, body, props, cid, mandatory=True)
        except AMQPError as exc:  # the channel or connection is closing under us
            self._link.lost()
            raise ConnectionLost(f"the broker connection is closing: {exc!r}") from exc
        self.messages_sent += 1
        self.queries_sent += query.count

    # -- packing queries that arrive together ---------------------------------------

    def _hold(self, queue: str, query: Query, cid: str, pack_rows: int) -> None:
        """Put ``query`` in the outbox; the first one in schedules the flush."""
        if self._outbox.add(queue, query, cid, max_rows=pack_rows):
            loop = asyncio.get_running_loop()
            window_ms = self._settings.edge_batch_window_ms
            if window_ms > 0:
                left_ms = (query.slo_deadline_ms or query.deadline_ms) - now_ms()
                window_ms = min(window_ms, max(0.0, left_ms) / 10)
            if window_ms > 0:
                self._flush_handle = loop.call_later(window_ms / 1000, self._flush)
            else:
                self._flush_handle = loop.call_soon(self._flush)
        elif self._settings.edge_batch_window_ms > 0 and self._outbox.full():
            self._flush()

    def _flush(self) -> None:
        """Publish what the outbox holds, packed by variant, on the channel open now."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        for message in self._outbox.take():
            waiting = [w for w in message if w.correlation_id in self._pending]
            if waiting:
                self._send_waiting(waiting)

    def _send_waiting(self, waiting: list[Waiting]) -> None:
        first = waiting[0]
        try:
            channel = self._link.channel
            if channel is None:
                raise ConnectionLost("the broker connection dropped before the query left")
            if len(waiting) == 1:
                self._publish_query(channel, first.queue, first.query, first.correlation_id)
                return
            pack_id = uuid.uuid4().hex
            packed = pack_queries([w.query for w in waiting], pack_id)
            self._packs.open(pack_id, [(w.correlation_id, w.rows) for w in waiting])
            self._publish_query(channel, first.queue, packed, pack_id)
        except ConnectionLost as exc:
            for w in waiting:
                self._packs.forget_member(w.correlation_id)
                self._pending.resolve(w.correlation_id, exc)

    def _publish(
        self,
        channel: Channel,
        routing_key: str,
        body: bytes,
        props: BasicProperties,
        correlation_id: str,
        *,
        mandatory: bool,
    ) -> None:
        """Every publish on the confirm-mode channel takes the next delivery tag."""
        channel.basic_publish("", routing_key, body, props, mandatory=mandatory)
        self._confirms.published(correlation_id)

    def _resolve(self, correlation_id: str, result: Reply | Exception) -> None:
        """Answer the query, or every member of the packed message, ``correlation_id``."""
        members = self._packs.take(correlation_id)
        if members is None:
            self._pending.resolve(correlation_id, result)
        elif isinstance(result, Exception):
            for request_id, _ in members:
                self._pending.resolve(request_id, result)
        else:
            for reply in split_reply(result, members):
                self._pending.resolve(reply.request_id, reply)

    def _waited_for(self, correlation_id: str) -> bool:
        return correlation_id in self._pending or correlation_id in self._packs

    def _on_reply(
        self, _ch: Channel, _method: Basic.Deliver, props: BasicProperties, body: bytes
    ) -> None:
        cid = props.correlation_id or ""
        if self._waited_for(cid):
            try:
                self._resolve(cid, decode_reply(body, props.headers or {}))
            except ValueError as exc:
                self._resolve(cid, BrokerUnavailable(f"malformed reply from a worker: {exc}"))

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        tag = int(method.delivery_tag)
        nacked = isinstance(method, Basic.Nack)
        confirmed = self._confirms.settle(tag, multiple=bool(getattr(method, "multiple", False)))
        if nacked:
            for cid in confirmed:
                self._resolve(
                    cid,
                    QueueFull(
                        "the variant's queue is full; slow down and retry after the "
                        "Retry-After delay",
                        retry_after_s=1,
                    ),
                )

    def _on_return(
        self, _ch: Channel, method: Basic.Return, props: BasicProperties, _body: bytes
    ) -> None:
        self._resolve(props.correlation_id or "", no_worker(method.routing_key))

    def _on_expired(
        self, ch: Channel, _method: Basic.Deliver, props: BasicProperties, _body: bytes
    ) -> None:
        """An online query outlived its deadline in a queue: answer it, never run it."""
        cid = props.correlation_id or ""
        error = DeadlineExceeded(
            "the query expired in its queue before a worker could take it; "
            "the variant is overloaded, retry later or relax the latency objective"
        )
        self._expired_answered += message_count(props.headers or {})
        if self._waited_for(cid):
            self._resolve(cid, error)
            return
        if props.reply_to:
            reply_headers = {
                "request_id": cid,
                "ok": False,
                "error_code": error.code,
                "error_message": error.message,
            }
            self._publish(
                ch,
                props.reply_to,
                b"",
                BasicProperties(correlation_id=cid, headers=reply_headers),
                cid,
                mandatory=False,
            )

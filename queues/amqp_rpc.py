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
once (a broker that is down, not a connection dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from pika.adapters.asyncio_connection import AsyncioConnection
from pika.channel import Channel
from pika.exceptions import AMQPError
from pika.spec import Basic, BasicProperties

from queues import topology
from queues.errors import BrokerUnavailable, DeadlineExceeded, NoWorker, QueueFull
from queues.messages import CONTENT_TYPE, Query, Reply, decode_reply, encode_query, now_ms
from queues.settings import BrokerSettings

log = logging.getLogger(__name__)
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
EXPIRY_GRACE_S = 0.2
MAX_SENDS = 3  # a query sent on this many connections, each of them lost, is refused


class ConnectionLost(BrokerUnavailable):
    """The connection a query was sent on dropped before its reply came: its reply
    address died with it. :meth:`AmqpQueryClient.call` sends the query again."""


def reconnect_wait_s(*, now: float, lost_at: float | None, grace_s: float, give_up: float) -> float:
    """How long a query may still wait for the broker connection to come back: until
    ``grace_s`` after it was lost and never past the query's own ``give_up`` time; 0
    while connected (``lost_at`` None) or once the outage is older than the grace (the
    broker is down: refuse at once rather than hold every query)."""
    if lost_at is None:
        return 0.0
    return max(0.0, min(lost_at + grace_s, give_up) - now)


class AmqpQueryClient:
    def __init__(self, settings: BrokerSettings) -> None:
        self._settings = settings
        # explicit parameters from the one URL parser: pika's own reads `//` as vhost ""
        self._params = settings.amqp().pika_parameters(
            heartbeat_s=settings.broker_heartbeat_s, socket_timeout_s=5, connection_attempts=1
        )
        self._prefix = settings.queue_prefix
        self._connection: AsyncioConnection | None = None
        self._channel: Channel | None = None
        self._pending: dict[str, asyncio.Future[Reply]] = {}
        self._unconfirmed: deque[tuple[int, str]] = deque()
        self._delivery_tags = itertools.count(1)
        self._closing = False
        self._reconnect_task: asyncio.Task[None] | None = None
        self._expired_answered = 0
        self._lost_at: float | None = None  # loop time the connection was lost; None: up
        self._connected = asyncio.Event()

    @property
    def connected(self) -> bool:
        return self._channel is not None and self._channel.is_open

    @property
    def expired_answered(self) -> int:
        return self._expired_answered

    # -- connection lifecycle -------------------------------------------------------

    async def start(self) -> None:
        """Connect; if the broker is down, keep retrying in the background (queries get
        503 broker_unavailable meanwhile) rather than refusing to start."""
        self._closing = False
        try:
            await self._connect()
        except BrokerUnavailable as exc:
            log.warning("%s; retrying in the background", exc.message)
            self._lost_at = asyncio.get_running_loop().time()
            self._reconnect_task = asyncio.get_running_loop().create_task(self._reconnect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        opened: asyncio.Future[Channel] = loop.create_future()

        def on_open_error(_conn: AsyncioConnection, exc: BaseException | str) -> None:
            if not opened.done():
                opened.set_exception(
                    BrokerUnavailable(
                        f"cannot reach the broker at {self._settings.redacted_url()}: {exc}"
                    )
                )

        def on_channel(channel: Channel) -> None:
            channel.add_on_close_callback(self._on_channel_closed)
            channel.add_on_return_callback(self._on_return)
            channel.confirm_delivery(self._on_confirm, callback=lambda _f: on_confirming(channel))

        def on_confirming(channel: Channel) -> None:
            # replies may only be published once the reply consumer exists
            channel.basic_consume(
                DIRECT_REPLY_TO,
                self._on_reply,
                auto_ack=True,
                callback=lambda _f: self._declare_dead_letters(channel, on_ready),
            )

        def on_ready(channel: Channel) -> None:
            if not opened.done():
                opened.set_result(channel)

        def on_open(conn: AsyncioConnection) -> None:
            conn.channel(on_open_callback=on_channel)

        connection = AsyncioConnection(
            self._params,
            on_open_callback=on_open,
            on_open_error_callback=on_open_error,
            on_close_callback=self._on_connection_closed,
            custom_ioloop=loop,
        )
        self._connection = connection
        try:
            self._channel = await asyncio.wait_for(opened, timeout=10)
        except TimeoutError as exc:
            with contextlib.suppress(Exception):
                connection.close()
            raise BrokerUnavailable(
                f"the broker at {self._settings.redacted_url()} did not answer in 10 s"
            ) from exc
        self._delivery_tags = itertools.count(1)
        self._unconfirmed.clear()
        self._lost_at = None
        self._connected.set()

    def _declare_dead_letters(self, channel: Channel, on_ready: Callable[[Channel], None]) -> None:
        dlx = topology.dead_letter_exchange(self._prefix)
        dlq = topology.dead_letter_queue(self._prefix)

        def declare_queue(_frame: Any) -> None:
            channel.queue_declare(
                dlq,
                durable=True,
                arguments=topology.dead_letter_queue_arguments(),
                callback=bind,
            )

        def bind(_frame: Any) -> None:
            channel.queue_bind(dlq, dlx, callback=consume)

        def consume(_frame: Any) -> None:
            channel.basic_consume(
                dlq, self._on_expired, auto_ack=True, callback=lambda _f: on_ready(channel)
            )

        channel.exchange_declare(dlx, exchange_type="fanout", durable=True, callback=declare_queue)

    async def close(self) -> None:
        self._closing = True
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
        self._fail_all(BrokerUnavailable("the gateway is shutting down"))
        if self._connection is not None and not self._connection.is_closed:
            closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

            def on_closed(*_args: object) -> None:
                if not closed.done():
                    closed.set_result(None)

            self._connection.add_on_close_callback(on_closed)
            self._connection.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(closed, timeout=5)
        self._channel = None

    def _on_channel_closed(self, _channel: Channel, reason: BaseException) -> None:
        self._lost()
        self._fail_all(ConnectionLost(f"the broker channel closed: {reason}"))
        if self._connection is not None and self._connection.is_open:
            self._connection.close()

    def _on_connection_closed(self, _conn: AsyncioConnection, reason: BaseException) -> None:
        self._lost()
        self._fail_all(ConnectionLost(f"lost the broker connection: {reason}"))
        if not self._closing and self._reconnect_task is None:
            self._reconnect_task = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        delay_s = 0.2
        try:
            while not self._closing:
                await asyncio.sleep(delay_s)
                try:
                    await self._connect()
                    log.info("reconnected to the broker")
                    return
                except BrokerUnavailable as exc:
                    log.warning("broker still unavailable: %s", exc.message)
                    delay_s = min(delay_s * 2, 5.0)
        finally:
            self._reconnect_task = None

    def _lost(self) -> None:
        self._channel = None
        self._connected.clear()
        if self._lost_at is None:
            self._lost_at = asyncio.get_running_loop().time()

    def _fail_all(self, error: Exception) -> None:
        pending, self._pending = self._pending, {}
        self._unconfirmed.clear()
        for future in pending.values():
            if not future.done():
                future.set_exception(error)

    # -- the query path -------------------------------------------------------------

    async def call(self, queue: str, query: Query, *, timeout_s: float) -> Reply:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + timeout_s
        correlation_id = query.request_id or uuid.uuid4().hex
        lost = ConnectionLost("no connection")
        for _send in range(MAX_SENDS):
            channel = await self._channel_by(give_up)
            try:
                return await self._send(channel, queue, query, correlation_id, give_up, timeout_s)
            except ConnectionLost as exc:
                lost = exc
                log.debug("query %s lost with its connection, sent again", correlation_id)
        raise BrokerUnavailable(f"{lost.message}; lost {MAX_SENDS} times in a row, retry shortly")

    async def _channel_by(self, give_up: float) -> Channel:
        """The open channel, waiting for a reconnect in progress (:func:`reconnect_wait_s`)."""
        if self._channel is None or not self._channel.is_open:
            loop = asyncio.get_running_loop()
            wait_s = reconnect_wait_s(
                now=loop.time(),
                lost_at=self._lost_at,
                grace_s=self._settings.broker_reconnect_grace_s,
                give_up=give_up,
            )
            if wait_s > 0 and not self._closing:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._connected.wait(), timeout=wait_s)
        channel = self._channel
        if channel is None or not channel.is_open:
            raise BrokerUnavailable(
                f"not connected to the broker at {self._settings.redacted_url()}; retry shortly"
            )
        return channel

    async def _send(
        self,
        channel: Channel,
        queue: str,
        query: Query,
        correlation_id: str,
        give_up: float,
        timeout_s: float,
    ) -> Reply:
        """One send of ``query`` on ``channel`` and the wait for its reply; raises
        ConnectionLost when the connection drops first (its reply address died)."""
        body, headers = encode_query(query)
        expiration_ms = max(1, int(query.deadline_ms - now_ms()))
        props = BasicProperties(
            content_type=CONTENT_TYPE,
            correlation_id=correlation_id,
            reply_to=DIRECT_REPLY_TO,
            headers=headers,
            expiration=str(expiration_ms),
            delivery_mode=1,
        )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Reply] = loop.create_future()
        self._pending[correlation_id] = future
        try:
            try:
                self._publish(channel, queue, body, props, correlation_id, mandatory=True)
            except AMQPError as exc:  # the channel or connection is closing under us
                self._lost()
                raise ConnectionLost(f"the broker connection is closing: {exc!r}") from exc
            # a little past the deadline, so an expired query's dead-letter answer wins
            remaining_s = max(0.0, give_up - loop.time())
            return await asyncio.wait_for(future, timeout=remaining_s + EXPIRY_GRACE_S)
        except TimeoutError as exc:
            raise DeadlineExceeded(
                f"no answer from variant queue {queue} within {timeout_s * 1000:.0f} ms; "
                "raise timeout_ms or relax the latency objective"
            ) from exc
        finally:
            self._pending.pop(correlation_id, None)

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
        self._unconfirmed.append((next(self._delivery_tags), correlation_id))

    def _resolve(self, correlation_id: str, result: Reply | Exception) -> None:
        future = self._pending.get(correlation_id)
        if future is None or future.done():
            return
        if isinstance(result, Exception):
            future.set_exception(result)
        else:
            future.set_result(result)

    def _on_reply(
        self, _ch: Channel, _method: Basic.Deliver, props: BasicProperties, body: bytes
    ) -> None:
        cid = props.correlation_id or ""
        if cid in self._pending:
            try:
                self._resolve(cid, decode_reply(body, props.headers or {}))
            except ValueError as exc:
                self._resolve(cid, BrokerUnavailable(f"malformed reply from a worker: {exc}"))

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        tag = int(method.delivery_tag)
        nacked = isinstance(method, Basic.Nack)
        confirmed: list[str] = []
        if getattr(method, "multiple", False):
            while self._unconfirmed and self._unconfirmed[0][0] <= tag:
                confirmed.append(self._unconfirmed.popleft()[1])
        else:
            for index, (seq, cid) in enumerate(self._unconfirmed):
                if seq == tag:
                    del self._unconfirmed[index]
                    confirmed.append(cid)
                    break
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
        self._resolve(
            props.correlation_id or "",
            NoWorker(
                f"no worker serves queue {method.routing_key} (it does not exist); "
                "start a worker for this variant or retry once the scaler has loaded it"
            ),
        )

    def _on_expired(
        self, ch: Channel, _method: Basic.Deliver, props: BasicProperties, _body: bytes
    ) -> None:
        """An online query outlived its deadline in a queue: answer it, never run it."""
        cid = props.correlation_id or ""
        error = DeadlineExceeded(
            "the query expired in its queue before a worker could take it; "
            "the variant is overloaded, retry later or relax the latency objective"
        )
        self._expired_answered += 1
        if cid in self._pending:
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

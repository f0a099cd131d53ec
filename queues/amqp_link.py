"""The gateway's one broker connection and channel, and their recovery.

:class:`QueryLink` opens the connection (pika's asyncio adapter on the gateway's own
loop) and its confirm-mode channel, reconnects in the background when either drops, and
tells the query client (:mod:`queues.amqp_rpc`) through :class:`LinkCallbacks`: a
connection that drops fails every query in flight with :class:`ConnectionLost` (their
reply address died with it, so the client sends them again), and a query asking for the
channel while the link is down waits for the reconnect within
``broker_reconnect_grace_s`` of the drop and its own deadline (:func:`reconnect_wait_s`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pika.adapters.asyncio_connection import AsyncioConnection
from pika.channel import Channel

from queues.amqp_channel import ChannelHandlers, open_query_connection
from queues.errors import BrokerUnavailable
from queues.settings import BrokerSettings

log = logging.getLogger(__name__)
OPEN_TIMEOUT_S = 10.0
RECONNECT_FIRST_S = 0.2
RECONNECT_MAX_S = 5.0


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


@dataclass(frozen=True, slots=True)
class LinkCallbacks:
    """What the query client hears: pika's deliveries on the channel, and the link's
    own events (each new channel; a drop, or the shutdown, with the error for every
    query in flight)."""

    on_return: Callable[..., None]
    on_confirm: Callable[[Any], None]
    on_reply: Callable[..., None]
    on_expired: Callable[..., None]
    on_connected: Callable[[], None]
    on_lost: Callable[[Exception], None]


class QueryLink:
    def __init__(self, settings: BrokerSettings, callbacks: LinkCallbacks) -> None:
        self._settings = settings
        self._callbacks = callbacks
        # explicit parameters from the one URL parser: pika's own reads `//` as vhost ""
        self._params = settings.amqp().pika_parameters(
            heartbeat_s=settings.broker_heartbeat_s, socket_timeout_s=5, connection_attempts=1
        )
        self._connection: AsyncioConnection | None = None
        self._channel: Channel | None = None
        self._closing = False
        self._reconnect_task: asyncio.Task[None] | None = None
        self._lost_at: float | None = None  # loop time the connection was lost; None: up
        self._connected = asyncio.Event()

    @property
    def channel(self) -> Channel | None:
        """The open channel, or None."""
        channel = self._channel
        return channel if channel is not None and channel.is_open else None

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
        callbacks = self._callbacks
        handlers = ChannelHandlers(
            on_connection_closed=self._on_connection_closed,
            on_channel_closed=self._on_channel_closed,
            on_return=callbacks.on_return,
            on_confirm=callbacks.on_confirm,
            on_reply=callbacks.on_reply,
            on_expired=callbacks.on_expired,
        )
        connection, opened = open_query_connection(
            self._params,
            handlers,
            prefix=self._settings.queue_prefix,
            broker=self._settings.redacted_url(),
        )
        self._connection = connection
        try:
            channel = await asyncio.wait_for(opened, timeout=OPEN_TIMEOUT_S)
        except TimeoutError as exc:
            with contextlib.suppress(Exception):
                connection.close()
            raise BrokerUnavailable(
                f"the broker at {self._settings.redacted_url()} did not answer in "
                f"{OPEN_TIMEOUT_S:.0f} s"
            ) from exc
        self.opened(channel)

    def opened(self, channel: Channel) -> None:
        """A new channel is up: queries waiting for it go on."""
        self._channel = channel
        self._callbacks.on_connected()
        self._lost_at = None
        self._connected.set()

    async def close(self) -> None:
        """Stop reconnecting, fail what is in flight, close the connection (5 s at most)."""
        self._closing = True
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
        self._callbacks.on_lost(BrokerUnavailable("the gateway is shutting down"))
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
        self.lost()
        self._callbacks.on_lost(ConnectionLost(f"the broker channel closed: {reason}"))
        if self._connection is not None and self._connection.is_open:
            self._connection.close()

    def _on_connection_closed(self, _conn: AsyncioConnection, reason: BaseException) -> None:
        self.lost()
        self._callbacks.on_lost(ConnectionLost(f"lost the broker connection: {reason}"))
        if not self._closing and self._reconnect_task is None:
            self._reconnect_task = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        delay_s = RECONNECT_FIRST_S
        try:
            while not self._closing:
                await asyncio.sleep(delay_s)
                try:
                    await self._connect()
                    log.info("reconnected to the broker")
                    return
                except BrokerUnavailable as exc:
                    log.warning("broker still unavailable: %s", exc.message)
                    delay_s = min(delay_s * 2, RECONNECT_MAX_S)
        finally:
            self._reconnect_task = None

    def lost(self) -> None:
        """The channel is gone (pika said so, or a publish found it closing)."""
        self._channel = None
        self._connected.clear()
        if self._lost_at is None:
            self._lost_at = asyncio.get_running_loop().time()

    async def channel_by(self, give_up: float) -> Channel:
        """The open channel, waiting for a reconnect in progress (:func:`reconnect_wait_s`)."""
        if self.channel is None:
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
        channel = self.channel
        if channel is None:
            raise BrokerUnavailable(
                f"not connected to the broker at {self._settings.redacted_url()}; retry shortly"
            )
        return channel

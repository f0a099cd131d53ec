"""Opening the query client's connection and its one channel, in the order RabbitMQ
needs: the channel in confirm mode, then the direct reply-to consumer (replies may only
be published once it exists), then the dead-letter queue of expired queries and its
consumer. Only then is the channel ready for queries."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pika import ConnectionParameters
from pika.adapters.asyncio_connection import AsyncioConnection
from pika.channel import Channel

from queues import topology
from queues.errors import BrokerUnavailable

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"


@dataclass(frozen=True, slots=True)
class ChannelHandlers:
    """The client's callbacks for what pika reports on the connection and channel."""

    on_connection_closed: Callable[[AsyncioConnection, BaseException], None]
    on_channel_closed: Callable[[Channel, BaseException], None]
    on_return: Callable[..., None]
    on_confirm: Callable[[Any], None]
    on_reply: Callable[..., None]
    on_expired: Callable[..., None]


def open_query_connection(
    params: ConnectionParameters, handlers: ChannelHandlers, *, prefix: str, broker: str
) -> tuple[AsyncioConnection, asyncio.Future[Channel]]:
    """Start connecting on the running loop: the connection now, and a future of its
    channel once ready (a :class:`BrokerUnavailable` if the broker cannot be reached,
    described by ``broker``, its redacted URL)."""
    loop = asyncio.get_running_loop()
    opened: asyncio.Future[Channel] = loop.create_future()

    def on_open_error(_conn: AsyncioConnection, exc: BaseException | str) -> None:
        if not opened.done():
            opened.set_exception(BrokerUnavailable(f"cannot reach the broker at {broker}: {exc}"))

    def on_channel(channel: Channel) -> None:
        channel.add_on_close_callback(handlers.on_channel_closed)
        channel.add_on_return_callback(handlers.on_return)
        channel.confirm_delivery(handlers.on_confirm, callback=lambda _f: on_confirming(channel))

    def on_confirming(channel: Channel) -> None:
        # replies may only be published once the reply consumer exists
        channel.basic_consume(
            DIRECT_REPLY_TO,
            handlers.on_reply,
            auto_ack=True,
            callback=lambda _f: _declare_dead_letters(channel, prefix, handlers, on_ready),
        )

    def on_ready(channel: Channel) -> None:
        if not opened.done():
            opened.set_result(channel)

    def on_open(conn: AsyncioConnection) -> None:
        conn.channel(on_open_callback=on_channel)

    connection = AsyncioConnection(
        params,
        on_open_callback=on_open,
        on_open_error_callback=on_open_error,
        on_close_callback=handlers.on_connection_closed,
        custom_ioloop=loop,
    )
    return connection, opened


def _declare_dead_letters(
    channel: Channel,
    prefix: str,
    handlers: ChannelHandlers,
    on_ready: Callable[[Channel], None],
) -> None:
    dlx = topology.dead_letter_exchange(prefix)
    dlq = topology.dead_letter_queue(prefix)

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
            dlq, handlers.on_expired, auto_ack=True, callback=lambda _f: on_ready(channel)
        )

    channel.exchange_declare(dlx, exchange_type="fanout", durable=True, callback=declare_queue)

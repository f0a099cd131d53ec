"""The gateway's side of a query: publish it to a variant queue, await the reply.

Two transports behind one interface: AMQP (RabbitMQ, pika on the gateway's event loop,
replies through direct reply-to) and the in-process transport of the embedded default
(kombu's memory transport). Both raise the same errors from :mod:`queues.errors`.
"""

from __future__ import annotations

from typing import Protocol

from queues.messages import Query, Reply
from queues.settings import BrokerSettings


class QueryClient(Protocol):
    messages_sent: int  # query messages published (a packed message counts once)
    queries_sent: int  # queries published in them

    @property
    def connected(self) -> bool: ...

    @property
    def expired_answered(self) -> int:
        """Queries that expired in a queue and were answered with a deadline error."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def call(
        self, queue: str, query: Query, *, timeout_s: float, pack_rows: int = 0
    ) -> Reply:
        """Publish ``query`` to ``queue`` and return the worker's reply. ``pack_rows``: the
        most rows a message packed with other queries for that queue may hold (the
        variant's batch; 0: the client's own limit, 1: never packed).

        Raises QueueFull (the queue is at its length limit), NoWorker (no such queue:
        nobody serves the variant), BrokerUnavailable, DeadlineExceeded (no reply
        within ``timeout_s``).
        """
        ...


def create_query_client(settings: BrokerSettings) -> QueryClient:
    if settings.embedded:
        from queues.memory_rpc import MemoryQueryClient

        return MemoryQueryClient(settings)
    from queues.amqp_rpc import AmqpQueryClient

    return AmqpQueryClient(settings)

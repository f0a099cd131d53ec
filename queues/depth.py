"""Queue depth and consumer counts, read from the broker by passive declares.

Works on RabbitMQ and on kombu's memory transport alike. A missing queue is reported as
absent (RabbitMQ closes the channel on a passive declare of a missing queue; the probe
opens a new one).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kombu import Connection
from kombu.exceptions import ChannelError, OperationalError
from kombu.exceptions import ConnectionError as AmqpConnectionError

from queues.errors import BrokerUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class QueueDepth:
    messages: int
    consumers: int


class QueueProbe:
    """Not thread-safe: one probe per thread."""

    def __init__(self, connect: Callable[[], Connection]) -> None:
        self._connect = connect
        self._connection: Connection | None = None
        self._channel: Any = None

    def _open_channel(self) -> Any:
        if self._connection is None:
            self._connection = self._connect()
        if self._channel is None:
            self._channel = self._connection.channel()
        return self._channel

    def depth(self, queue: str) -> QueueDepth | None:
        """Messages ready and consumers of ``queue``; None when it does not exist."""
        try:
            channel = self._open_channel()
            _name, messages, consumers = channel.queue_declare(queue=queue, passive=True)
        except ChannelError:
            self._channel = None  # the broker closed it
            return None
        # the broker closing the connection (CONNECTION_FORCED) is an AMQP connection
        # error, none of the others: uncaught, it ended the worker monitor's thread
        except (OperationalError, AmqpConnectionError, OSError, ConnectionError) as exc:
            self.close()
            raise BrokerUnavailable(f"cannot read queue depths from the broker: {exc}") from exc
        return QueueDepth(int(messages), int(consumers))

    def depths(self, queues: Iterable[str]) -> dict[str, QueueDepth]:
        found: dict[str, QueueDepth] = {}
        for queue in queues:
            depth = self.depth(queue)
            if depth is not None:
                found[queue] = depth
        return found

    def close(self) -> None:
        if self._connection is not None:
            try:
                self._connection.release()
            except Exception:  # closing a broken connection: nothing left to do
                log.debug("closing the probe's connection failed", exc_info=True)
        self._connection = None
        self._channel = None

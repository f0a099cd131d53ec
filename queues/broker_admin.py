"""Removing from the broker what was declared for deleted variants or a deleted app.

kombu on both transports: RabbitMQ through the canonical URL of :mod:`queues.amqp_url`
(the vhost pika uses too), the in-process memory transport in the embedded mode. A queue
is deleted only when nobody consumes it any more (``if_unused``): a worker that still
serves it would otherwise be cancelled and declare it again on reconnecting.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from kombu import Connection

from queues.depth import QueueDepth, QueueProbe
from queues.errors import InfaasError
from queues.memory_rpc import memory_connection
from queues.settings import BrokerSettings
from queues.topology import Declared

log = logging.getLogger(__name__)
CONNECT_TIMEOUT_S = 5.0


def broker_connection(settings: BrokerSettings) -> Connection:
    """A fresh kombu connection to the configured broker (the caller releases it)."""
    if settings.embedded:
        return memory_connection(settings.url)
    return Connection(settings.url, connect_timeout=CONNECT_TIMEOUT_S)


def read_depths(settings: BrokerSettings, queues: Iterable[str]) -> dict[str, QueueDepth] | None:
    """Messages ready and consumers of each queue, read on one connection (a queue that
    does not exist has none of either); None, logged, when the broker cannot be read."""
    names = list(queues)
    probe = QueueProbe(lambda: broker_connection(settings))
    try:
        found = probe.depths(names)
    except InfaasError as exc:
        log.warning("cannot read the depths of %s: %s", ", ".join(names), exc.message)
        return None
    finally:
        probe.close()
    return {name: found.get(name, QueueDepth(0, 0)) for name in names}


@dataclass(frozen=True, slots=True)
class Removal:
    """The queues and exchanges a removal deleted, and what it left (name: why)."""

    queues: tuple[str, ...] = ()
    exchanges: tuple[str, ...] = ()
    kept: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "deleted_queues": list(self.queues),
            "deleted_exchanges": list(self.exchanges),
            "kept": dict(self.kept),
        }


def remove_declared(
    connect: Callable[[], Connection],
    declared: Declared,
    *,
    wait_unused_s: float = 0.0,
    retry_s: float = 0.25,
) -> Removal:
    """Delete ``declared``'s queues (each once unused; a queue still consumed after
    ``wait_unused_s`` is kept) and then its exchanges (not those of a kept queue).
    A queue that is already gone counts as deleted. Broker errors propagate."""
    deadline = time.monotonic() + wait_unused_s
    pending = list(declared.queues)
    deleted: list[str] = []
    exchanges: list[str] = []
    kept: dict[str, str] = {}
    with connect() as conn:
        channel = conn.channel()
        while True:
            refused: list[str] = []
            for queue in pending:
                try:
                    channel.queue_delete(queue=queue, if_unused=True)
                    deleted.append(queue)
                except conn.channel_errors as exc:  # in use: the broker closed the channel
                    kept[queue] = f"still consumed ({exc})"
                    refused.append(queue)
                    channel = conn.channel()
            if not refused or time.monotonic() >= deadline:
                break
            pending = refused
            time.sleep(retry_s)
        for queue in deleted:
            kept.pop(queue, None)
        for exchange in declared.exchanges:
            if kept:  # a kept queue may still be bound to it
                kept[exchange] = f"kept with the queue(s) {', '.join(sorted(kept))}"
                continue
            channel.exchange_delete(exchange=exchange)
            exchanges.append(exchange)
        if conn.transport.driver_type == "memory":
            # kombu's virtual queue_delete only drops bindings (a variant queue on the
            # default exchange has none) and its exchange_delete sizes, so re-creates,
            # the queues bound: the memory transport's own removal, once all is unbound
            for queue in declared.queues:
                if queue not in kept:
                    channel._delete(queue)
    for name, why in kept.items():
        log.warning("left %s on the broker: %s", name, why)
    return Removal(tuple(deleted), tuple(exchanges), kept)

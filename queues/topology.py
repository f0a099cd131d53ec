"""Queue names and queue arguments, as pure functions.

Every process that declares a queue uses these helpers, so the arguments agree (RabbitMQ
refuses a redeclaration with other arguments). Names follow DESIGN.md:
``<prefix>.<app>.<variant>`` online, ``<prefix>.<app>.batch`` offline.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

_PREFIX_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_PART_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{0,199}$")
BATCH_SUFFIX = "batch"


def check_prefix(prefix: str) -> str:
    if not _PREFIX_RE.match(prefix):
        raise ValueError(
            f"queue prefix {prefix!r} must be 1-32 characters of [a-z0-9_-], "
            "starting with a letter or digit"
        )
    return prefix


def _check_part(kind: str, value: str) -> str:
    if not _PART_RE.match(value):
        raise ValueError(f"{kind} {value!r} cannot be part of a queue name")
    return value


def variant_queue(prefix: str, app: str, variant: str) -> str:
    """The online queue of one variant of one app."""
    return f"{prefix}.{_check_part('app', app)}.{_check_part('variant', variant)}"


def batch_queue(prefix: str, app: str) -> str:
    """The low-priority queue of an app's offline (batch) work."""
    return f"{prefix}.{_check_part('app', app)}.{BATCH_SUFFIX}"


def batch_exchange(prefix: str, app: str) -> str:
    """The direct exchange the app's batch chunks are published to (named as its queue)."""
    return batch_queue(prefix, app)


# Control queues (registrations: variant generation, profiling; loading and unloading)
# are quorum queues: replicated through Raft once the broker is a cluster, durable on one
# node. The type is part of the name, since RabbitMQ refuses to redeclare a queue as
# another type: the classic ``P.control.HW`` of earlier versions is left alone, and the
# registration sweeper sends again what was recorded but sits in no current queue.
CONTROL_QUEUE_TYPE = "quorum"


def control_queue(prefix: str, hardware: str) -> str:
    """Celery tasks that need one kind of hardware (variant generation, profiling)."""
    return f"{prefix}.control.{_check_part('hardware', hardware)}.{CONTROL_QUEUE_TYPE}"


def control_queue_arguments() -> dict[str, Any]:
    """What Celery declares every control queue with (``task_create_missing_queue_type``
    in :mod:`queues.celery_app` makes it so for every queue it creates by name)."""
    return {"x-queue-type": CONTROL_QUEUE_TYPE}


def dead_letter_exchange(prefix: str) -> str:
    return f"{prefix}.dlx"


def dead_letter_queue(prefix: str) -> str:
    """Where expired online queries land; the gateway answers them with a deadline error."""
    return f"{prefix}.expired"


@dataclass(frozen=True, slots=True)
class Declared:
    """What the system declares on the broker for some variants or for one app, so that
    deleting them removes it. The dead-letter exchange and queue and the control queues
    are shared by every app and stay."""

    queues: tuple[str, ...] = ()
    exchanges: tuple[str, ...] = ()


def declared_for_variants(prefix: str, app: str, variants: Iterable[str]) -> Declared:
    """Each variant's online queue (on the default exchange: no exchange of its own)."""
    return Declared(queues=tuple(variant_queue(prefix, app, v) for v in sorted(variants)))


def declared_for_app(prefix: str, app: str) -> Declared:
    """The app's batch queue and the exchange it is bound to (its variants' queues go
    with its models)."""
    return Declared(queues=(batch_queue(prefix, app),), exchanges=(batch_exchange(prefix, app),))


def parse_variant_queue(prefix: str, name: str) -> tuple[str, str] | None:
    """(app, variant) of an online queue name, or None for any other queue."""
    head = f"{prefix}."
    if not name.startswith(head):
        return None
    app, sep, variant = name[len(head) :].partition(".")
    if not sep or not variant or variant == BATCH_SUFFIX or app == "control":
        return None
    return app, variant


def variant_queue_arguments(prefix: str, max_length: int) -> dict[str, Any]:
    """Arguments of every online queue.

    A bounded length with ``reject-publish`` turns overload into a publisher nack (the
    gateway answers 429) instead of unbounded latency; expired messages go to the
    dead-letter exchange so they are still answered, never run.
    """
    if max_length < 1:
        raise ValueError(f"queue max length must be at least 1, got {max_length}")
    return {
        "x-max-length": max_length,
        "x-overflow": "reject-publish",
        "x-dead-letter-exchange": dead_letter_exchange(prefix),
    }


def batch_queue_arguments() -> dict[str, Any]:
    """Batch chunks wait as long as they must; they are persistent and never expire."""
    return {"x-max-priority": 10}


def dead_letter_queue_arguments() -> dict[str, Any]:
    """Expired queries nobody answered within a minute are dropped (no gateway is up)."""
    return {"x-message-ttl": 60_000}

"""What deleting a model or an app leaves to do after its records are gone: let loaded
variants finish their queries, ask workers to unload them, remove their queues."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from api_gateway.state import GatewayState
from queues import topology
from queues.broker_admin import Removal, broker_connection, remove_declared

log = logging.getLogger(__name__)
UNLOAD_REPLY_S = 3.0  # how long workers get to answer an unload or a consumer cancel


def remove_from_broker(
    state: GatewayState, declared: topology.Declared, *, cancel: str | None = None
) -> Removal:
    """Delete what was declared for deleted variants or a deleted app; ``cancel``: a
    queue that workers consume through Celery, whom they are asked to stop first. The
    records are gone already, so a broker that fails here is logged and reported, and
    the delete still succeeds."""
    celery = state.services.celery
    try:
        if cancel is not None and celery is not None:
            celery.control.cancel_consumer(cancel, reply=True, timeout=UNLOAD_REPLY_S)
        return remove_declared(
            lambda: broker_connection(state.services.broker),
            declared,
            wait_unused_s=UNLOAD_REPLY_S,
        )
    except Exception as exc:
        log.warning("could not remove %s from the broker: %s", declared, exc)
        reason = f"the broker could not be reached ({type(exc).__name__}: {exc})"
        return Removal(kept=dict.fromkeys(declared.queues + declared.exchanges, reason))


async def drain_and_unload(state: GatewayState, loaded: dict[str, int]) -> list[str]:
    if not loaded:
        return []
    settings = state.settings
    deadline = time.monotonic() + settings.delete_drain_s
    await asyncio.sleep(min(2 * settings.refresh_interval_s, settings.delete_drain_s))
    while time.monotonic() < deadline:
        live = await asyncio.to_thread(state.services.live.snapshot)
        if not any(p.load.outstanding > 0 for v in loaded for p in live.placements(v)):
            break
        await asyncio.sleep(0.25)
    unloaded: list[str] = []
    for variant, workers in sorted(loaded.items()):
        try:
            replies = await asyncio.to_thread(_unload, state, variant, workers)
        except Exception as exc:  # the catalog no longer has it; workers drop it on restart
            log.warning("could not ask workers to unload %s: %s", variant, exc)
            continue
        if replies:
            unloaded.append(variant)
    return unloaded


def _unload(state: GatewayState, variant: str, workers: int) -> list[Any]:
    celery = state.services.celery
    if celery is None:
        return []
    replies: list[Any] = celery.control.broadcast(
        "infaas_unload",
        arguments={"variant": variant},
        reply=True,
        timeout=UNLOAD_REPLY_S,
        limit=workers,
    )
    return replies

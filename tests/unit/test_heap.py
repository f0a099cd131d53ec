"""Freezing the long-lived heap of a serving process (queues.heap)."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from api_gateway.settings import GatewaySettings
from queues.heap import settle_heap
from queues.settings import BrokerSettings
from tests import factories as f


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


class Node:
    def __init__(self) -> None:
        self.me = self


def test_settle_heap_collects_cycles_before_freezing() -> None:
    garbage = Node()  # a reference cycle that only the cyclic collector frees
    gone = weakref.ref(garbage)
    del garbage
    kept = Node()
    frozen = settle_heap()
    assert gone() is None, "the cycle was frozen instead of collected"
    assert frozen > 0  # (the count may fall at once: frozen objects still die by refcount)
    assert not any(obj is kept for obj in gc.get_objects())  # hidden from full passes
    del kept


@pytest.mark.parametrize("freeze_heap", [True, False])
def test_gateway_start_freezes_the_heap_only_when_set(tmp_path: Path, freeze_heap: bool) -> None:
    state = f.gateway_state(tmp_path, GatewaySettings(freeze_heap=freeze_heap))

    async def start_stop() -> int:
        await state.start()
        frozen = gc.get_freeze_count()
        await state.stop()
        return frozen

    frozen = asyncio.run(start_stop())
    assert (frozen > 0) is freeze_heap


@pytest.mark.parametrize("freeze_heap", [True, False])
def test_worker_freezes_the_heap_after_loading_a_model_only_when_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, freeze_heap: bool
) -> None:
    from workers import server as server_module
    from workers.server import VariantServer

    settled: list[str] = []

    def settle() -> int:
        settled.append("settled")
        return 1

    monkeypatch.setattr(server_module, "settle_heap", settle)
    server = VariantServer(
        worker_id="w",
        hardware="cpu",
        broker=BrokerSettings(broker_url=None),
        catalog=None,  # type: ignore[arg-type]
        store=None,  # type: ignore[arg-type]
        cache_dir=tmp_path,
        connect=lambda: None,
        freeze_heap=freeze_heap,
    )
    loaded: Any = SimpleNamespace(replicas=[])
    monkeypatch.setattr(server, "_load_new", lambda _variant_id: loaded)
    monkeypatch.setattr(server, "_resize", lambda _loaded, _replicas: None)
    assert server.load("v1") is loaded
    assert server.load("v1") is loaded  # already loaded: nothing new to settle
    assert settled == (["settled"] if freeze_heap else [])

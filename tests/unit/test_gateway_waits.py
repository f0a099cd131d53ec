"""A query whose chosen variant runs nowhere waits for it to be loaded, within its
deadline (api_gateway/state.py `until_running`); a failed load, or no worker that could
load it, is answered at once with a clear error."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from api_gateway.settings import GatewaySettings
from api_gateway.state import GatewayState
from queues.errors import DeadlineExceeded, LoadFailed, NoWorker
from registry import live_docs
from registry.live_docs import LoadFailure
from registry.livestate import now_ms
from registry.selector import Requirements
from tests import factories as f

COLD = "m.onnx-fp32.cpu-t1"
GPU = "g.onnx-fp32.gpu"


def gateway(tmp_path: Path) -> GatewayState:
    state = f.gateway_state(tmp_path, GatewaySettings(freeze_heap=False))
    snapshot = f.catalog(f.variant(COLD, 0.95, 2.0), f.variant(GPU, 0.99, 1.0, hardware="gpu"))
    catalog = state.services.catalog
    for app in snapshot.apps.values():
        catalog.create_app(app)
    for model in snapshot.models.values():
        catalog.add_model(model)
    for variant in snapshot.variants.values():
        catalog.upsert_variant(variant)
    asyncio.run(state.refresh(force=True))
    return state


def wait(state: GatewayState, req: Requirements, within_s: float) -> str:
    async def go() -> str:
        decision = await state.select(req)
        assert decision.load_request == decision.variant.id
        served = await state.until_running(req, decision, time.perf_counter() + within_s)
        return served.variant.id

    return asyncio.run(go())


def test_the_query_is_sent_once_a_worker_has_loaded_its_variant(tmp_path: Path) -> None:
    state = gateway(tmp_path)
    live = state.services.live
    live.put_worker(f.worker("w1"))
    asyncio.run(state.refresh())

    def load_later() -> None:
        time.sleep(0.3)
        assert [r.variant for r in live_docs.read_load_requests(live)] == [COLD]
        live.put_worker(f.worker("w1", {COLD: "active"}))

    loader = threading.Thread(target=load_later)
    loader.start()
    assert wait(state, Requirements(variant=COLD), within_s=30) == COLD
    loader.join()


def test_the_reason_says_the_query_waited_for_a_load(tmp_path: Path) -> None:
    state = gateway(tmp_path)
    live = state.services.live
    live.put_worker(f.worker("w1"))
    asyncio.run(state.refresh())
    threading.Timer(0.2, live.put_worker, [f.worker("w1", {COLD: "active"})]).start()

    async def go() -> str:
        req = Requirements(variant=COLD)
        decision = await state.select(req)
        served = await state.until_running(req, decision, time.perf_counter() + 30)
        return served.reason

    assert "waiting for a load" in asyncio.run(go())


def test_a_failed_load_is_answered_at_once(tmp_path: Path) -> None:
    state = gateway(tmp_path)
    state.services.live.put_worker(f.worker("w1"))
    failure = LoadFailure(COLD, "w1", "object_missing", "its artifact is gone", now_ms())
    live_docs.put_load_failure(state.services.live, failure)
    asyncio.run(state.refresh())
    with pytest.raises(LoadFailed, match=r"w1 could not load .*its artifact is gone"):
        wait(state, Requirements(variant=COLD), within_s=3600)  # longer than the test's limit


def test_no_worker_of_the_hardware_is_answered_at_once(tmp_path: Path) -> None:
    state = gateway(tmp_path)
    state.services.live.put_worker(f.worker("w1"))  # a CPU worker only
    asyncio.run(state.refresh())
    with pytest.raises(NoWorker, match="infaas worker --hardware gpu"):
        wait(state, Requirements(variant=GPU), within_s=3600)


def test_no_worker_that_loads_on_demand_is_answered_at_once(tmp_path: Path) -> None:
    state = gateway(tmp_path)
    state.services.live.put_worker(replace(f.worker("w1"), loads_on_demand=False))
    asyncio.run(state.refresh())
    with pytest.raises(NoWorker, match="loads variants on demand"):
        wait(state, Requirements(variant=COLD), within_s=3600)


def test_with_a_scaler_running_the_query_waits_for_it_to_add_a_worker(tmp_path: Path) -> None:
    state = gateway(tmp_path)
    live_docs.put_plan(state.services.live, {"now_ms": now_ms(), "tick": 1})
    asyncio.run(state.refresh())
    with pytest.raises(DeadlineExceeded, match="still being loaded"):
        wait(state, Requirements(variant=GPU), within_s=0.3)


def test_a_load_that_never_comes_ends_at_the_deadline(tmp_path: Path) -> None:
    state = gateway(tmp_path)
    state.services.live.put_worker(f.worker("w1"))
    asyncio.run(state.refresh())
    with pytest.raises(DeadlineExceeded, match="longer timeout_ms"):
        wait(state, Requirements(variant=COLD), within_s=0.3)


def test_a_model_less_query_waits_for_a_variant_a_live_worker_can_load(tmp_path: Path) -> None:
    """The GPU variant would answer sooner, but no GPU worker is live: the CPU one is
    chosen, so the query is not refused for want of a GPU."""
    state = gateway(tmp_path)
    state.services.live.put_worker(f.worker("w1"))
    asyncio.run(state.refresh())
    with pytest.raises(DeadlineExceeded, match=COLD):
        wait(state, Requirements(app="digits", min_accuracy=0.9), within_s=0.3)


def test_the_app_view_shows_a_failed_load(tmp_path: Path) -> None:
    from api_gateway.routes.apps import variant_view

    state = gateway(tmp_path)
    failure = LoadFailure(COLD, "w1", "worker_error", "MemoryError: out of memory", now_ms())
    live_docs.put_load_failure(state.services.live, failure)
    asyncio.run(state.refresh())
    variant = state.catalog_snapshot.variants[COLD]
    view = variant_view(variant, state.live_snapshot, state.load_failures)
    assert view["load_failure"] == {
        "worker": "w1",
        "code": "worker_error",
        "message": "MemoryError: out of memory",
    }
    assert variant_view(variant, state.live_snapshot)["load_failure"] is None

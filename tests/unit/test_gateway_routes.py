"""The gateway reads the scaler's published split of each class (api_gateway/state.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from api_gateway.settings import GatewaySettings
from api_gateway.state import GatewayState
from registry.live_docs import PLAN_MAX_AGE_S, SCALER_PLAN_DOC
from registry.livestate import now_ms
from tests import factories as f

KEY = "digits|acc>=0.9"
ROUTES = {KEY: [{"variant": "a", "qps": 3.0}, {"variant": "b", "qps": 1.0}]}


def gateway(tmp_path: Path) -> GatewayState:
    return f.gateway_state(tmp_path, GatewaySettings(freeze_heap=False))


@pytest.mark.parametrize(
    ("age_s", "routed"),
    [(0.0, True), (PLAN_MAX_AGE_S + 5, False), (None, False)],
    ids=["fresh", "stale", "no-plan"],
)
def test_the_index_follows_a_fresh_plan_only(
    tmp_path: Path, age_s: float | None, routed: bool
) -> None:
    state = gateway(tmp_path)
    if age_s is not None:
        doc = {"tick": 7, "now_ms": now_ms() - age_s * 1000, "routes": ROUTES}
        state.services.live.put_doc(SCALER_PLAN_DOC, doc, 60.0)
    asyncio.run(state.refresh(force=True))
    route = state.index.routes.get(KEY)
    assert (route == (("a", 3.0), ("b", 1.0))) is routed


def test_a_plan_without_routes_routes_nothing(tmp_path: Path) -> None:
    state = gateway(tmp_path)
    state.services.live.put_doc(SCALER_PLAN_DOC, {"tick": 1, "now_ms": now_ms()}, 60.0)
    asyncio.run(state.refresh(force=True))
    assert not state.index.routes

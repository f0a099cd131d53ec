"""Liveness, readiness and metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import PlainTextResponse, Response

from api_gateway.deps import State, Tenant
from api_gateway.json_body import JSONBodyRoute
from api_gateway.responses import JSONResponse
from queues.errors import NotFound
from registry import live_docs

router = APIRouter(tags=["health"], route_class=JSONBodyRoute)


@router.get("/healthz", summary="The gateway process is up")
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get("/readyz", summary="The gateway can serve: broker, catalog and live state reachable")
async def readyz(state: State) -> JSONResponse:
    problems = []
    if not state.services.client.connected:
        problems.append("not connected to the broker")
    if state.catalog_error:
        problems.append(f"catalog: {state.catalog_error}")
    if state.live_error:
        problems.append(f"live state: {state.live_error}")
    body = {
        "status": "ready" if not problems else "not ready",
        "problems": problems,
        "workers": len(state.live_snapshot.workers),
        "catalog_revision": state.catalog_snapshot.revision,
    }
    return JSONResponse(body, status_code=200 if not problems else 503)


@router.get("/v1/scaler", summary="The scaler's last plan: actions with reasons, timings")
async def scaler_plan(state: State, _tenant: Tenant) -> JSONResponse:
    doc = await asyncio.to_thread(live_docs.read_plan, state.services.live)
    if doc is None:
        raise NotFound(
            "no scaler has published a plan in the last 5 minutes; start one with `infaas scaler`"
        )
    return JSONResponse(doc)


@router.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
async def metrics(state: State, _tenant: Tenant) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

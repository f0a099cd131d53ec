"""Read-only views of apps, models and variants, with what runs where."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter

from api_gateway.accounting import merged_view
from api_gateway.deps import State, Tenant
from api_gateway.json_body import JSONBodyRoute
from api_gateway.responses import JSONResponse
from api_gateway.state import GatewayState
from queues.errors import UnknownApp
from registry import live_docs
from registry.live_docs import LoadFailure
from registry.livestate import ACTIVE, INACTIVE, LiveSnapshot
from registry.tenancy import DEFAULT_NAMESPACE, Namespace
from registry.types import App, Variant

router = APIRouter(tags=["apps"], route_class=JSONBodyRoute)


def summarize_state(states: list[str]) -> str:
    """One state for a variant from its replicas: inactive when none, active if any is,
    else the worst of the rest."""
    if not states:
        return INACTIVE
    if ACTIVE in states:
        return ACTIVE
    return sorted(states)[0]


def variant_view(
    variant: Variant,
    live: LiveSnapshot,
    failures: Mapping[str, LoadFailure] | None = None,
    names: Namespace = DEFAULT_NAMESPACE,
) -> dict[str, Any]:
    """A variant's record, profile and live state; ``load_failure`` when a worker could
    not load it in the last minute (it is not asked for again until then)."""
    profile = variant.profile
    failure = (failures or {}).get(variant.id)
    placements = live.placements(variant.id)
    return {
        "id": names.outside(variant.id),
        "model": names.outside(variant.model),
        "runtime": variant.runtime,
        "precision": variant.precision,
        "hardware": variant.hardware,
        "threads": variant.threads,
        "status": variant.status,
        "error": variant.error or None,
        "accuracy": profile.accuracy if profile else None,
        "metric": profile.metric if profile else None,
        "latency_ms": {str(k): v for k, v in sorted(profile.latency_ms.items())} if profile else {},
        "latency_p99_ms": {str(k): v for k, v in sorted(profile.latency_p99_ms.items())}
        if profile
        else {},
        "max_batch": profile.max_batch if profile else None,
        "memory_mb": profile.memory_mb if profile else None,
        "load_ms": profile.load_ms if profile else None,
        "saturation_qps": profile.saturation_qps if profile else None,
        "cost_per_hour": variant.cost_per_hour,
        "instance_class": variant.instance_class,
        "state": summarize_state([p.load.state for p in placements]),
        "replicas": [
            {"worker": p.worker.worker_id, "state": p.load.state, "replicas": p.load.replicas}
            for p in placements
        ],
        "load_failure": None
        if failure is None
        else {"worker": failure.worker, "code": failure.code, "message": failure.message},
    }


def app_view(app: App, names: Namespace = DEFAULT_NAMESPACE) -> dict[str, Any]:
    return {
        "app": names.outside(app.id),
        "task": app.task,
        "input": app.signature.to_dict(),
        "output_kind": app.output_kind,
        "num_classes": app.num_classes,
        "description": app.description,
    }


async def visible_app(state: GatewayState, names: Namespace, app: str) -> str:
    """The internal id of the caller's app called ``app`` (the catalog re-read once when
    it is unknown); another tenant's is as unknown as one that does not exist."""
    internal = names.inside(app)
    if internal is not None and internal not in state.catalog_snapshot.apps:
        await state.refresh(force=True)
    if internal is None or internal not in state.catalog_snapshot.apps:
        raise UnknownApp(f"no app named {app!r}; GET /v1/apps lists the apps")
    return internal


@router.get("/v1/apps", summary="Apps, with how many models and variants each has")
async def list_apps(state: State, tenant: Tenant) -> JSONResponse:
    snapshot = state.catalog_snapshot
    names = tenant.names
    apps = []
    for app in sorted(snapshot.apps.values(), key=lambda a: a.id):
        if not names.owns(app.id):
            continue
        view = app_view(app, names)
        view["models"] = sorted(
            names.outside(m.id) for m in snapshot.models.values() if m.app == app.id
        )
        view["variants"] = len(snapshot.variants_of_app(app.id))
        apps.append(view)
    return JSONResponse({"apps": apps})


@router.get("/v1/apps/{app}", summary="An app's models, variants, profiles and states")
async def get_app(app: str, state: State, tenant: Tenant) -> JSONResponse:
    names = tenant.names
    internal = await visible_app(state, names, app)
    snapshot = state.catalog_snapshot
    view = app_view(snapshot.apps[internal], names)
    view["models"] = [
        {"id": names.outside(m.id), "format": m.format, "status": m.status, "metadata": m.metadata}
        for m in sorted(snapshot.models.values(), key=lambda m: m.id)
        if m.app == internal
    ]
    view["variants"] = [
        variant_view(v, state.live_snapshot, state.load_failures, names)
        for v in snapshot.variants_of_app(internal)
    ]
    return JSONResponse(view)


@router.get("/v1/apps/{app}/stats", summary="SLO achieved, accuracy delivered, cost: per app")
async def app_stats(app: str, state: State, tenant: Tenant) -> JSONResponse:
    """Merged over every gateway's accounting (published to live state each second)."""
    names = tenant.names
    internal = await visible_app(state, names, app)
    await state.publish_accounting()  # this gateway's newest figures
    docs = await asyncio.to_thread(live_docs.read_gateway_totals, state.services.live)
    view = merged_view(docs, internal)
    view["app"] = app
    view["variants"] = {names.outside(k): v for k, v in view["variants"].items()}
    return JSONResponse(view)

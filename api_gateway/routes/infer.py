"""The query path: select a variant, publish to its queue, return the worker's answer."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from api_gateway.deps import State, Tenant, TenantContext
from api_gateway.inputs import check_batch_size, to_batch
from api_gateway.json_body import JSONBodyRoute
from api_gateway.responses import JSONResponse
from api_gateway.state import GatewayState
from queues import topology
from queues.errors import (
    InfaasError,
    UnknownApp,
    UnknownModel,
    UnknownVariant,
    error_from_code,
)
from queues.messages import Query as QueryMessage
from queues.messages import now_ms
from registry.pricing import usd_for
from registry.selector import Decision, Requirements
from registry.tenancy import DEFAULT_NAMESPACE, Namespace

router = APIRouter(tags=["inference"], route_class=JSONBodyRoute)


@dataclass(frozen=True, slots=True)
class Served:
    """A query answered, accounted for, handed to its protocol's renderer."""

    decision: Decision
    outputs: np.ndarray
    request_id: str
    elapsed_ms: float
    model_ms: float
    explain: bool


class InferRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: list[Any] = Field(description="one input per row, each of the app's input shape")
    latency_ms: float | None = Field(
        default=None, gt=0, le=60_000, description="latency objective, end to end (ms)"
    )
    min_accuracy: float | None = Field(default=None, ge=0, le=1, description="accuracy floor")
    max_cost_per_hour: float | None = Field(
        default=None, gt=0, description="cost cap of the variant, dollars per hour"
    )
    timeout_ms: float | None = Field(
        default=None,
        gt=0,
        le=600_000,
        description="give up after this long (default: max(4 × latency_ms, 1 s), or 10 s)",
    )


class ModelInferRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: list[Any]
    latency_ms: float | None = Field(default=None, gt=0, le=60_000)
    timeout_ms: float | None = Field(default=None, gt=0, le=600_000)


class VariantInferRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: list[Any]
    timeout_ms: float | None = Field(default=None, gt=0, le=600_000)


V1Body = InferRequest | ModelInferRequest | VariantInferRequest
# the three /v1 query routes by the word in their path: its body, its path template
BODIES: dict[str, type[V1Body]] = {
    "apps": InferRequest,
    "models": ModelInferRequest,
    "variants": VariantInferRequest,
}
PATHS = {
    "apps": "/v1/apps/{app}/infer",
    "models": "/v1/models/{model}/infer",
    "variants": "/v1/variants/{variant}/infer",
}


async def answer_v1(
    state: GatewayState, caller: TenantContext, name: str, body: V1Body, *, explain: bool
) -> JSONResponse:
    """A ``/v1`` query on the app, model or variant ``name`` (which, the body's class
    says), from a caller already let in; FastAPI's routes below and the fast path of
    api_gateway/fast_queries.py both answer with it."""
    names = caller.names
    internal = names.inside(name)
    requirements: Callable[[int], Requirements]
    if isinstance(body, InferRequest):
        if internal is None:
            raise UnknownApp(f"no app named {name!r}; GET /v1/apps lists the apps")
        app, needs = internal, body

        def requirements(batch: int) -> Requirements:
            return Requirements(
                app=app,
                batch=batch,
                latency_ms=needs.latency_ms,
                min_accuracy=needs.min_accuracy,
                max_cost_per_hour=needs.max_cost_per_hour,
            )

    elif isinstance(body, ModelInferRequest):
        if internal is None:
            raise UnknownModel(f"no model named {name!r}; GET /v1/apps lists the models")
        model, latency_ms = internal, body.latency_ms

        def requirements(batch: int) -> Requirements:
            return Requirements(model=model, batch=batch, latency_ms=latency_ms)

    else:
        if internal is None:
            raise UnknownVariant(f"no variant named {name!r}; GET /v1/apps/<app> lists them")
        variant = internal
        explain = False

        def requirements(batch: int) -> Requirements:
            return Requirements(variant=variant, batch=batch)

    return await _serve(
        state,
        names,
        body.inputs,
        requirements,
        timeout_ms=body.timeout_ms,
        explain=explain,
        scope=internal,
    )


@router.post("/v1/apps/{app}/infer", summary="Model-less query: name the app and your needs")
async def infer_app(
    app: str, body: InferRequest, state: State, tenant: Tenant, explain: bool = Query(False)
) -> JSONResponse:
    return await answer_v1(state, tenant, app, body, explain=explain)


@router.post("/v1/models/{model}/infer", summary="Model query: the system picks the variant")
async def infer_model(
    model: str,
    body: ModelInferRequest,
    state: State,
    tenant: Tenant,
    explain: bool = Query(False),
) -> JSONResponse:
    return await answer_v1(state, tenant, model, body, explain=explain)


@router.post("/v1/variants/{variant}/infer", summary="Variant query: no choice is made")
async def infer_variant(
    variant: str, body: VariantInferRequest, state: State, tenant: Tenant
) -> JSONResponse:
    return await answer_v1(state, tenant, variant, body, explain=False)


async def _serve(
    state: GatewayState,
    names: Namespace,
    raw_inputs: list[Any] | np.ndarray,
    requirements: Callable[[int], Requirements],
    *,
    timeout_ms: float | None,
    explain: bool,
    scope: str,
) -> JSONResponse:
    """:func:`serve`, answered in this API's own protocol (``/v1``)."""
    served = await serve(
        state,
        names,
        raw_inputs,
        requirements,
        timeout_ms=timeout_ms,
        explain=explain,
        scope=scope,
    )
    return v1_response(served, names)


async def serve(
    state: GatewayState,
    names: Namespace,
    raw_inputs: list[Any] | np.ndarray,
    requirements: Callable[[int], Requirements],
    *,
    timeout_ms: float | None,
    explain: bool,
    scope: str,
) -> Served:
    """Admit (the caller's quota), select, wait for a load if need be, dispatch and
    account: the query path of every protocol (``/v1``, the Open Inference Protocol's
    REST and gRPC). Errors name things as the caller does (``names``)."""
    started = time.perf_counter()
    app = scope
    try:
        await state.quotas.take_query(names.tenant)
        check_batch_size(len(raw_inputs), state.settings.max_batch)
        req = requirements(len(raw_inputs))
        decision = await state.select(req, explain=explain)
        app = decision.variant.app
        state.accounting.arrival(
            app, time.time(), req.latency_ms, req.min_accuracy, req.max_cost_per_hour
        )
        signature = state.catalog_snapshot.apps[app].signature
        batch = to_batch(raw_inputs, signature, state.settings.max_batch)
        deadline_ms = state.settings.timeout_ms(req.latency_ms, timeout_ms)
        if not state.live_snapshot.placements(decision.variant.id):
            deadline = started + deadline_ms / 1000
            decision = await state.until_running(req, decision, deadline, explain=explain)
    except InfaasError as exc:
        state.metrics.rejected.labels(app, exc.code).inc()
        if app in state.catalog_snapshot.apps:
            state.accounting.failed(app, exc.code)
        names.shown(exc)
        raise
    left_ms = deadline_ms - (time.perf_counter() - started) * 1000
    try:
        return await _dispatch(state, decision, req, batch, started, left_ms, explain)
    except InfaasError as exc:
        names.shown(exc)
        raise


async def _dispatch(
    state: GatewayState,
    decision: Decision,
    req: Requirements,
    batch: np.ndarray,
    started: float,
    deadline_ms: float,
    explain: bool,
) -> Served:
    """Send the query to its variant's queue and answer; ``deadline_ms`` is what is left
    of its deadline (time spent waiting for a load is already spent)."""
    variant = decision.variant
    latency_ms = req.latency_ms
    request_id = uuid.uuid4().hex
    sent = now_ms()
    message = QueryMessage(
        request_id=request_id,
        app=variant.app,
        variant=variant.id,
        inputs=batch,
        deadline_ms=sent + deadline_ms,
        sent_ms=sent,
        slo_deadline_ms=sent + latency_ms if latency_ms is not None else 0.0,
    )
    queue = topology.variant_queue(state.services.broker.queue_prefix, variant.app, variant.id)
    labels = (variant.app, variant.id, variant.hardware)
    try:
        reply = await state.services.client.call(
            queue,
            message,
            timeout_s=deadline_ms / 1000,
            pack_rows=variant.profile.batch_limit if variant.profile is not None else 1,
        )
        if not reply.ok:
            raise error_from_code(reply.error_code, reply.error_message)
    except InfaasError as exc:
        state.metrics.queries.labels(*labels, exc.code).inc()
        state.accounting.failed(variant.app, exc.code)
        raise
    elapsed_ms = (time.perf_counter() - started) * 1000
    outputs = reply.outputs if reply.outputs is not None else np.empty((0,))
    series = state.metrics.series(labels)
    series.ok.inc()
    series.latency_ms.observe(elapsed_ms)
    series.model_ms.observe(reply.model_ms)
    if latency_ms is not None and elapsed_ms > latency_ms:
        series.slo_misses.inc()
    accuracy = variant.profile.accuracy if variant.profile is not None else 0.0
    share = len(batch) / max(reply.batch_size, len(batch))
    cost_usd = usd_for(variant.cost_per_hour, reply.model_ms * share)
    series.cost_usd.inc(cost_usd)
    series.accuracy_delivered.inc(accuracy)
    state.accounting.answered(
        variant.app,
        variant.id,
        variant.hardware,
        elapsed_ms=elapsed_ms,
        latency_ms=latency_ms,
        min_accuracy=req.min_accuracy,
        accuracy=accuracy,
        cost_usd=cost_usd,
    )
    return Served(decision, outputs, request_id, elapsed_ms, reply.model_ms, explain)


def v1_response(served: Served, names: Namespace = DEFAULT_NAMESPACE) -> JSONResponse:
    decision = served.decision
    variant = decision.variant
    outputs = served.outputs
    shown = names.outside(variant.id)
    body: dict[str, Any] = {
        "outputs": outputs,
        "labels": outputs.argmax(axis=1) if outputs.ndim == 2 else [],
        "app": names.outside(variant.app),
        "model": names.outside(variant.model),
        "variant": shown,
        "hardware": variant.hardware,
        "elapsed_ms": round(served.elapsed_ms, 3),
        "model_ms": round(served.model_ms, 3),
        "request_id": served.request_id,
    }
    if served.explain:
        body["decision"] = {
            "load_requested": decision.load_request,
            "reason": names.show(decision.reason),
            "candidates": [
                asdict(c) | {"variant": names.outside(c.variant), "reason": names.show(c.reason)}
                for c in decision.candidates
            ],
        }
    return JSONResponse(body, headers={"X-Infaas-Variant": shown})

"""Registration: create an app, upload a model (asynchronous, 202), follow its progress,
delete a model once no query uses it.

The upload is checked completely before anything is written (a refused upload changes
nothing); then its files are stored, model and registration recorded in one transaction
(with the app, when ``?create_app=true`` asks for it to be made from the model's input),
and one task per hardware is sent to that hardware's control queue, where a worker of
that hardware generates and profiles the variants.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import tempfile
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api_gateway.deps import State, Tenant, TenantContext
from api_gateway.json_body import JSONBodyRoute
from api_gateway.responses import JSONResponse
from api_gateway.routes.apps import app_view
from api_gateway.state import GatewayState
from api_gateway.teardown import drain_and_unload, remove_from_broker
from api_gateway.upload_form import UPLOAD_DOC, metadata_of, read_form, upload_of
from api_gateway.upload_limits import MB, UploadLimit
from queues import topology
from queues.errors import (
    BrokerUnavailable,
    Conflict,
    InfaasError,
    Unavailable,
    UnknownApp,
    UnknownModel,
)
from registry.intake import accept_upload, remove_model
from registry.registrations import (
    REGISTER_TASK,
    TASK_RUNNING,
    Registration,
    RegistrationStore,
    unknown_registration,
)
from registry.tenancy import Namespace
from registry.types import App, InputSignature

__all__ = ["router"]
_metadata = metadata_of  # where tests/unit/test_gateway_limits.py finds it

log = logging.getLogger(__name__)
router = APIRouter(tags=["registration"], route_class=JSONBodyRoute)

INPUT_DTYPES = ("float32", "float64", "float16", "int8", "int16", "int32", "int64", "uint8")
MAX_INPUT_ELEMENTS = 50_000_000
CreateApp = Annotated[
    bool,
    Query(
        description="when the app does not exist, make it from the model's input, with "
        "the model in one step: a refused upload creates no app"
    ),
]


class InputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, description="the model's input tensor name")
    dtype: str = Field(description=f"numpy dtype of the input: one of {', '.join(INPUT_DTYPES)}")
    shape: list[int] = Field(
        min_length=2, max_length=8, description="[-1, ...]: a dynamic batch dimension first"
    )

    @field_validator("dtype")
    @classmethod
    def _check_dtype(cls, dtype: str) -> str:
        if dtype not in INPUT_DTYPES:
            raise ValueError(f"dtype {dtype!r} is not one of {', '.join(INPUT_DTYPES)}")
        return dtype

    @field_validator("shape")
    @classmethod
    def _check_shape(cls, shape: list[int]) -> list[int]:
        if shape[0] != -1:
            raise ValueError("the first dimension is the batch: give it as -1")
        if any(d < 1 for d in shape[1:]):
            raise ValueError("dimensions after the batch must be positive sizes")
        elements = 1
        for d in shape[1:]:
            elements *= d
        if elements > MAX_INPUT_ELEMENTS:
            raise ValueError(f"one input may hold at most {MAX_INPUT_ELEMENTS} values")
        return shape


class CreateAppRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="lowercase [a-z0-9-], at most 64 characters")
    task: Literal["classification"] = Field(
        default="classification", description="what the models do (accuracy is top-1)"
    )
    input: InputSpec
    output_kind: Literal["probabilities", "scores"] = "probabilities"
    num_classes: int | None = Field(default=None, ge=2, le=1_000_000)
    description: str = Field(default="", max_length=2000)


@router.post("/v1/apps", status_code=201, summary="Create an app: its input signature and task")
async def create_app(body: CreateAppRequest, state: State, tenant: Tenant) -> JSONResponse:
    names = tenant.names
    app = App(
        id=names.new_id("app", body.id),
        task=body.task,
        signature=InputSignature(body.input.name, body.input.dtype, tuple(body.input.shape)),
        output_kind=body.output_kind,
        num_classes=body.num_classes,
        description=body.description,
    )
    tenant.audit_target(f"app={app.id}")
    created = await asyncio.to_thread(state.services.catalog.create_app, app)
    await state.refresh(force=True)
    return JSONResponse(app_view(created, names), status_code=201)


@router.delete("/v1/apps/{app}", summary="Delete an app that has no models, and its batch queue")
async def delete_app(app: str, state: State, tenant: Tenant) -> JSONResponse:
    names = tenant.names
    internal = names.inside(app)
    if internal is None:
        raise unknown_app(app)
    try:  # 404/409 change nothing
        await asyncio.to_thread(state.services.catalog.delete_app, internal)
    except InfaasError as exc:
        names.shown(exc)
        raise
    tenant.audit_target(f"app={internal}")
    await state.refresh(force=True)
    prefix = state.services.broker.queue_prefix
    removal = await asyncio.to_thread(
        remove_from_broker,
        state,
        topology.declared_for_app(prefix, internal),
        cancel=topology.batch_queue(prefix, internal),
    )
    return JSONResponse({"deleted": app, "broker": removal.to_dict()})


def unknown_app(app: str) -> UnknownApp:
    return UnknownApp(f"app {app!r} does not exist; check the id against GET /v1/apps")


def _send_tasks(state: GatewayState, registration: Registration) -> None:
    prefix = state.services.broker.queue_prefix
    for task in registration.tasks:
        state.services.celery.send_task(
            REGISTER_TASK,
            args=[registration.id, task.hardware],
            queue=topology.control_queue(prefix, task.hardware),
        )


@router.post(
    "/v1/apps/{app}/models",
    status_code=202,
    summary="Register a model: upload it with a validation set; variants are built "
    "and profiled asynchronously",
    openapi_extra=UPLOAD_DOC,
)
async def register_model(
    app: str,
    request: Request,
    state: State,
    tenant: Tenant,
    create_app: CreateApp = False,
) -> JSONResponse:
    names = tenant.names
    try:
        return await _register(app, request, state, tenant, names, create_app=create_app)
    except InfaasError as exc:
        names.shown(exc)
        raise


async def _register(
    app: str,
    request: Request,
    state: GatewayState,
    tenant: TenantContext,
    names: Namespace,
    *,
    create_app: bool,
) -> JSONResponse:
    services = state.services
    internal = names.inside(app)
    try:
        if internal is None:
            raise unknown_app(app)
        await asyncio.to_thread(services.catalog.get_app, internal)  # 404 before the body
        app_exists = True
    except UnknownApp as exc:
        if not create_app:
            raise UnknownApp(
                f"no app named {app!r}; add ?create_app=true to create it from the model's "
                "input (`infaas register` does), or check the id against GET /v1/apps"
            ) from exc
        internal = names.new_id("app", app)
        app_exists = False
    store, celery = services.store, services.celery
    if store is None or celery is None:
        raise Unavailable(
            "this gateway has no object store or task queue to register models with; "
            "start it with `infaas gateway` or `infaas demo`"
        )
    limit = UploadLimit(
        int(state.settings.max_upload_mb * MB),
        "INFAAS_MAX_UPLOAD_MB",
        "send a smaller model or validation set, or raise the limit",
    )
    with tempfile.TemporaryDirectory(prefix="infaas-upload-") as tmp:
        form = await read_form(request, limit)
        try:
            upload = await asyncio.to_thread(
                functools.partial(
                    upload_of,
                    internal,
                    form,
                    Path(tmp),
                    state,
                    names=names,
                    create_app=create_app,
                    app_exists=app_exists,
                )
            )
        finally:
            await form.close()
        registration = await asyncio.to_thread(
            functools.partial(
                accept_upload,
                services.catalog,
                store,
                upload,
                max_unpacked_bytes=limit.limit_bytes,  # compression buys no room
                quota=state.quotas.usage_check,
            )
        )
    try:
        await asyncio.to_thread(_send_tasks, state, registration)
    except Exception as exc:
        await asyncio.to_thread(remove_model, services.catalog, store, registration.model)
        if upload.new_app is not None:  # the app came with the model: it goes with it
            await asyncio.to_thread(services.catalog.delete_app, internal)
        raise BrokerUnavailable(
            f"the registration could not be queued ({type(exc).__name__}: {exc}); nothing was "
            "kept, retry when the broker is reachable"
        ) from exc
    await state.refresh(force=True)
    tenant.audit_target(f"app={internal} model={registration.model} registration={registration.id}")
    body = registration.to_dict(names.outside)
    body["app_created"] = upload.new_app is not None
    body["status_url"] = f"/v1/registrations/{registration.id}"
    return JSONResponse(body, status_code=202, headers={"Location": body["status_url"]})


@router.get("/v1/registrations/{registration}", summary="Progress of a registration, per variant")
async def get_registration(registration: str, state: State, tenant: Tenant) -> JSONResponse:
    names = tenant.names
    store = RegistrationStore(state.services.catalog)
    found = await asyncio.to_thread(store.get, registration)
    if not names.owns(found.model):  # another tenant's: as if it did not exist
        raise unknown_registration(registration)
    if found.finished:
        # so that what this gateway shows next (GET /v1/apps/<app>) includes the result
        await state.refresh()
    return JSONResponse(found.to_dict(names.outside))


# ----------------------------------------------------------------------------- delete


@router.delete(
    "/v1/apps/{app}/models/{model}",
    summary="Delete a model and its variants once no query uses them",
)
async def delete_model(app: str, model: str, state: State, tenant: Tenant) -> JSONResponse:
    names = tenant.names
    app_id, model_id = names.inside(app), names.inside(model)
    if app_id is None:
        raise unknown_app(app)
    try:
        return await _delete_model(state, names, app_id, model_id, shown=(app, model))
    except InfaasError as exc:
        names.shown(exc)
        raise


async def _delete_model(
    state: GatewayState,
    names: Namespace,
    app: str,
    model_id: str | None,
    *,
    shown: tuple[str, str],
) -> JSONResponse:
    services = state.services
    catalog = services.catalog
    await asyncio.to_thread(catalog.get_app, app)
    if model_id is None:
        raise UnknownModel(f"model {shown[1]!r} does not exist; check the id against GET /v1/apps")
    model = model_id
    found = await asyncio.to_thread(catalog.get_model, model)
    if found.app != app:
        raise UnknownModel(f"app {app!r} has no model {model!r} (it belongs to app {found.app!r})")
    if services.store is None:
        raise Unavailable("this gateway has no object store to delete model files from")
    registrations = await asyncio.to_thread(RegistrationStore(catalog).for_model, model)
    busy = [
        f"{r.id} ({t.hardware} on {t.worker or 'a worker'})"
        for r in registrations
        for t in r.tasks
        if t.status == TASK_RUNNING
    ]
    if busy:
        raise Conflict(
            f"model {model!r} is being registered right now ({', '.join(busy)}); wait until "
            "GET /v1/registrations/<id> says it finished, then delete it"
        )
    live = await asyncio.to_thread(services.live.snapshot)
    variants = await asyncio.to_thread(catalog.list_variants, model_id=model)
    loaded = {v.id: n for v in variants if (n := len(live.placements(v.id)))}
    # First the catalog (no gateway selects the variants after its next refresh), then
    # the files; loaded variants finish the queries they hold before workers unload them.
    deleted = await asyncio.to_thread(remove_model, catalog, services.store, model)
    await state.refresh(force=True)
    unloaded = await drain_and_unload(state, loaded)
    # unloaded, the variants' queues have no consumer left: remove them from the broker
    declared = topology.declared_for_variants(
        services.broker.queue_prefix, app, [v.id for v in deleted]
    )
    removal = await asyncio.to_thread(remove_from_broker, state, declared)
    return JSONResponse(
        {
            "deleted": shown[1],
            "app": shown[0],
            "variants": [names.outside(v.id) for v in deleted],
            "unloaded": [names.outside(v) for v in unloaded],
            "broker": removal.to_dict(),
        }
    )

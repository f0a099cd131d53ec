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
import shutil
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.datastructures import FormData, UploadFile

from api_gateway.deps import State, Tenant
from api_gateway.json_body import JSONBodyRoute
from api_gateway.responses import JSONResponse
from api_gateway.routes.apps import app_view
from api_gateway.state import GatewayState
from api_gateway.upload_limits import MB, UploadLimit
from queues import topology
from queues.broker_admin import Removal, broker_connection, remove_declared
from queues.errors import (
    BrokerUnavailable,
    Conflict,
    InvalidRequest,
    Unavailable,
    UnknownApp,
    UnknownModel,
)
from registry import json_limits
from registry.intake import NewApp, Upload, accept_upload, check_hardware, remove_model
from registry.names import check_id
from registry.registrations import (
    REGISTER_TASK,
    TASK_RUNNING,
    Registration,
    RegistrationOptions,
    RegistrationStore,
)
from registry.types import App, InputSignature

log = logging.getLogger(__name__)
router = APIRouter(tags=["registration"], route_class=JSONBodyRoute)

INPUT_DTYPES = ("float32", "float64", "float16", "int8", "int16", "int32", "int64", "uint8")
MAX_INPUT_ELEMENTS = 50_000_000
FORM_FIELDS = (
    "id",
    "metadata",
    "hardware",
    "format",
    "output",
    "budget_s_per_batch",
    "batch_sizes",
    "num_classes",
    "description",
)
NEW_APP_FIELDS = ("num_classes", "description")
CreateApp = Annotated[
    bool,
    Query(
        description="when the app does not exist, make it from the model's input, with "
        "the model in one step: a refused upload creates no app"
    ),
]
FORM_FILES = ("model", "validation")
UNLOAD_REPLY_S = 3.0  # how long workers get to answer an unload or a consumer cancel


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
async def create_app(body: CreateAppRequest, state: State, _tenant: Tenant) -> JSONResponse:
    app = App(
        id=check_id("app", body.id),
        task=body.task,
        signature=InputSignature(body.input.name, body.input.dtype, tuple(body.input.shape)),
        output_kind=body.output_kind,
        num_classes=body.num_classes,
        description=body.description,
    )
    _tenant.audit_target(f"app={app.id}")
    created = await asyncio.to_thread(state.services.catalog.create_app, app)
    await state.refresh(force=True)
    return JSONResponse(app_view(created), status_code=201)


@router.delete("/v1/apps/{app}", summary="Delete an app that has no models, and its batch queue")
async def delete_app(app: str, state: State, _tenant: Tenant) -> JSONResponse:
    await asyncio.to_thread(state.services.catalog.delete_app, app)  # 404/409 change nothing
    await state.refresh(force=True)
    prefix = state.services.broker.queue_prefix
    removal = await asyncio.to_thread(
        _remove_from_broker,
        state,
        topology.declared_for_app(prefix, app),
        cancel=topology.batch_queue(prefix, app),
    )
    return JSONResponse({"deleted": app, "broker": removal.to_dict()})


# ----------------------------------------------------------------------------- upload


def _form_property(kind: str, description: str, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "description": description, **extra}


_UPLOAD_FIELDS = {
    "model": _form_property("string", "ONNX file or torch.export archive (.pt2)", format="binary"),
    "validation": _form_property("string", ".npz: arrays inputs and labels", format="binary"),
    "id": _form_property("string", "model id (default: the file name)"),
    "metadata": _form_property("string", "a JSON object kept with the model"),
    "hardware": _form_property("string", "cpu,gpu (default: every kind with a live worker)"),
    "format": _form_property("string", "onnx or torch (default: detected)"),
    "output": _form_property("string", "the output to serve (default: scores per class)"),
    "budget_s_per_batch": _form_property("number", "profiling time per batch size (0.4)"),
    "batch_sizes": _form_property("string", "batch sizes to profile (1,4,8,16,32,64)"),
    "num_classes": _form_property("integer", "with create_app: the new app's classes"),
    "description": _form_property("string", "with create_app: the new app's description"),
}
_UPLOAD_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["model", "validation"],
                    "properties": _UPLOAD_FIELDS,
                }
            }
        },
    }
}


async def _read_form(request: Request, limit: UploadLimit) -> FormData:
    limit.check_declared(request)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidRequest(
            "send the model as multipart/form-data with files 'model' and 'validation' "
            "(curl -F model=@m.onnx -F validation=@val.npz)"
        )
    return await limit.read_form(request, max_files=4)


def _field(form: FormData, name: str) -> str | None:
    value = form.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{name!r} must be a form field, not a file")
    return value.strip() or None


def _save(form: FormData, name: str, dest: Path) -> tuple[Path, str]:
    value = form.get(name)
    if not isinstance(value, UploadFile):
        raise InvalidRequest(
            f"the upload has no file {name!r}; send files 'model' (ONNX or .pt2) and "
            "'validation' (.npz with inputs and labels)"
        )
    with dest.open("wb") as out:
        value.file.seek(0)
        shutil.copyfileobj(value.file, out, MB)
    return dest, value.filename or ""


def _default_model_id(filename: str) -> str:
    stem = Path(filename).name.split(".")[0].lower().replace("_", "-")
    try:
        return check_id("model", stem)
    except InvalidRequest as exc:
        raise InvalidRequest(
            f"no model id given and the file name {filename!r} is not a valid id; send the "
            "field 'id' (1-64 characters of [a-z0-9-])"
        ) from exc


def _options(form: FormData) -> RegistrationOptions:
    default = RegistrationOptions()
    budget = _field(form, "budget_s_per_batch")
    sizes = _field(form, "batch_sizes")
    try:
        return RegistrationOptions(
            budget_s_per_batch=float(budget) if budget else default.budget_s_per_batch,
            batch_sizes=tuple(int(b) for b in sizes.split(",")) if sizes else default.batch_sizes,
        )
    except ValueError as exc:
        raise InvalidRequest(
            f"budget_s_per_batch must be a number and batch_sizes integers like 1,4,8 ({exc})"
        ) from exc


def _metadata(raw: str | None) -> dict[str, Any]:
    if raw is None:
        return {}
    try:
        value = json_limits.loads(raw, what="metadata")
    except json_limits.JSONRefused as exc:
        raise InvalidRequest(f"{exc}; send a JSON object") from exc
    if not isinstance(value, dict):
        raise InvalidRequest('metadata must be a JSON object, e.g. {"source": "..."}')
    return value


def _hardware(state: GatewayState, raw: str | None) -> tuple[str, ...]:
    if raw:
        return check_hardware([part.strip() for part in raw.split(",") if part.strip()])
    live = {w.hardware for w in state.live_snapshot.workers.values()}
    return tuple(sorted(live)) or ("cpu",)


def _new_app(form: FormData, *, create_app: bool, app_exists: bool) -> NewApp | None:
    """The app to create with the model; None when it exists (its fields then go unused,
    as ``create_app`` means "create it if missing")."""
    given = [name for name in NEW_APP_FIELDS if _field(form, name) is not None]
    if given and not create_app:
        raise InvalidRequest(
            f"{', '.join(given)} describe(s) a new app; add ?create_app=true to create "
            "the app from the model, or leave them out for an existing app"
        )
    if app_exists:
        return None
    raw = _field(form, "num_classes")
    try:
        num_classes = int(raw) if raw is not None else None
    except ValueError as exc:
        raise InvalidRequest(f"num_classes must be an integer of at least 2, not {raw!r}") from exc
    description = _field(form, "description") or ""
    if len(description) > 2000:
        raise InvalidRequest("the app's description may hold at most 2000 characters")
    return NewApp(num_classes=num_classes, description=description)


def _upload(
    app: str, form: FormData, tmp: Path, state: GatewayState, *, create_app: bool, app_exists: bool
) -> Upload:
    unknown = sorted(set(form.keys()) - set(FORM_FIELDS) - set(FORM_FILES))
    if unknown:
        raise InvalidRequest(
            f"unknown form field(s) {unknown}; known: {list(FORM_FILES + FORM_FIELDS)}"
        )
    new_app = _new_app(form, create_app=create_app, app_exists=app_exists)
    model_path, filename = _save(form, "model", tmp / "model.upload")
    validation_path, _ = _save(form, "validation", tmp / "validation.npz")
    model_id = _field(form, "id") or _default_model_id(filename)
    return Upload(
        app=app,
        model_id=check_id("model", model_id),
        model_path=model_path,
        validation_path=validation_path,
        hardware=_hardware(state, _field(form, "hardware")),
        metadata=_metadata(_field(form, "metadata")),
        options=_options(form),
        declared_format=_field(form, "format"),
        output=_field(form, "output"),
        new_app=new_app,
    )


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
    openapi_extra=_UPLOAD_DOC,
)
async def register_model(
    app: str,
    request: Request,
    state: State,
    _tenant: Tenant,
    create_app: CreateApp = False,
) -> JSONResponse:
    services = state.services
    if services.store is None or services.celery is None:
        raise Unavailable(
            "this gateway has no object store or task queue to register models with; "
            "start it with `infaas gateway` or `infaas demo`"
        )
    try:
        await asyncio.to_thread(services.catalog.get_app, app)  # 404 before reading the body
        app_exists = True
    except UnknownApp as exc:
        if not create_app:
            raise UnknownApp(
                f"no app named {app!r}; add ?create_app=true to create it from the model's "
                "input (`infaas register` does), or check the id against GET /v1/apps"
            ) from exc
        check_id("app", app)
        app_exists = False
    limit = UploadLimit(
        int(state.settings.max_upload_mb * MB),
        "INFAAS_MAX_UPLOAD_MB",
        "send a smaller model or validation set, or raise the limit",
    )
    with tempfile.TemporaryDirectory(prefix="infaas-upload-") as tmp:
        form = await _read_form(request, limit)
        try:
            upload = await asyncio.to_thread(
                functools.partial(
                    _upload,
                    app,
                    form,
                    Path(tmp),
                    state,
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
                services.store,
                upload,
                max_unpacked_bytes=limit.limit_bytes,  # compression buys no room
            )
        )
    try:
        await asyncio.to_thread(_send_tasks, state, registration)
    except Exception as exc:
        await asyncio.to_thread(remove_model, services.catalog, services.store, registration.model)
        if upload.new_app is not None:  # the app came with the model: it goes with it
            await asyncio.to_thread(services.catalog.delete_app, app)
        raise BrokerUnavailable(
            f"the registration could not be queued ({type(exc).__name__}: {exc}); nothing was "
            "kept, retry when the broker is reachable"
        ) from exc
    await state.refresh(force=True)
    _tenant.audit_target(f"app={app} model={registration.model} registration={registration.id}")
    body = registration.to_dict()
    body["app_created"] = upload.new_app is not None
    body["status_url"] = f"/v1/registrations/{registration.id}"
    return JSONResponse(body, status_code=202, headers={"Location": body["status_url"]})


@router.get("/v1/registrations/{registration}", summary="Progress of a registration, per variant")
async def get_registration(registration: str, state: State, _tenant: Tenant) -> JSONResponse:
    found = await asyncio.to_thread(RegistrationStore(state.services.catalog).get, registration)
    if found.finished:
        # so that what this gateway shows next (GET /v1/apps/<app>) includes the result
        await state.refresh()
    return JSONResponse(found.to_dict())


# ----------------------------------------------------------------------------- delete


@router.delete(
    "/v1/apps/{app}/models/{model}",
    summary="Delete a model and its variants once no query uses them",
)
async def delete_model(app: str, model: str, state: State, _tenant: Tenant) -> JSONResponse:
    services = state.services
    if services.store is None:
        raise Unavailable("this gateway has no object store to delete model files from")
    catalog = services.catalog
    await asyncio.to_thread(catalog.get_app, app)
    found = await asyncio.to_thread(catalog.get_model, model)
    if found.app != app:
        raise UnknownModel(f"app {app!r} has no model {model!r} (it belongs to app {found.app!r})")
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
    unloaded = await _drain_and_unload(state, loaded)
    # unloaded, the variants' queues have no consumer left: remove them from the broker
    declared = topology.declared_for_variants(
        services.broker.queue_prefix, app, [v.id for v in deleted]
    )
    removal = await asyncio.to_thread(_remove_from_broker, state, declared)
    return JSONResponse(
        {
            "deleted": model,
            "app": app,
            "variants": [v.id for v in deleted],
            "unloaded": unloaded,
            "broker": removal.to_dict(),
        }
    )


def _remove_from_broker(
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


async def _drain_and_unload(state: GatewayState, loaded: dict[str, int]) -> list[str]:
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

"""The Open Inference Protocol (KServe v2), REST with JSON tensors, over the same query path.

``{name}`` in ``/v2/models/{name}`` is a variant, a model or an app, looked up in that
order: naming an app is the model-less query, its needs in the request's
``parameters`` (``latency_ms``, ``min_accuracy``, ``max_cost_per_hour``, and
``timeout_ms``); naming a model lets the system pick its variant; a version is a
variant of the name. A query goes through :func:`api_gateway.routes.infer._serve`, so
selection, waiting for a load, dispatch and accounting are those of ``/v1``; the answer
says which variant served it (``model_name``, ``model_version``, ``X-Infaas-Variant``).

Errors are the protocol's ``{"error": "<message>"}``, with the status of our error
tree (422 becomes the protocol's 400) and our code in ``X-Infaas-Error``; only a
refused API key (401, 403) keeps the gateway's own shape, the same on every route.
Not served: the binary tensor extension, and gRPC.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from api_gateway.deps import State, Tenant
from api_gateway.json_body import JSONBodyRoute
from api_gateway.oip_tensors import decode_input, encode_output, tensor_metadata
from api_gateway.responses import JSONResponse, validation_error
from api_gateway.routes.infer import Served, _serve
from api_gateway.state import GatewayState
from queues.errors import (
    Forbidden,
    InfaasError,
    InvalidInput,
    InvalidRequest,
    NotFound,
    Unauthenticated,
    UnknownVariant,
)
from registry.selector import Requirements
from registry.types import App, CatalogSnapshot, Model, Variant

SERVER_NAME = "infaas"
DEFAULT_OUTPUT = "output"
_APP_ONLY = ("min_accuracy", "max_cost_per_hour")


def oip_error(error: InfaasError) -> JSONResponse:
    """An error of the tree in the protocol's shape."""
    status = 400 if error.status_code == 422 else error.status_code
    headers = {**error.headers, "X-Infaas-Error": error.code}
    return JSONResponse({"error": error.message}, status_code=status, headers=headers)


class OIPRoute(JSONBodyRoute):
    """A JSON-bounded route whose refusals (authentication, body, validation, query)
    answer in the protocol's error shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def oip(request: Request) -> Response:
            try:
                return await handler(request)
            except (Unauthenticated, Forbidden):
                raise  # one contract for keys on every route, in the tree's own shape
            except InfaasError as exc:
                return oip_error(exc)
            except RequestValidationError as exc:
                return oip_error(validation_error(exc))

        return oip


router = APIRouter(tags=["open inference protocol"], route_class=OIPRoute)


class InputTensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]
    parameters: dict[str, Any] = Field(default_factory=dict)


class RequestedOutput(BaseModel):
    name: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class InferParameters(BaseModel):
    """The query's needs; other parameters are the client's and are ignored."""

    model_config = ConfigDict(extra="allow")

    latency_ms: float | None = Field(default=None, gt=0, le=60_000)
    min_accuracy: float | None = Field(default=None, ge=0, le=1)
    max_cost_per_hour: float | None = Field(default=None, gt=0)
    timeout_ms: float | None = Field(default=None, gt=0, le=600_000)


class OIPInferRequest(BaseModel):
    id: str | None = None
    parameters: InferParameters = Field(default_factory=InferParameters)
    inputs: Annotated[list[InputTensor], Field(min_length=1)]
    outputs: list[RequestedOutput] | None = None


@dataclass(frozen=True, slots=True)
class Target:
    """What ``{name}`` (and its version) named: ``variant`` is set when one is fixed."""

    name: str
    kind: str  # "variant", "model" or "app"
    app: App
    model: Model | None
    variant: Variant | None
    scope: tuple[Variant, ...]  # the variants the name covers

    @property
    def output_name(self) -> str:
        return (self.model.output_name if self.model else "") or DEFAULT_OUTPUT


def resolve(snapshot: CatalogSnapshot, name: str, version: str | None) -> Target | None:
    """The variant, model or app called ``name`` (in that order), None if none is."""
    variant = snapshot.variants.get(name)
    if variant is not None:
        target = Target(
            name,
            "variant",
            snapshot.apps[variant.app],
            snapshot.models.get(variant.model),
            variant,
            (variant,),
        )
    elif name in snapshot.models:
        model = snapshot.models[name]
        scope = snapshot.variants_of_model(name)
        target = Target(name, "model", snapshot.apps[model.app], model, None, scope)
    elif name in snapshot.apps:
        scope = snapshot.variants_of_app(name)
        target = Target(name, "app", snapshot.apps[name], None, None, scope)
    else:
        return None
    if version is None:
        return target
    chosen = next((v for v in target.scope if v.id == version), None)
    if chosen is None:
        known = ", ".join(v.id for v in target.scope) or "none yet"
        raise UnknownVariant(
            f"{target.kind} {name!r} has no version {version!r}; its versions (variants) "
            f"are: {known}"
        )
    return Target(name, target.kind, target.app, target.model, chosen, (chosen,))


async def _target(state: GatewayState, name: str, version: str | None) -> Target:
    target = resolve(state.catalog_snapshot, name, version)
    if target is None:
        await state.refresh(force=True)
        target = resolve(state.catalog_snapshot, name, version)
    if target is None:
        raise NotFound(
            f"no variant, model or app named {name!r}; GET /v1/apps lists the apps, "
            "GET /v1/apps/{app} their models and variants"
        )
    return target


def _requirements(target: Target, params: InferParameters) -> Callable[[int], Requirements]:
    given = {k for k in ("latency_ms", *_APP_ONLY) if getattr(params, k) is not None}
    if target.variant is not None:
        refused, what = given, f"variant {target.variant.id!r}"
    elif target.kind == "model":
        refused, what = given & set(_APP_ONLY), f"model {target.name!r}"
    else:
        refused, what = set(), ""
    if refused:
        raise InvalidRequest(
            f"parameters {', '.join(sorted(refused))} do not apply when naming {what}; "
            f"name the app {target.app.id!r} to have the system choose by them"
        )
    variant = target.variant
    if variant is not None:
        return lambda batch: Requirements(variant=variant.id, batch=batch)
    if target.model is not None:
        model = target.model.id
        return lambda batch: Requirements(model=model, batch=batch, latency_ms=params.latency_ms)
    return lambda batch: Requirements(
        app=target.app.id,
        batch=batch,
        latency_ms=params.latency_ms,
        min_accuracy=params.min_accuracy,
        max_cost_per_hour=params.max_cost_per_hour,
    )


def _refuse_binary(request: Request, body: OIPInferRequest) -> None:
    binary = request.headers.get("inference-header-content-length") is not None
    binary = binary or "binary_data_output" in (body.parameters.model_extra or {})
    binary = binary or any("binary_data_size" in t.parameters for t in body.inputs)
    binary = binary or any("binary_data" in o.parameters for o in body.outputs or ())
    if binary:
        raise InvalidRequest(
            "the binary tensor extension is not served here; send tensors as JSON data"
        )


def _render(target: Target, request_id: str | None) -> Callable[[Served], JSONResponse]:
    def render(served: Served) -> JSONResponse:
        variant = served.decision.variant
        body = {
            "model_name": variant.model,
            "model_version": variant.id,
            "id": request_id if request_id is not None else served.request_id,
            "parameters": {"app": variant.app, "hardware": variant.hardware},
            "outputs": [encode_output(target.output_name, served.outputs)],
        }
        return JSONResponse(body, headers={"X-Infaas-Variant": variant.id})

    return render


def _metadata(target: Target) -> dict[str, Any]:
    app = target.app
    signature = app.signature
    if target.variant is not None:
        platform = target.variant.runtime
    elif target.model is not None:
        platform = target.model.format
    else:
        platform = "infaas_app"
    return {
        "name": target.name,
        "versions": [v.id for v in target.scope],
        "platform": platform,
        "inputs": [tensor_metadata(signature.name, signature.dtype, signature.shape)],
        "outputs": [tensor_metadata(target.output_name, "float32", [-1, app.num_classes or -1])],
        "parameters": {"kind": target.kind, "app": app.id, "task": app.task},
    }


def _ready(state: GatewayState) -> bool:
    return state.services.client.connected and not state.catalog_error and not state.live_error


@router.get("/v2", summary="Server metadata (Open Inference Protocol)")
async def server_metadata(request: Request, _tenant: Tenant) -> JSONResponse:
    return JSONResponse({"name": SERVER_NAME, "version": request.app.version, "extensions": []})


@router.get("/v2/health/live", summary="The server is live (Open Inference Protocol)")
async def server_live() -> JSONResponse:
    return JSONResponse({"live": True})


@router.get("/v2/health/ready", summary="The server is ready (Open Inference Protocol)")
async def server_ready(state: State) -> JSONResponse:
    ready = _ready(state)
    return JSONResponse({"ready": ready}, status_code=200 if ready else 400)


@router.get("/v2/models/{name}", summary="Metadata of an app, model or variant")
async def model_metadata(name: str, state: State, _tenant: Tenant) -> JSONResponse:
    return JSONResponse(_metadata(await _target(state, name, None)))


@router.get("/v2/models/{name}/versions/{version}", summary="Metadata of one variant of a name")
async def version_metadata(name: str, version: str, state: State, _tenant: Tenant) -> JSONResponse:
    return JSONResponse(_metadata(await _target(state, name, version)))


async def _model_ready(state: GatewayState, name: str, version: str | None) -> JSONResponse:
    """Ready when the gateway is and a ready variant of the name exists (one that is not
    running is loaded on the first query)."""
    target = await _target(state, name, version)
    ready = _ready(state) and any(v.ready for v in target.scope)
    return JSONResponse({"name": name, "ready": ready}, status_code=200 if ready else 400)


@router.get("/v2/models/{name}/ready", summary="An app, model or variant can serve")
async def model_ready(name: str, state: State, _tenant: Tenant) -> JSONResponse:
    return await _model_ready(state, name, None)


@router.get("/v2/models/{name}/versions/{version}/ready", summary="A variant of a name can serve")
async def version_ready(name: str, version: str, state: State, _tenant: Tenant) -> JSONResponse:
    return await _model_ready(state, name, version)


async def _infer(
    request: Request, state: GatewayState, name: str, version: str | None, body: OIPInferRequest
) -> JSONResponse:
    _refuse_binary(request, body)
    target = await _target(state, name, version)
    if len(body.inputs) != 1:
        names = ", ".join(repr(t.name) for t in body.inputs)
        raise InvalidInput(
            f"{len(body.inputs)} inputs ({names}); {name!r} takes one, "
            f"{target.app.signature.name!r}"
        )
    tensor = body.inputs[0]
    unknown = [o.name for o in body.outputs or () if o.name != target.output_name]
    if unknown:
        raise InvalidInput(
            f"output {unknown[0]!r} is not an output of {name!r}; it has one, "
            f"{target.output_name!r}"
        )
    requirements = _requirements(target, body.parameters)
    batch = decode_input(
        tensor.name, tensor.shape, tensor.datatype, tensor.data, target.app.signature
    )
    return await _serve(
        state,
        batch,
        requirements,
        timeout_ms=body.parameters.timeout_ms,
        explain=False,
        scope=target.app.id,
        render=_render(target, body.id),
    )


@router.post("/v2/models/{name}/infer", summary="Query an app, model or variant")
async def infer(
    request: Request, name: str, body: OIPInferRequest, state: State, _tenant: Tenant
) -> JSONResponse:
    return await _infer(request, state, name, None, body)


@router.post("/v2/models/{name}/versions/{version}/infer", summary="Query one variant of a name")
async def infer_version(
    request: Request,
    name: str,
    version: str,
    body: OIPInferRequest,
    state: State,
    _tenant: Tenant,
) -> JSONResponse:
    return await _infer(request, state, name, version, body)

"""The Open Inference Protocol (KServe v2) over REST: JSON tensors and the binary tensor
data extension, over the shared protocol code of :mod:`api_gateway.oip_service`.

An inference body is read within ``INFAAS_MAX_BODY_MB`` by the route class, like every
JSON body, but parsed here: with ``Inference-Header-Content-Length`` it is a JSON header
followed by raw tensor bytes (:mod:`api_gateway.oip_binary`), which no JSON parser may
see. The answer says which variant served it (``model_name``, ``model_version``,
``X-Infaas-Variant``); its outputs are raw bytes after a JSON header when the client
asks (``binary_data`` on an output, ``binary_data_output`` on the request).

Errors are the protocol's ``{"error": "<message>"}``, with the status of our error
tree (422 becomes the protocol's 400) and our code in ``X-Infaas-Error``; only a
refused API key (401, 403) keeps the gateway's own shape, the same on every route.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError
from starlette.responses import Response

from api_gateway import oip_service
from api_gateway.deps import State, Tenant
from api_gateway.json_body import JSONBodyRoute, parse_json
from api_gateway.oip_binary import HEADER_LENGTH, BinaryClaim, slice_inputs, split_body
from api_gateway.oip_service import Answer, InferCall, InferParameters, Tensor
from api_gateway.oip_tensors import encode_output, raw_output
from api_gateway.openapi_doc import inline_schema
from api_gateway.responses import JSONResponse, validation_error
from api_gateway.state import GatewayState
from queues.errors import Forbidden, InfaasError, InvalidRequest, Unauthenticated
from registry.tenancy import Namespace


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
            return await in_oip_shape(handler(request))

        return oip


async def in_oip_shape(answer: Awaitable[Response]) -> Response:
    """``answer``, or its refusal in the protocol's error shape; a refused key keeps the
    gateway's own (one contract for keys on every route, in the tree's own shape)."""
    try:
        return await answer
    except (Unauthenticated, Forbidden):
        raise
    except InfaasError as exc:
        return oip_error(exc)
    except RequestValidationError as exc:
        return oip_error(validation_error(exc))


router = APIRouter(tags=["open inference protocol"], route_class=OIPRoute)


class TensorParameters(BaseModel):
    model_config = ConfigDict(extra="allow")

    binary_data_size: StrictInt | None = Field(default=None, ge=0)


class InputTensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any] | None = None
    parameters: TensorParameters = Field(default_factory=TensorParameters)


class OutputParameters(BaseModel):
    model_config = ConfigDict(extra="allow")

    binary_data: StrictBool | None = None


class RequestedOutput(BaseModel):
    name: str
    parameters: OutputParameters = Field(default_factory=OutputParameters)


class RESTParameters(InferParameters):
    binary_data_output: StrictBool = False


class OIPInferRequest(BaseModel):
    id: str | None = None
    parameters: RESTParameters = Field(default_factory=RESTParameters)
    inputs: Annotated[list[InputTensor], Field(min_length=1)]
    outputs: list[RequestedOutput] | None = None


# The inference routes come first: FastAPI tries a router's routes in order (issue 23).
V2_PATHS = {
    False: "/v2/models/{name}/infer",
    True: "/v2/models/{name}/versions/{version}/infer",
}  # by whether a version is named


async def _request(
    raw_body: bytes, header_length: str | None
) -> tuple[OIPInferRequest, list[Tensor]]:
    """The JSON header, validated, and the inputs with their JSON or binary data."""
    header, binary = split_body(raw_body, header_length)
    document = await parse_json(bytes(header))
    try:
        body = OIPInferRequest.model_validate(document)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from exc
    claims = [
        BinaryClaim(
            t.name,
            tuple(t.shape),
            t.datatype,
            t.parameters.binary_data_size,
            t.data is not None,
        )
        for t in body.inputs
    ]
    raws = slice_inputs(claims, binary)
    tensors = [
        Tensor(t.name, tuple(t.shape), t.datatype, t.data, raw)
        for t, raw in zip(body.inputs, raws, strict=True)
    ]
    for out in body.outputs or ():
        if "classification" in (out.parameters.model_extra or {}):
            raise InvalidRequest(
                f"output {out.name!r} asks for classification, an extension this server "
                "does not serve; ask for the output itself and take its argmax"
            )
    return body, tensors


def _binary_output(body: OIPInferRequest) -> bool:
    wanted = body.parameters.binary_data_output
    for out in body.outputs or ():
        if out.parameters.binary_data is not None:
            wanted = out.parameters.binary_data
    return wanted


def _render(answer: Answer, body: OIPInferRequest, names: Namespace) -> Response:
    variant = answer.variant
    version = names.outside(variant.id)
    headers = {"X-Infaas-Variant": version}
    document: dict[str, Any] = {
        "model_name": names.outside(variant.model),
        "model_version": version,
        "id": body.id if body.id is not None else answer.served.request_id,
        "parameters": {"app": names.outside(variant.app), "hardware": variant.hardware},
    }
    if not _binary_output(body):
        document["outputs"] = [encode_output(answer.output_name, answer.outputs)]
        return JSONResponse(document, headers=headers)
    raw = raw_output(answer.outputs)
    tensor = encode_output(answer.output_name, answer.outputs)
    del tensor["data"]
    tensor["parameters"] = {"binary_data_size": len(raw)}
    document["outputs"] = [tensor]
    header = orjson.dumps(document)
    headers[HEADER_LENGTH] = str(len(header))
    return Response(header + raw, media_type="application/octet-stream", headers=headers)


async def answer_v2(
    state: GatewayState,
    names: Namespace,
    name: str,
    version: str | None,
    raw_body: bytes,
    header_length: str | None,
) -> Response:
    """An inference request's answer, from its body as read and its
    ``Inference-Header-Content-Length``; FastAPI's routes below and the fast path of
    api_gateway/fast_queries.py both answer with it."""
    body, tensors = await _request(raw_body, header_length)
    outputs = [o.name for o in body.outputs] if body.outputs is not None else None
    call = InferCall(name, version, body.id, body.parameters, tensors, outputs)
    return _render(await oip_service.infer(state, names, call), body, names)


# The body is read (within INFAAS_MAX_BODY_MB) by the route class and parsed in _request:
# it is JSON, or JSON then raw bytes, which FastAPI's own body parsing would refuse.
_BODY = {
    "requestBody": {
        "description": "OIP inference request: JSON, or with Inference-Header-Content-Length "
        "a JSON header followed by the inputs' raw bytes",
        "content": {
            "application/json": {"schema": inline_schema(OIPInferRequest)},
            "application/octet-stream": {},
        },
    }
}


@router.post(V2_PATHS[False], summary="Query an app, model or variant", openapi_extra=_BODY)
async def infer(request: Request, name: str, state: State, tenant: Tenant) -> Response:
    return await answer_v2(
        state, tenant.names, name, None, await request.body(), request.headers.get(HEADER_LENGTH)
    )


@router.post(
    V2_PATHS[True],
    summary="Query one variant of a name",
    openapi_extra=_BODY,
)
async def infer_version(
    request: Request, name: str, version: str, state: State, tenant: Tenant
) -> Response:
    return await answer_v2(
        state, tenant.names, name, version, await request.body(), request.headers.get(HEADER_LENGTH)
    )


@router.get("/v2", summary="Server metadata (Open Inference Protocol)")
async def server_metadata(request: Request, _tenant: Tenant) -> JSONResponse:
    return JSONResponse(
        {
            "name": oip_service.SERVER_NAME,
            "version": request.app.version,
            "extensions": list(oip_service.EXTENSIONS),
        }
    )


@router.get("/v2/health/live", summary="The server is live (Open Inference Protocol)")
async def server_live() -> JSONResponse:
    return JSONResponse({"live": True})


@router.get("/v2/health/ready", summary="The server is ready (Open Inference Protocol)")
async def server_ready(state: State) -> JSONResponse:
    ready = oip_service.server_ready(state)
    return JSONResponse({"ready": ready}, status_code=200 if ready else 400)


@router.get("/v2/models/{name}", summary="Metadata of an app, model or variant")
async def model_metadata(name: str, state: State, tenant: Tenant) -> JSONResponse:
    names = tenant.names
    target = await oip_service.find_target(state, names, name, None)
    return JSONResponse(oip_service.metadata(target, names))


@router.get("/v2/models/{name}/versions/{version}", summary="Metadata of one variant of a name")
async def version_metadata(name: str, version: str, state: State, tenant: Tenant) -> JSONResponse:
    names = tenant.names
    target = await oip_service.find_target(state, names, name, version)
    return JSONResponse(oip_service.metadata(target, names))


async def _model_ready(
    state: GatewayState, names: Namespace, name: str, version: str | None
) -> JSONResponse:
    ready = await oip_service.model_ready(state, names, name, version)
    return JSONResponse({"name": name, "ready": ready}, status_code=200 if ready else 400)


@router.get("/v2/models/{name}/ready", summary="An app, model or variant can serve")
async def model_ready(name: str, state: State, tenant: Tenant) -> JSONResponse:
    return await _model_ready(state, tenant.names, name, None)


@router.get("/v2/models/{name}/versions/{version}/ready", summary="A variant of a name can serve")
async def version_ready(name: str, version: str, state: State, tenant: Tenant) -> JSONResponse:
    return await _model_ready(state, tenant.names, name, version)


class IndexRequest(BaseModel):
    ready: StrictBool = False


@router.post("/v2/repository/index", summary="Apps, models and variants (model repository)")
async def repository_index(request: Request, state: State, tenant: Tenant) -> JSONResponse:
    """The index of the model repository extension; its load and unload are the scaler's
    (docs/decisions.md)."""
    body = await request.body()
    try:
        wanted = IndexRequest.model_validate(await parse_json(body) if body.strip() else {})
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from exc
    return JSONResponse(
        oip_service.repository_index(
            state.catalog_snapshot, ready_only=wanted.ready, names=tenant.names
        )
    )

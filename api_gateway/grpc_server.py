"""The Open Inference Protocol (KServe v2) over gRPC, in the gateway's process and loop.

``inference.GRPCInferenceService`` (api_gateway/oip_grpc/grpc_service.proto) runs on our
own HTTP/2 server (:mod:`api_gateway.grpc_h2`) started in the FastAPI lifespan, on
``INFAAS_GRPC_PORT``, beside uvicorn on the same event loop: a query takes the very path
of a REST one (:mod:`api_gateway.oip_service`), with its snapshots, key ring and query
client, and no thread hop. Each method only decodes its message, calls that code, and encodes.

Keys are those of REST (metadata ``authorization: Bearer <key>`` or ``x-api-key``),
checked by the rules of :data:`api_gateway.access.GRPC_ACCESS`. Errors of the tree
become gRPC statuses (:func:`grpc_status`: UNAUTHENTICATED, PERMISSION_DENIED,
INVALID_ARGUMENT, NOT_FOUND, ...) with the message as details and our code in the
trailing metadata ``x-infaas-error``. Messages are limited to ``INFAAS_MAX_BODY_MB``,
as REST bodies are.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError, Message

from api_gateway import oip_service
from api_gateway.access import GRPC_ACCESS, Access
from api_gateway.deps import caller_of, check_role
from api_gateway.grpc_h2 import Call, H2Server, Handler, Limits, Reply, Status
from api_gateway.oip_grpc import grpc_service_pb2 as pb
from api_gateway.oip_service import InferCall, Tensor
from api_gateway.oip_tensors import DATATYPES, datatype_of, raw_output
from api_gateway.state import GatewayState
from api_gateway.upload_limits import MB
from queues.errors import ConfigError, InfaasError, InvalidRequest
from registry.keys import Role
from registry.tenancy import Namespace

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"  # the protocol's name, whatever our package
ERROR_CODE_KEY = "x-infaas-error"
_STATUS = {
    400: Status.INVALID_ARGUMENT,
    401: Status.UNAUTHENTICATED,
    403: Status.PERMISSION_DENIED,
    404: Status.NOT_FOUND,
    405: Status.UNIMPLEMENTED,
    409: Status.FAILED_PRECONDITION,
    413: Status.RESOURCE_EXHAUSTED,
    422: Status.INVALID_ARGUMENT,
    429: Status.RESOURCE_EXHAUSTED,
    503: Status.UNAVAILABLE,
    504: Status.DEADLINE_EXCEEDED,
}
# typed contents by datatype; FP16 has none (raw only)
_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


# a method of the service: the request and the names its caller sees (registry/tenancy.py)
Method = Callable[[Any, Namespace], Awaitable[Message]]


def grpc_status(http_status: int) -> Status:
    """The gRPC status of an error of the tree, by its HTTP status."""
    return _STATUS.get(http_status, Status.INTERNAL)


def _parameter(value: pb.InferParameter) -> Any:
    choice = value.WhichOneof("parameter_choice")
    return getattr(value, choice) if choice is not None else None


def _tensors(request: pb.ModelInferRequest) -> list[Tensor]:
    raws = request.raw_input_contents
    if raws and len(raws) != len(request.inputs):
        raise InvalidRequest(
            f"raw_input_contents has {len(raws)} entries for {len(request.inputs)} inputs; "
            "send one per input, in the order of inputs"
        )
    tensors = []
    for i, tensor in enumerate(request.inputs):
        shape = tuple(tensor.shape)
        if raws:
            if tensor.HasField("contents"):
                raise InvalidRequest(
                    f"input {tensor.name!r} has contents and raw_input_contents; send one"
                )
            tensors.append(Tensor(tensor.name, shape, tensor.datatype, raw=raws[i]))
            continue
        field = _CONTENTS.get(tensor.datatype)
        if field is None and tensor.datatype in DATATYPES:
            raise InvalidRequest(
                f"input {tensor.name!r} is {tensor.datatype}, which has no typed contents; "
                "send it in raw_input_contents"
            )
        data = list(getattr(tensor.contents, field)) if field else []
        tensors.append(Tensor(tensor.name, shape, tensor.datatype, data=data))
    return tensors


def infer_call(request: pb.ModelInferRequest) -> InferCall:
    """A ModelInferRequest as the protocol's transport-neutral call."""
    parameters = {k: _parameter(v) for k, v in request.parameters.items()}
    return InferCall(
        name=request.model_name,
        version=request.model_version or None,
        id=request.id or None,
        parameters=oip_service.parameters_of(parameters),
        inputs=_tensors(request),
        outputs=[o.name for o in request.outputs] or None,
    )


def _metadata_response(document: Mapping[str, Any]) -> pb.ModelMetadataResponse:
    def tensors(key: str) -> list[pb.ModelMetadataResponse.TensorMetadata]:
        return [pb.ModelMetadataResponse.TensorMetadata(**t) for t in document[key]]

    return pb.ModelMetadataResponse(
        name=document["name"],
        versions=document["versions"],
        platform=document["platform"],
        inputs=tensors("inputs"),
        outputs=tensors("outputs"),
    )


class InferenceService:
    """The methods of ``inference.GRPCInferenceService``, each a request to a response."""

    def __init__(self, state: GatewayState, version: str) -> None:
        self.state = state
        self.version = version

    def methods(self) -> dict[str, Method]:
        """By their names in the .proto."""
        return {
            "ServerLive": self.server_live,
            "ServerReady": self.server_ready,
            "ServerMetadata": self.server_metadata,
            "ModelReady": self.model_ready,
            "ModelMetadata": self.model_metadata,
            "ModelInfer": self.model_infer,
        }

    async def server_live(
        self, _request: pb.ServerLiveRequest, _names: Namespace
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(
        self, _request: pb.ServerReadyRequest, _names: Namespace
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=oip_service.server_ready(self.state))

    async def server_metadata(
        self, _request: pb.ServerMetadataRequest, _names: Namespace
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(
            name=oip_service.SERVER_NAME,
            version=self.version,
            extensions=list(oip_service.EXTENSIONS),
        )

    async def model_ready(
        self, request: pb.ModelReadyRequest, names: Namespace
    ) -> pb.ModelReadyResponse:
        version = request.version or None
        ready = await oip_service.model_ready(self.state, names, request.name, version)
        return pb.ModelReadyResponse(ready=ready)

    async def model_metadata(
        self, request: pb.ModelMetadataRequest, names: Namespace
    ) -> pb.ModelMetadataResponse:
        version = request.version or None
        target = await oip_service.find_target(self.state, names, request.name, version)
        return _metadata_response(oip_service.metadata(target, names))

    async def model_infer(
        self, request: pb.ModelInferRequest, names: Namespace
    ) -> pb.ModelInferResponse:
        call = infer_call(request)
        answer = await oip_service.infer(self.state, names, call)
        variant, outputs = answer.variant, answer.outputs
        return pb.ModelInferResponse(
            model_name=names.outside(variant.model),
            model_version=names.outside(variant.id),
            id=call.id if call.id is not None else answer.served.request_id,
            parameters={
                "app": pb.InferParameter(string_param=names.outside(variant.app)),
                "hardware": pb.InferParameter(string_param=variant.hardware),
            },
            outputs=[
                pb.ModelInferResponse.InferOutputTensor(
                    name=answer.output_name,
                    datatype=datatype_of(outputs.dtype),
                    shape=list(outputs.shape),
                )
            ],
            raw_output_contents=[raw_output(outputs)],
        )


def _metadata_value(metadata: list[tuple[str, str]], key: str) -> str | None:
    for name, value in metadata:
        if name == key:
            return value
    return None


@dataclass(frozen=True, slots=True)
class _Method:
    name: str
    parse: Callable[[bytes], Message]
    run: Method
    access: Access


def dispatcher(
    state: GatewayState, version: str, access: Mapping[str, Access] = GRPC_ACCESS
) -> Handler:
    """Every method of the .proto's service, under the protocol's service name, behind
    its access rule (a method without one needs ``admin``, as a REST route does); errors
    of the tree as gRPC statuses, our code in the trailer ``x-infaas-error``."""
    service = InferenceService(state, version).methods()
    table = {}
    for method in pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods:
        request_type = getattr(pb, method.input_type.name)
        table[f"/{SERVICE}/{method.name}"] = _Method(
            method.name,
            request_type.FromString,
            service[method.name],
            access.get(method.name, Role.ADMIN),
        )

    async def handle(call: Call) -> Reply:
        method = table.get(call.path)
        if method is None:
            return Reply(
                Status.UNIMPLEMENTED,
                details=f"no method {call.path}; this server has {SERVICE}'s "
                f"{', '.join(sorted(m.name for m in table.values()))}",
            )
        try:
            request = method.parse(call.message)
        except DecodeError:
            return Reply(
                Status.INVALID_ARGUMENT,
                details=f"the request is not an {SERVICE}/{method.name} request message "
                "(protobuf did not parse it)",
            )
        try:
            caller = await caller_of(
                state,
                method.access,
                _metadata_value(call.metadata, "authorization"),
                _metadata_value(call.metadata, "x-api-key"),
            )
            check_role(caller, method.access)
            response = await method.run(request, caller.names)
        except InfaasError as exc:
            return Reply(
                grpc_status(exc.status_code),
                details=exc.message,
                trailers=((ERROR_CODE_KEY, exc.code),),
            )
        except Exception:
            log.exception("gRPC %s/%s failed", SERVICE, method.name)
            return Reply(
                Status.INTERNAL,
                details="internal error; the gateway's log has the details",
                trailers=((ERROR_CODE_KEY, "internal_error"),),
            )
        return Reply(message=response.SerializeToString())

    return handle


@dataclass(frozen=True, slots=True)
class GRPCServer:
    server: H2Server
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}" if ":" not in self.host else f"[{self.host}]:{self.port}"


@asynccontextmanager
async def grpc_service(
    state: GatewayState, version: str, access: Mapping[str, Access] = GRPC_ACCESS
) -> AsyncIterator[GRPCServer | None]:
    """The gRPC server for the lifespan of the app (None when ``INFAAS_GRPC_PORT=off``)."""
    settings = state.settings
    port = settings.grpc_listen_port
    if port is None:
        yield None
        return
    server = H2Server(
        dispatcher(state, version, access), Limits(max_message_bytes=int(settings.max_body_mb * MB))
    )
    try:
        bound = await server.start(settings.host, port)
    except OSError as exc:
        raise ConfigError(
            f"the gRPC port {settings.host}:{port} cannot be bound ({exc.strerror or exc}); is it "
            "in use? Set INFAAS_GRPC_PORT to another port, 0 for any free one, or off"
        ) from exc
    try:
        yield GRPCServer(server, settings.host, bound)
    finally:
        await server.stop(grace_s=1.0)

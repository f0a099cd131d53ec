"""The Open Inference Protocol over gRPC (api_gateway/grpc_server.py), on
tests/oip_support.py's gateway: its real gRPC server on a free loopback port, called by
Triton's own asyncio client and, for what that client cannot send, by a bare channel
with our messages. tests/integration/test_oip_clients.py runs the same against the
whole system.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
import pytest
import tritonclient.grpc.aio as triton
from fastapi import FastAPI
from tritonclient.utils import InferenceServerException

from api_gateway.access import GRPC_ACCESS, Access, Open
from api_gateway.grpc_h2 import Status
from api_gateway.grpc_server import ERROR_CODE_KEY, SERVICE, grpc_service, grpc_status
from api_gateway.oip_grpc import grpc_service_pb2 as pb
from registry.keys import KeyStore, Role
from tests.oip_support import MLP, SVC, oip_app

T = TypeVar("T")
ROWS = (np.arange(128, dtype=np.float32).reshape(2, 64) / 100).astype(np.float32)


@pytest.fixture
def app(tmp_path: Path) -> FastAPI:
    return oip_app(tmp_path, grpc_port=0)


def on_grpc(
    app: FastAPI,
    calls: Callable[[str], Awaitable[T]],
    access: Mapping[str, Access] = GRPC_ACCESS,
) -> T:
    """``calls(address)`` while the app's gRPC server runs."""

    async def main() -> T:
        state = app.state.infaas
        await state.refresh(force=True)
        async with grpc_service(state, app.version, access) as server:
            assert server is not None
            return await calls(server.address)

    return asyncio.run(main())


def infer_input(rows: np.ndarray = ROWS, name: str = "x") -> triton.InferInput:
    tensor = triton.InferInput(name, list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    return tensor


async def raw_call(address: str, method: str, request: Any, response_type: Any) -> Any:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = channel.unary_unary(
            f"/{SERVICE}/{method}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=response_type.FromString,
        )
        return await stub(request)


async def refused(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


def error_code(error: grpc.aio.AioRpcError) -> str | None:
    value = dict(error.trailing_metadata() or ()).get(ERROR_CODE_KEY)
    return str(value) if value is not None else None


# -- with Triton's client


def test_server_and_model_probes(app: FastAPI) -> None:
    async def calls(address: str) -> dict[str, Any]:
        client = triton.InferenceServerClient(address)
        try:
            return {
                "live": await client.is_server_live(),
                "ready": await client.is_server_ready(),
                "server": await client.get_server_metadata(as_json=True),
                "app_ready": await client.is_model_ready("digits"),
                "version_ready": await client.is_model_ready("digits-svc", SVC),
                "meta": await client.get_model_metadata("digits-svc", as_json=True),
            }
        finally:
            await client.close()

    got = on_grpc(app, calls)
    assert (got["live"], got["ready"], got["app_ready"], got["version_ready"]) == (True,) * 4
    assert got["server"]["name"] == "infaas"
    assert got["server"]["extensions"] == ["binary_tensor_data"]
    meta = got["meta"]
    assert (meta["name"], meta["versions"], meta["platform"]) == ("digits-svc", [SVC], "onnx")
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": ["-1", "64"]}]
    assert meta["outputs"] == [{"name": "probs", "datatype": "FP32", "shape": ["-1", "10"]}]


def test_infer_on_an_app_a_model_and_a_version(app: FastAPI) -> None:
    async def calls(address: str) -> list[triton.InferResult]:
        client = triton.InferenceServerClient(address)
        try:
            on_app = await client.infer(
                "digits",
                [infer_input()],
                outputs=[triton.InferRequestedOutput("output")],
                request_id="g1",
                parameters={"min_accuracy": 0.95, "latency_ms": 50},
            )
            on_model = await client.infer("digits-mlp", [infer_input()])
            on_version = await client.infer("digits", [infer_input()], model_version=MLP)
            return [on_app, on_model, on_version]
        finally:
            await client.close()

    on_app, on_model, on_version = on_grpc(app, calls)
    response = on_app.get_response()
    assert (response.model_name, response.model_version, response.id) == ("digits-svc", SVC, "g1")
    assert response.parameters["app"].string_param == "digits"
    np.testing.assert_array_equal(on_app.as_numpy("output"), ROWS[:, :10])
    assert on_model.get_response().model_version == MLP
    assert on_version.get_response().model_version == MLP
    np.testing.assert_array_equal(on_version.as_numpy("output"), ROWS[:, :10])
    queries = app.state.infaas.services.client.queries
    assert [q.variant for q in queries] == [SVC, MLP, MLP]


def test_errors_carry_their_status_and_code_and_change_nothing(app: FastAPI) -> None:
    before = app.state.infaas.accounting.to_doc()

    async def calls(address: str) -> list[InferenceServerException]:
        client = triton.InferenceServerClient(address)
        errors = []
        try:
            for call in (
                client.infer("nope", [infer_input()]),
                client.infer(
                    "digits", [infer_input(ROWS.astype(np.float64).astype(np.float32)[:, :32])]
                ),
                client.infer("digits", [infer_input(name="y")]),
                client.infer("digits", [infer_input()], outputs=[triton.InferRequestedOutput("z")]),
                client.infer("digits", [infer_input()], parameters={"min_accuracy": 2}),
                client.infer("digits-svc", [infer_input()], parameters={"min_accuracy": 0.9}),
                client.get_model_metadata("digits", model_version="nope"),
            ):
                with pytest.raises(InferenceServerException) as info:
                    await call
                errors.append(info.value)
        finally:
            await client.close()
        return errors

    errors = on_grpc(app, calls)
    got = [(str(e.status()), e.message()) for e in errors]
    expected = [
        ("StatusCode.NOT_FOUND", "no variant, model or app named 'nope'"),
        ("StatusCode.INVALID_ARGUMENT", "has shape [2, 32]; this model takes 'x': FP32"),
        ("StatusCode.INVALID_ARGUMENT", "input 'y' is not an input of this model"),
        ("StatusCode.INVALID_ARGUMENT", "output 'z' is not an output of 'digits'"),
        ("StatusCode.INVALID_ARGUMENT", "parameters.min_accuracy"),
        ("StatusCode.INVALID_ARGUMENT", "name the app 'digits'"),
        ("StatusCode.NOT_FOUND", "has no version 'nope'"),
    ]
    for (status, message), (want_status, words) in zip(got, expected, strict=True):
        assert status == want_status, message
        assert words in message
    assert not app.state.infaas.services.client.queries
    assert app.state.infaas.accounting.to_doc() == before


# -- with a bare channel: what Triton's client does not send


def test_typed_contents_and_raw_contents_mistakes(app: FastAPI) -> None:
    def request(**changes: Any) -> pb.ModelInferRequest:
        tensor = pb.ModelInferRequest.InferInputTensor(
            name="x",
            datatype="FP32",
            shape=[2, 64],
            contents=pb.InferTensorContents(fp32_contents=ROWS.reshape(-1).tolist()),
        )
        return pb.ModelInferRequest(**({"model_name": "digits", "inputs": [tensor]} | changes))

    async def calls(address: str) -> tuple[Any, list[grpc.aio.AioRpcError]]:
        answer = await raw_call(address, "ModelInfer", request(), pb.ModelInferResponse)
        errors = [
            await refused(
                raw_call(
                    address,
                    "ModelInfer",
                    request(raw_input_contents=[b"", b""]),
                    pb.ModelInferResponse,
                )
            ),
            await refused(
                raw_call(
                    address,
                    "ModelInfer",
                    request(raw_input_contents=[ROWS.tobytes()]),
                    pb.ModelInferResponse,
                )
            ),
            await refused(
                raw_call(address, "ModelInfer", request(model_name="nope"), pb.ModelInferResponse)
            ),
        ]
        return answer, errors

    answer, (count, both, unknown) = on_grpc(app, calls)
    [raw] = answer.raw_output_contents
    np.testing.assert_array_equal(np.frombuffer(raw, "<f4").reshape(2, 10), ROWS[:, :10])
    assert count.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "raw_input_contents has 2 entries for 1 inputs" in (count.details() or "")
    assert error_code(count) == "invalid_request"
    assert "has contents and raw_input_contents" in (both.details() or "")
    assert (unknown.code(), error_code(unknown)) == (grpc.StatusCode.NOT_FOUND, "not_found")


def test_a_raw_size_that_does_not_match_the_shape_is_refused(app: FastAPI) -> None:
    tensor = pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[2, 64])
    request = pb.ModelInferRequest(
        model_name="digits", inputs=[tensor], raw_input_contents=[ROWS.tobytes()[:500]]
    )

    async def calls(address: str) -> grpc.aio.AioRpcError:
        return await refused(raw_call(address, "ModelInfer", request, pb.ModelInferResponse))

    error = on_grpc(app, calls)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "takes 512 bytes; its raw data holds 500 bytes" in (error.details() or "")
    assert not app.state.infaas.services.client.queries


def test_a_message_that_is_not_the_methods_and_an_unknown_method_are_refused(
    app: FastAPI,
) -> None:
    async def calls(address: str) -> tuple[grpc.aio.AioRpcError, grpc.aio.AioRpcError]:
        async with grpc.aio.insecure_channel(address) as channel:
            garbage: Any = channel.unary_unary(f"/{SERVICE}/ModelInfer")
            unknown: Any = channel.unary_unary(f"/{SERVICE}/ModelStreamInfer")
            return (
                await refused(garbage(b"\xff\xff\xff not protobuf")),
                await refused(unknown(b"")),
            )

    garbage, unknown = on_grpc(app, calls)
    assert garbage.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "is not an inference.GRPCInferenceService/ModelInfer request" in (
        garbage.details() or ""
    )
    assert unknown.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "ModelInfer, ModelMetadata, ModelReady" in (unknown.details() or "")
    assert not app.state.infaas.services.client.queries


# -- keys


def test_keys_as_on_rest(tmp_path: Path) -> None:
    app = oip_app(tmp_path, grpc_port=0, auth=True)
    store = KeyStore(app.state.infaas.services.catalog)
    query = store.create("default", Role.QUERY).key
    deploy = store.create("default", Role.DEPLOY).key
    revoked = store.create("default", Role.ADMIN)
    store.revoke(revoked.record.id)
    # no method of the protocol needs more than a query key; a stricter rule shows 403
    access = {**GRPC_ACCESS, "ModelMetadata": Role.DEPLOY}

    async def calls(address: str) -> dict[str, Any]:
        client = triton.InferenceServerClient(address)
        try:

            async def status(call: Awaitable[Any]) -> str:
                try:
                    await call
                except InferenceServerException as exc:
                    return str(exc.status())
                return "OK"

            return {
                "live": await status(client.is_server_live()),
                "none": await status(client.is_model_ready("digits")),
                "revoked": await status(
                    client.is_model_ready("digits", headers={"x-api-key": revoked.key})
                ),
                "bearer": await status(
                    client.infer(
                        "digits", [infer_input()], headers={"authorization": f"Bearer {query}"}
                    )
                ),
                "x-api-key": await status(
                    client.is_model_ready("digits", headers={"x-api-key": query})
                ),
                "small-role": await status(
                    client.get_model_metadata("digits", headers={"x-api-key": query})
                ),
                "right-role": await status(
                    client.get_model_metadata("digits", headers={"x-api-key": deploy})
                ),
            }
        finally:
            await client.close()

    assert on_grpc(app, calls, access) == {
        "live": "OK",
        "none": "StatusCode.UNAUTHENTICATED",
        "revoked": "StatusCode.UNAUTHENTICATED",
        "bearer": "OK",
        "x-api-key": "OK",
        "small-role": "StatusCode.PERMISSION_DENIED",
        "right-role": "OK",
    }


def test_every_method_of_the_proto_has_a_rule() -> None:
    methods = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods_by_name
    assert sorted(methods) == sorted(GRPC_ACCESS)
    assert {m for m, rule in GRPC_ACCESS.items() if rule is Open.PUBLIC} == {
        "ServerLive",
        "ServerReady",
    }


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (422, grpc.StatusCode.INVALID_ARGUMENT),
        (401, grpc.StatusCode.UNAUTHENTICATED),
        (403, grpc.StatusCode.PERMISSION_DENIED),
        (404, grpc.StatusCode.NOT_FOUND),
        (409, grpc.StatusCode.FAILED_PRECONDITION),
        (429, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (503, grpc.StatusCode.UNAVAILABLE),
        (504, grpc.StatusCode.DEADLINE_EXCEEDED),
        (500, grpc.StatusCode.INTERNAL),
    ],
)
def test_grpc_status_of_an_error(status: int, code: grpc.StatusCode) -> None:
    assert grpc_status(status) == code.value[0]


def test_our_status_codes_are_grpcs() -> None:
    assert {s.name: s.value for s in Status} == {c.name: c.value[0] for c in grpc.StatusCode}


def test_the_grpc_port_follows_the_http_port_or_is_off(tmp_path: Path) -> None:
    from api_gateway.settings import GatewaySettings

    assert GatewaySettings().grpc_listen_port == 8081
    assert GatewaySettings(port=9000).grpc_listen_port == 9001
    assert GatewaySettings(port=0).grpc_listen_port == 0
    assert GatewaySettings(grpc_port="off").grpc_listen_port is None
    with pytest.raises(ValueError, match="give gRPC a port of its own"):
        GatewaySettings(port=9000, grpc_port=9000)
    off = oip_app(tmp_path, grpc_port="off")

    async def main() -> Any:
        async with grpc_service(off.state.infaas, off.version) as server:
            return server

    assert asyncio.run(main()) is None

"""The binary tensor data extension of the Open Inference Protocol's REST routes
(api_gateway/oip_binary.py, routes/oip.py), on tests/oip_support.py's gateway.

Bodies are built here byte by byte as the extension defines them (a JSON header, then
the inputs' raw little-endian bytes); tests/integration/test_oip_clients.py checks the
same routes with Triton's own client. Every refusal must leave the system as it was: no
query sent, nothing accounted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from api_gateway.oip_binary import BinaryClaim, slice_inputs, split_body
from queues.errors import InvalidRequest
from tests.oip_support import SVC, call, oip_app, oip_error, tensor

ROWS = (np.arange(128, dtype=np.float32).reshape(2, 64) / 100).astype(np.float32)
INFER = "/v2/models/digits/infer"


@pytest.fixture
def app(tmp_path: Path) -> FastAPI:
    return oip_app(tmp_path)


def binary_input(array: np.ndarray = ROWS, **changes: Any) -> dict[str, Any]:
    return {
        "name": "x",
        "shape": list(array.shape),
        "datatype": "FP32",
        "parameters": {"binary_data_size": array.nbytes},
    } | changes


def binary_body(header: dict[str, Any], *raws: bytes) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header).encode()
    return head + b"".join(raws), {"Inference-Header-Content-Length": str(len(head))}


def post(app: FastAPI, body: bytes, headers: dict[str, str], path: str = INFER) -> httpx.Response:
    return call(app, "POST", path, content=body, headers=headers)


def split_response(response: httpx.Response) -> tuple[dict[str, Any], bytes]:
    length = int(response.headers["inference-header-content-length"])
    head: dict[str, Any] = json.loads(response.content[:length])
    return head, response.content[length:]


def unchanged(app: FastAPI, accounting_before: dict[str, Any]) -> None:
    state = app.state.infaas
    assert not state.services.client.queries
    assert state.accounting.to_doc() == accounting_before


# -- answers


def test_binary_input_json_output(app: FastAPI) -> None:
    body, headers = binary_body({"inputs": [binary_input()]}, ROWS.tobytes())
    response = post(app, body, headers)
    assert response.status_code == 200, response.text
    assert "inference-header-content-length" not in response.headers
    [out] = response.json()["outputs"]
    np.testing.assert_array_equal(np.asarray(out["data"], np.float32).reshape(2, 10), ROWS[:, :10])
    [query] = app.state.infaas.services.client.queries
    np.testing.assert_array_equal(query.inputs, ROWS)


def test_binary_input_binary_output(app: FastAPI) -> None:
    header = {
        "id": "b1",
        "inputs": [binary_input()],
        "outputs": [{"name": "output", "parameters": {"binary_data": True}}],
        "parameters": {"min_accuracy": 0.95},
    }
    response = post(app, *binary_body(header, ROWS.tobytes()))
    assert response.status_code == 200, response.text
    assert response.headers["x-infaas-variant"] == SVC
    assert response.headers["content-type"] == "application/octet-stream"
    head, raw = split_response(response)
    assert (head["id"], head["model_version"]) == ("b1", SVC)
    [out] = head["outputs"]
    assert out == {
        "name": "output",
        "datatype": "FP32",
        "shape": [2, 10],
        "parameters": {"binary_data_size": 80},
    }
    np.testing.assert_array_equal(np.frombuffer(raw, "<f4").reshape(2, 10), ROWS[:, :10])


def test_json_input_with_binary_data_output(app: FastAPI) -> None:
    body = {"inputs": [tensor()], "parameters": {"binary_data_output": True}}
    head, raw = split_response(call(app, "POST", INFER, json=body))
    assert head["outputs"][0]["parameters"] == {"binary_data_size": len(raw)}
    np.testing.assert_array_equal(np.frombuffer(raw, "<f4").reshape(2, 10), ROWS[:, :10])
    # an output's own binary_data wins over the request's binary_data_output
    body["outputs"] = [{"name": "output", "parameters": {"binary_data": False}}]
    response = call(app, "POST", INFER, json=body)
    assert "inference-header-content-length" not in response.headers
    assert response.json()["outputs"][0]["shape"] == [2, 10]


def test_an_empty_binary_section_is_plain_json(app: FastAPI) -> None:
    body, headers = binary_body({"inputs": [tensor()]})
    assert post(app, body, headers).status_code == 200


# -- refusals: a clear protocol error, and nothing changed

TWO_GB = 2**31


@pytest.mark.parametrize(
    ("header", "raws", "header_length", "status", "code", "words"),
    [
        (
            {"inputs": [binary_input()]},
            [ROWS.tobytes()],
            "100000",
            400,
            "invalid_request",
            "says the JSON header is 100000 bytes, but the whole body is",
        ),
        (
            {"inputs": [binary_input()]},
            [ROWS.tobytes()],
            "ten",
            400,
            "invalid_request",
            "a whole number of 0 or more; got 'ten'",
        ),
        (
            {"inputs": [binary_input()]},
            [ROWS.tobytes()],
            "-5",
            400,
            "invalid_request",
            "a whole number of 0 or more; got '-5'",
        ),
        (
            {"inputs": [binary_input()]},
            [ROWS.tobytes()],
            "20",
            400,
            "invalid_request",
            "the body is not valid JSON",
        ),
        (
            {"inputs": [binary_input(parameters={"binary_data_size": 500})]},
            [ROWS.tobytes()[:500]],
            None,
            400,
            "invalid_request",
            "binary_data_size is 500 bytes, but shape [2, 64] of FP32 takes 512",
        ),
        (
            {
                "inputs": [
                    binary_input(shape=[TWO_GB // 256, 64], parameters={"binary_data_size": TWO_GB})
                ]
            },
            [ROWS.tobytes()],
            None,
            400,
            "invalid_request",
            f"claims {TWO_GB} bytes of binary data, but only 512 follow",
        ),
        (
            {"inputs": [binary_input()]},
            [ROWS.tobytes(), b"\0" * 8],
            None,
            400,
            "invalid_request",
            "8 bytes follow the JSON header that no input claims",
        ),
        (
            {"inputs": [binary_input(datatype="FP64", parameters={"binary_data_size": 1024})]},
            [ROWS.astype(np.float64).tobytes()],
            None,
            400,
            "invalid_input",
            "has datatype FP64; this model takes 'x': FP32",
        ),
        (
            {"inputs": [binary_input(ROWS.reshape(4, 32))]},
            [ROWS.tobytes()],
            None,
            400,
            "invalid_input",
            "has shape [4, 32]; this model takes 'x': FP32, shape [-1, 64]",
        ),
        (
            {"inputs": [binary_input(data=[0.0] * 128)]},
            [ROWS.tobytes()],
            None,
            400,
            "invalid_request",
            "has both data and parameters.binary_data_size",
        ),
        (
            {"inputs": [binary_input(parameters={})]},
            [],
            None,
            400,
            "invalid_input",
            "input 'x' has no data",
        ),
        (
            {"inputs": [binary_input(parameters={"binary_data_size": "512"})]},
            [ROWS.tobytes()],
            None,
            400,
            "invalid_request",
            "binary_data_size",
        ),
        (
            {"inputs": [binary_input()], "outputs": [{"name": "probs"}]},
            [ROWS.tobytes()],
            None,
            400,
            "invalid_input",
            "output 'probs' is not an output of 'digits'",
        ),
        (
            {
                "inputs": [binary_input()],
                "outputs": [{"name": "output", "parameters": {"classification": 3}}],
            },
            [ROWS.tobytes()],
            None,
            400,
            "invalid_request",
            "classification, an extension this server does not serve",
        ),
        (
            {"inputs": [binary_input()]},
            [np.full((2, 64), np.nan, np.float32).tobytes()],
            None,
            400,
            "invalid_input",
            "not finite",
        ),
    ],
    ids=[
        "header-longer-than-body",
        "header-not-a-number",
        "header-negative",
        "header-too-short",
        "size-not-shape",
        "claims-2gb",
        "bytes-left-over",
        "datatype",
        "shape",
        "data-and-binary",
        "no-data",
        "size-not-an-integer",
        "unknown-output",
        "classification",
        "nan",
    ],
)
def test_bad_binary_requests_are_refused_and_change_nothing(
    app: FastAPI,
    header: dict[str, Any],
    raws: list[bytes],
    header_length: str | None,
    status: int,
    code: str,
    words: str,
) -> None:
    before = app.state.infaas.accounting.to_doc()
    body, headers = binary_body(header, *raws)
    if header_length is not None:
        headers["Inference-Header-Content-Length"] = header_length
    assert words in oip_error(post(app, body, headers), status, code)
    unchanged(app, before)


def test_an_unknown_model_is_404(app: FastAPI) -> None:
    before = app.state.infaas.accounting.to_doc()
    body, headers = binary_body({"inputs": [binary_input()]}, ROWS.tobytes())
    response = post(app, body, headers, "/v2/models/nope/infer")
    assert "no variant, model or app named 'nope'" in oip_error(response, 404, "not_found")
    unchanged(app, before)


def test_a_binary_body_over_the_limit_is_413_before_parsing(tmp_path: Path) -> None:
    app = oip_app(tmp_path, max_body_mb=0.001)  # 1048 bytes
    rows = np.zeros((8, 64), np.float32)
    body, headers = binary_body({"inputs": [binary_input(rows)]}, rows.tobytes())
    response = post(app, body, headers)
    assert "INFAAS_MAX_BODY_MB" in oip_error(response, 413, "body_too_large")
    assert not app.state.infaas.services.client.queries


# -- the pure helpers


def test_split_body_without_the_header_is_all_json() -> None:
    header, binary = split_body(b'{"a": 1}', None)
    assert (bytes(header), bytes(binary)) == (b'{"a": 1}', b"")
    header, binary = split_body(b'{"a": 1}xyz', " 8 ")
    assert (bytes(header), bytes(binary)) == (b'{"a": 1}', b"xyz")


def test_slice_inputs_in_order_in_place() -> None:
    claims = [
        BinaryClaim("a", (2,), "INT32", 8, has_data=False),
        BinaryClaim("b", (1,), "FP32", None, has_data=True),
        BinaryClaim("c", (3,), "UINT8", 3, has_data=False),
    ]
    raw = memoryview(b"01234567abc")
    a, b, c = slice_inputs(claims, raw)
    assert (a is not None and bytes(a), b, c is not None and bytes(c)) == (
        b"01234567",
        None,
        b"abc",
    )
    with pytest.raises(InvalidRequest, match="1 bytes follow"):
        slice_inputs(claims[:1], memoryview(b"012345678"))

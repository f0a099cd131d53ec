"""The Open Inference Protocol (KServe v2) over REST (api_gateway/routes/oip.py).

The gateway app runs in-process (httpx's ASGI transport) on tests/oip_support.py's
catalog and stub query client. Tensor conversion is tested as the pure function it is.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI

from api_gateway.oip_service import resolve
from api_gateway.oip_tensors import DATATYPES, decode_input, encode_output
from queues.errors import InvalidInput
from registry.types import App, CatalogSnapshot, InputSignature, Model
from tests import factories as f
from tests.oip_support import MLP, SIGNATURE, SVC, call, oip_app, oip_error, tensor


@pytest.fixture
def app(tmp_path: Path) -> FastAPI:
    return oip_app(tmp_path)


# -- server


def test_server_metadata_and_health(app: FastAPI) -> None:
    meta = call(app, "GET", "/v2")
    assert meta.status_code == 200
    assert meta.json() == {
        "name": "infaas",
        "version": app.version,
        "extensions": ["binary_tensor_data"],
    }
    assert call(app, "GET", "/v2/health/live").json() == {"live": True}
    ready = call(app, "GET", "/v2/health/ready")
    assert (ready.status_code, ready.json()) == (200, {"ready": True})


# -- metadata


def test_metadata_of_an_app(app: FastAPI) -> None:
    body = call(app, "GET", "/v2/models/digits").json()
    assert body == {
        "name": "digits",
        "versions": [MLP, SVC],
        "platform": "infaas_app",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 64]}],
        "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, 10]}],
        "parameters": {"kind": "app", "app": "digits", "task": "classification"},
    }


def test_metadata_of_a_model_and_of_a_variant(app: FastAPI) -> None:
    model = call(app, "GET", "/v2/models/digits-svc").json()
    assert (model["versions"], model["platform"]) == ([SVC], "onnx")
    assert model["outputs"] == [{"name": "probs", "datatype": "FP32", "shape": [-1, 10]}]
    assert model["parameters"]["kind"] == "model"
    variant = call(app, "GET", f"/v2/models/{SVC}").json()
    assert (variant["name"], variant["versions"]) == (SVC, [SVC])
    assert variant["parameters"]["kind"] == "variant"
    version = call(app, "GET", f"/v2/models/digits/versions/{MLP}").json()
    assert (version["name"], version["versions"]) == ("digits", [MLP])


def test_ready_of_a_name_and_of_a_version(app: FastAPI) -> None:
    ready = call(app, "GET", "/v2/models/digits/ready")
    assert (ready.status_code, ready.json()) == (200, {"name": "digits", "ready": True})
    assert call(app, "GET", f"/v2/models/digits-svc/versions/{SVC}/ready").status_code == 200


def test_unknown_names_and_versions_are_404(app: FastAPI) -> None:
    message = oip_error(call(app, "GET", "/v2/models/nope"), 404, "not_found")
    assert "no variant, model or app named 'nope'" in message
    response = call(app, "GET", f"/v2/models/digits-svc/versions/{MLP}")
    assert MLP in oip_error(response, 404, "unknown_variant")
    infer = call(app, "POST", "/v2/models/nope/infer", json={"inputs": [tensor()]})
    oip_error(infer, 404, "not_found")


def test_a_variant_wins_over_a_model_and_a_model_over_an_app() -> None:
    app = App("digits", "classification", SIGNATURE)
    model = Model("digits", "digits", "onnx", "k", "v")
    variant = f.variant("digits", 0.9, 1.0)
    both = CatalogSnapshot(1, {"digits": app}, {"digits": model}, {})
    target = resolve(both, "digits", None)
    assert target is not None
    assert target.kind == "model"
    every = CatalogSnapshot(1, {"digits": app}, {"digits": model}, {"digits": variant})
    target = resolve(every, "digits", None)
    assert target is not None
    assert target.kind == "variant"


def test_metadata_lists_only_the_versions_that_can_serve(app: FastAPI) -> None:
    """A variant that failed or is still profiling is no version a client can ask for
    (a wine model registered by hand listed its two failed int8 variants)."""
    catalog = app.state.infaas.services.catalog
    failed = replace(f.variant("digits-mlp.onnx-int8.cpu", 0.8, 0.5), status="failed")
    catalog.upsert_variant(failed)
    assert call(app, "GET", "/v2/models/digits").json()["versions"] == [MLP, SVC]
    assert call(app, "GET", "/v2/models/digits-mlp").json()["versions"] == [MLP]
    itself = call(app, "GET", f"/v2/models/{failed.id}").json()
    assert itself["versions"] == [failed.id]


def test_the_repository_index_lists_apps_and_variants(app: FastAPI) -> None:
    catalog = app.state.infaas.services.catalog
    profiling = replace(f.variant("digits-mlp.onnx-int8.cpu", 0.8, 0.5), status="profiling")
    catalog.upsert_variant(profiling)
    every = call(app, "POST", "/v2/repository/index").json()
    assert every == [
        {"name": "digits", "state": "READY"},
        {"name": "digits-mlp", "version": "digits-mlp.onnx-fp32.cpu", "state": "READY"},
        {
            "name": "digits-mlp",
            "version": "digits-mlp.onnx-int8.cpu",
            "state": "UNAVAILABLE",
            "reason": "variant is profiling",
        },
        {"name": "digits-svc", "version": SVC, "state": "READY"},
    ]
    ready = call(app, "POST", "/v2/repository/index", json={"ready": True}).json()
    assert [e.get("version") for e in ready] == [None, MLP, SVC]
    refused = call(app, "POST", "/v2/repository/index", json={"ready": "yes"})
    assert "ready" in oip_error(refused, 400, "invalid_request")


# -- infer


def test_infer_on_an_app_picks_a_variant_and_says_which(app: FastAPI) -> None:
    body = {"id": "q1", "inputs": [tensor()], "parameters": {"min_accuracy": 0.95}}
    response = call(app, "POST", "/v2/models/digits/infer", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert response.headers["x-infaas-variant"] == SVC
    assert (answer["model_name"], answer["model_version"], answer["id"]) == (
        "digits-svc",
        SVC,
        "q1",
    )
    [out] = answer["outputs"]
    assert (out["name"], out["datatype"], out["shape"]) == ("output", "FP32", [2, 10])
    expected = (np.arange(128, dtype=np.float32).reshape(2, 64) / 100)[:, :10]
    np.testing.assert_allclose(np.asarray(out["data"]).reshape(2, 10), expected, rtol=1e-6)
    [query] = app.state.infaas.services.client.queries
    assert query.inputs.dtype == np.float32
    assert query.variant == SVC


def test_infer_on_a_model_and_on_a_version(app: FastAPI) -> None:
    flat = tensor(1) | {"data": list(range(64))}
    by_model = call(app, "POST", "/v2/models/digits-mlp/infer", json={"inputs": [flat]})
    assert by_model.json()["model_version"] == MLP
    assert by_model.json()["outputs"][0]["name"] == "output"
    url = f"/v2/models/digits/versions/{SVC}/infer"
    by_version = call(app, "POST", url, json={"inputs": [flat], "outputs": [{"name": "output"}]})
    assert by_version.headers["x-infaas-variant"] == SVC
    assert by_version.json()["outputs"][0]["data"][:3] == [0.0, 1.0, 2.0]


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"datatype": "FP64"}, "has datatype FP64; this model takes 'x': FP32"),
        ({"datatype": "BYTES"}, "which this server does not take"),
        ({"shape": [2, 32]}, "has shape [2, 32]; this model takes 'x': FP32, shape [-1, 64]"),
        ({"shape": [3, 64]}, "holds 192 values; its data holds 128"),
        ({"name": "y"}, "input 'y' is not an input of this model"),
        ({"data": [["a"] * 64] * 2}, "got strings"),
    ],
    ids=["datatype", "unknown-datatype", "signature-shape", "data-length", "name", "strings"],
)
def test_bad_inputs_are_400_with_what_the_model_takes(
    app: FastAPI, changes: dict[str, Any], words: str
) -> None:
    response = call(app, "POST", "/v2/models/digits/infer", json={"inputs": [tensor(**changes)]})
    assert words in oip_error(response, 400, "invalid_input")
    assert not app.state.infaas.services.client.queries


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        ({"inputs": []}, "invalid_request", "inputs"),
        ({"inputs": [tensor(), tensor()]}, "invalid_input", "takes one"),
        ({"inputs": [tensor()], "outputs": [{"name": "z"}]}, "invalid_input", "output 'z'"),
        ({"inputs": [tensor(0) | {"data": []}]}, "empty_batch", "at least one"),
        (
            {"inputs": [tensor()], "parameters": {"binary_data_output": "yes"}},
            "invalid_request",
            "parameters.binary_data_output",
        ),
        (
            {"inputs": [tensor()], "parameters": {"min_accuracy": 2}},
            "invalid_request",
            "parameters.min_accuracy",
        ),
    ],
    ids=["no-inputs", "two-inputs", "unknown-output", "empty", "binary", "bad-parameter"],
)
def test_bad_requests_are_400(app: FastAPI, body: dict[str, Any], code: str, words: str) -> None:
    response = call(app, "POST", "/v2/models/digits/infer", json=body)
    assert words in oip_error(response, 400, code)


def test_app_only_parameters_are_refused_on_a_model(app: FastAPI) -> None:
    body = {"inputs": [tensor()], "parameters": {"min_accuracy": 0.9}}
    response = call(app, "POST", "/v2/models/digits-svc/infer", json=body)
    assert "name the app 'digits'" in oip_error(response, 400, "invalid_request")


def test_no_variant_meets_the_needs_is_409(app: FastAPI) -> None:
    body = {"inputs": [tensor()], "parameters": {"min_accuracy": 0.999}}
    response = call(app, "POST", "/v2/models/digits/infer", json=body)
    oip_error(response, 409, "no_eligible_variant")


# -- tensor conversion (pure)


def test_every_datatype_decodes_to_its_dtype() -> None:
    for datatype, dtype in DATATYPES.items():
        signature = InputSignature("x", dtype.name, (-1, 2))
        data = [True, False] if datatype == "BOOL" else [1, 2]
        array = decode_input("x", [1, 2], datatype, data, signature)
        assert array.dtype == dtype
        assert array.shape == (1, 2)


def test_nested_data_must_match_its_shape() -> None:
    signature = InputSignature("x", "int32", (-1, 2, 2))
    nested = [[[1, 2], [3, 4]]]
    assert decode_input("x", [1, 2, 2], "INT32", nested, signature).tolist() == nested
    with pytest.raises(InvalidInput, match=r"nested data of shape \[2, 2\]"):
        decode_input("x", [1, 2, 2], "INT32", [[1, 2], [3, 4]], signature)
    with pytest.raises(InvalidInput, match="ragged"):
        decode_input("x", [1, 2, 2], "INT32", [[1, 2], [3]], signature)


@pytest.mark.parametrize(
    ("datatype", "data", "words"),
    [
        ("INT32", [1.5, 2], "non-integer numbers"),
        ("UINT8", [300, 1], "300, out of the range of UINT8"),
        ("INT8", [-129, 1], "-129, out of the range of INT8"),
        ("FP16", [1e10, 1], "not finite as FP16"),
        ("BOOL", [1, 0], "true/false values"),
        ("FP32", [None, 1.0], "values of mixed or unsupported types"),
    ],
)
def test_values_are_never_cast_across_kinds(datatype: str, data: list[Any], words: str) -> None:
    signature = InputSignature("x", DATATYPES[datatype].name, (-1, 2))
    with pytest.raises(InvalidInput, match=words):
        decode_input("x", [1, 2], datatype, data, signature)


def test_outputs_encode_flat_row_major() -> None:
    out = encode_output("y", np.arange(6, dtype=np.int64).reshape(2, 3))
    assert (out["datatype"], out["shape"], out["data"].tolist()) == (
        "INT64",
        [2, 3],
        list(range(6)),
    )


def test_the_v1_route_answers_as_before_on_the_shared_path(app: FastAPI) -> None:
    rows = (np.arange(128).reshape(2, 64) / 100).tolist()
    body = {"inputs": rows, "min_accuracy": 0.95}
    response = call(app, "POST", "/v1/apps/digits/infer", json=body)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["variant"], body["model"], body["labels"]) == (SVC, "digits-svc", [9, 9])
    assert response.headers["x-infaas-variant"] == SVC

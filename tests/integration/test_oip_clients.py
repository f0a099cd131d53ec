"""Conformance of the Open Inference Protocol with Triton's own clients (tritonclient
http and grpc), against the whole system: the embedded default and the real services,
seeded with the demo app (tests/integration/conftest.py ``stack``).

Each answer must equal what the served variant's ONNX file computes, run here with
onnxruntime; an app, a model and a variant are each named, with JSON and binary
tensors on REST and raw contents on gRPC.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from infaas.demo import DEMO_APP
from infaas.demo_models import load_validation
from tests.e2e_support import Stack
from tests.oip_conformance import names, own_output

pytestmark = [pytest.mark.integration, pytest.mark.slow]

Client = Any  # httpclient or grpcclient, used alike
NEEDS = {"min_accuracy": 0.97, "latency_ms": 200}


@pytest.fixture(scope="module")
def rows(stack: Stack) -> np.ndarray:
    inputs, _ = load_validation(stack.demo.validation_path)
    return np.ascontiguousarray(inputs[20:24], dtype=np.float32)


@pytest.fixture(scope="module")
def http(stack: Stack) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(stack.url.removeprefix("http://"))
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc(stack: Stack) -> Iterator[grpcclient.InferenceServerClient]:
    assert stack.gateway.grpc_address, "the stack's gateway serves no gRPC"
    client = grpcclient.InferenceServerClient(stack.gateway.grpc_address)
    yield client
    client.close()


def query(
    module: Any, client: Client, name: str, rows: np.ndarray, input_name: str, **kwargs: Any
) -> Any:
    tensor = module.InferInput(input_name, list(rows.shape), "FP32")
    binary = kwargs.pop("binary", None)
    if binary is None:
        tensor.set_data_from_numpy(rows)
    else:
        tensor.set_data_from_numpy(rows, binary_data=binary)
    return client.infer(name, [tensor], **kwargs)


def test_probes_and_metadata_over_http_and_grpc(
    stack: Stack,
    http: httpclient.InferenceServerClient,
    grpc: grpcclient.InferenceServerClient,
) -> None:
    input_name, variant = names(stack)
    for client in (http, grpc):
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready(DEMO_APP)
        assert client.is_model_ready("digits-svc", model_version=variant)
    app_meta = http.get_model_metadata(DEMO_APP)
    assert app_meta["inputs"] == [{"name": input_name, "datatype": "FP32", "shape": [-1, 64]}]
    grpc_meta = grpc.get_model_metadata(variant, as_json=True)
    assert (grpc_meta["name"], grpc_meta["versions"]) == (variant, [variant])
    assert grpc_meta["inputs"][0]["datatype"] == "FP32"
    assert http.get_server_metadata()["extensions"] == ["binary_tensor_data"]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_http_infer_equals_the_models_own_output(
    stack: Stack,
    http: httpclient.InferenceServerClient,
    rows: np.ndarray,
    tmp_path: Path,
    binary: bool,
) -> None:
    input_name, variant = names(stack)
    # an app (the model-less query), a model, and a variant of it
    on_app = query(httpclient, http, DEMO_APP, rows, input_name, binary=binary, parameters=NEEDS)
    served = on_app.get_response()["model_version"]
    output = httpclient.InferRequestedOutput("output", binary_data=binary)
    on_app_named = query(
        httpclient, http, DEMO_APP, rows, input_name, binary=binary, outputs=[output]
    )
    np.testing.assert_allclose(
        on_app.as_numpy("output"), own_output(stack, served, rows, tmp_path), rtol=1e-5, atol=1e-6
    )
    assert on_app_named.as_numpy("output").shape == (4, 10)
    model_output = stack.services.catalog.get_model("digits-svc").output_name
    on_model = query(httpclient, http, "digits-svc", rows, input_name, binary=binary)
    on_variant = query(
        httpclient,
        http,
        "digits-svc",
        rows,
        input_name,
        binary=binary,
        model_version=variant,
        outputs=[httpclient.InferRequestedOutput(model_output, binary_data=binary)],
    )
    assert on_variant.get_response()["model_version"] == variant
    expected = own_output(stack, variant, rows, tmp_path)
    for result in (on_model, on_variant):
        got = result.as_numpy(model_output)
        chosen = result.get_response()["model_version"]
        np.testing.assert_allclose(
            got, own_output(stack, chosen, rows, tmp_path), rtol=1e-5, atol=1e-6
        )
    np.testing.assert_allclose(on_variant.as_numpy(model_output), expected, rtol=1e-5, atol=1e-6)


def test_grpc_infer_equals_the_models_own_output(
    stack: Stack, grpc: grpcclient.InferenceServerClient, rows: np.ndarray, tmp_path: Path
) -> None:
    input_name, variant = names(stack)
    on_app = query(grpcclient, grpc, DEMO_APP, rows, input_name, parameters=NEEDS)
    served = on_app.get_response().model_version
    assert on_app.get_response().model_name == stack.services.catalog.get_variant(served).model
    np.testing.assert_allclose(
        on_app.as_numpy("output"), own_output(stack, served, rows, tmp_path), rtol=1e-5, atol=1e-6
    )
    model_output = stack.services.catalog.get_model("digits-svc").output_name
    on_variant = query(
        grpcclient,
        grpc,
        variant,
        rows,
        input_name,
        outputs=[grpcclient.InferRequestedOutput(model_output)],
    )
    assert on_variant.get_response().model_version == variant
    np.testing.assert_allclose(
        on_variant.as_numpy(model_output),
        own_output(stack, variant, rows, tmp_path),
        rtol=1e-5,
        atol=1e-6,
    )


def test_refusals_reach_the_clients_as_protocol_errors(
    stack: Stack,
    http: httpclient.InferenceServerClient,
    grpc: grpcclient.InferenceServerClient,
    rows: np.ndarray,
) -> None:
    input_name, _ = names(stack)
    for module, client in ((httpclient, http), (grpcclient, grpc)):
        with pytest.raises(InferenceServerException, match="no variant, model or app named"):
            query(module, client, "nope", rows, input_name)
        with pytest.raises(InferenceServerException, match="this model takes"):
            query(module, client, DEMO_APP, rows[:, :32], input_name)
        with pytest.raises(InferenceServerException, match="is not an output of"):
            query(
                module,
                client,
                DEMO_APP,
                rows,
                input_name,
                outputs=[module.InferRequestedOutput("labels")],
            )

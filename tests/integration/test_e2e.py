"""End to end: HTTP query -> selection -> queue -> worker -> answer.

Every test runs twice: on the embedded default (one process, memory transport, SQLite,
local folder) and on the real services (RabbitMQ, PostgreSQL, Redis, an S3 endpoint) with
the worker as a separate process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from infaas.demo import DEMO_APP
from infaas.demo_models import load_validation
from tests.e2e_support import UNSERVED, Stack
from workers.runtimes.base import RuntimeSpec, load_runtime

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def validation(stack: Stack) -> tuple[np.ndarray, np.ndarray]:
    return load_validation(stack.demo.validation_path)


def post(stack: Stack, path: str, body: Any, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{stack.url}{path}", json=body, timeout=60, **kwargs)


def own_output(stack: Stack, variant_id: str, inputs: np.ndarray, tmp: Path) -> np.ndarray:
    """What the variant's artifact computes for ``inputs``, run directly with onnxruntime."""
    variant = stack.services.catalog.get_variant(variant_id)
    model = stack.services.catalog.get_model(variant.model)
    path = stack.services.store.get_file(variant.artifact_key, tmp / f"{variant_id}.onnx")
    spec = RuntimeSpec("onnx", variant.precision, "cpu", 1, output_name=model.output_name)
    runtime = load_runtime(spec, path)
    try:
        return runtime.predict(inputs)
    finally:
        runtime.close()


def test_strict_and_loose_queries_get_different_correct_variants(
    stack: Stack, validation: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    inputs, labels = validation
    strict = stack.client.infer(DEMO_APP, inputs[:4], latency_ms=200, min_accuracy=0.99)
    loose = stack.client.infer(DEMO_APP, inputs[:4], latency_ms=3, min_accuracy=0.9)
    assert strict["variant"] != loose["variant"]
    catalog = stack.services.catalog
    strict_variant = catalog.get_variant(strict["variant"])
    loose_variant = catalog.get_variant(loose["variant"])
    assert strict_variant.profile is not None
    assert strict_variant.profile.accuracy >= 0.99
    assert loose_variant.profile is not None
    assert loose_variant.profile.accuracy >= 0.9
    assert loose_variant.profile.predict_latency_ms(4) <= 3
    # the loose query took the cheaper variant, the strict one paid for accuracy
    assert loose_variant.profile.accuracy < strict_variant.profile.accuracy
    for answer in (strict, loose):
        assert answer["app"] == DEMO_APP
        assert answer["hardware"] == "cpu"
        assert len(answer["outputs"]) == 4
        np.testing.assert_allclose(np.sum(answer["outputs"], axis=1), 1.0, atol=1e-4)
        assert answer["labels"] == np.argmax(answer["outputs"], axis=1).tolist()
        assert answer["elapsed_ms"] > 0
        assert answer["model_ms"] >= 0
    # both are right on these easy validation images
    assert (np.array(strict["labels"]) == labels[:4]).mean() >= 0.75


def test_answers_equal_the_variants_own_output(
    stack: Stack, validation: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    inputs, _ = validation
    for variant_id in stack.served_variants():
        answer = stack.client.infer_variant(variant_id, inputs[10:13])
        assert answer["variant"] == variant_id
        expected = own_output(stack, variant_id, inputs[10:13], tmp_path)
        np.testing.assert_allclose(answer["outputs"], expected, rtol=1e-5, atol=1e-6)


def test_model_form_picks_a_variant_of_that_model(
    stack: Stack, validation: tuple[np.ndarray, np.ndarray]
) -> None:
    inputs, _ = validation
    answer = stack.client.infer_model("digits-svc", inputs[:2], latency_ms=50)
    assert answer["model"] == "digits-svc"
    assert answer["variant"].startswith("digits-svc.")


def test_response_names_the_variant_in_a_header(
    stack: Stack, validation: tuple[np.ndarray, np.ndarray]
) -> None:
    inputs, _ = validation
    response = post(stack, f"/v1/apps/{DEMO_APP}/infer", {"inputs": inputs[:1].tolist()})
    assert response.status_code == 200
    assert response.headers["X-Infaas-Variant"] == response.json()["variant"]
    assert len(response.json()["request_id"]) == 32


def test_explain_says_why(stack: Stack, validation: tuple[np.ndarray, np.ndarray]) -> None:
    inputs, _ = validation
    answer = stack.client.infer(
        DEMO_APP, inputs[:1], latency_ms=20, min_accuracy=0.98, explain=True
    )
    decision = answer["decision"]
    reasons = {c["variant"]: c["reason"] for c in decision["candidates"]}
    assert reasons[answer["variant"]] == "chosen"
    assert any(r.startswith("accuracy") for r in reasons.values())


def test_app_views(stack: Stack) -> None:
    apps = stack.client.apps()
    assert [a["app"] for a in apps] == [DEMO_APP]
    assert len(apps[0]["models"]) == 6
    view = stack.client.app(DEMO_APP)
    assert view["input"] == {"name": "input", "dtype": "float32", "shape": [-1, 64]}
    variants = {v["id"]: v for v in view["variants"]}
    served = stack.served_variants()
    assert set(served) < set(variants)
    for variant_id in served:
        v = variants[variant_id]
        assert v["state"] == "active"
        assert v["replicas"]
        assert v["replicas"][0]["state"] == "active"
        assert set(v["latency_ms"]) >= {"1", "8", "32"}
        assert 0.9 < v["accuracy"] <= 1.0
        assert v["cost_per_hour"] > 0
        assert v["max_batch"] >= 32
    assert variants[UNSERVED]["state"] == "inactive"
    assert variants[UNSERVED]["replicas"] == []


@pytest.mark.parametrize(
    ("path", "body", "status", "code", "says"),
    [
        ("/v1/apps/nope/infer", {"inputs": [[0] * 64]}, 404, "unknown_app", "no app named"),
        ("/v1/models/nope/infer", {"inputs": [[0] * 64]}, 404, "unknown_model", "no model"),
        (
            "/v1/variants/nope.onnx-fp32.cpu-t1/infer",
            {"inputs": [[0] * 64]},
            404,
            "unknown_variant",
            "no variant",
        ),
        ("/v1/apps/digits/infer", {"inputs": [[0] * 63]}, 422, "invalid_input", "[n, 64]"),
        (
            "/v1/apps/digits/infer",
            {"inputs": [[0] * 64], "latency_ms": -5},
            422,
            "invalid_request",
            "latency_ms",
        ),
        (
            "/v1/apps/digits/infer",
            {"inputs": [[0] * 64], "latency_ms": 10**6},
            422,
            "invalid_request",
            "latency_ms",
        ),
        (
            "/v1/apps/digits/infer",
            {"inputs": [[0] * 64], "min_accuracy": 1.5},
            422,
            "invalid_request",
            "min_accuracy",
        ),
        (
            "/v1/apps/digits/infer",
            {"inputs": [[0] * 64], "latency": 5},
            422,
            "invalid_request",
            "unknown field",
        ),
        ("/v1/apps/digits/infer", {"inputs": []}, 422, "empty_batch", "empty"),
        (
            "/v1/apps/digits/infer",
            {"inputs": [[0] * 64] * 65},
            422,
            "batch_too_large",
            "at most 64",
        ),
        (
            "/v1/apps/digits/infer",
            {"inputs": [[0] * 64], "min_accuracy": 0.9999},
            409,
            "no_eligible_variant",
            "best accuracy",
        ),
        (
            "/v1/apps/digits/infer",
            {"inputs": [[0] * 64], "latency_ms": 0.001},
            409,
            "no_eligible_variant",
            "fastest latency",
        ),
    ],
)
def test_bad_requests_get_clear_errors_and_change_nothing(
    stack: Stack, path: str, body: Any, status: int, code: str, says: str
) -> None:
    revision = stack.services.catalog.revision()
    response = post(stack, path, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert says in error["message"]
    assert stack.services.catalog.revision() == revision


def test_malformed_json_is_a_422(stack: Stack) -> None:
    response = httpx.post(
        f"{stack.url}/v1/apps/digits/infer",
        content=b'{"inputs": [[1, 2',
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"
    assert "not valid JSON" in response.json()["error"]["message"]


def test_health_readiness_metrics_and_docs(
    stack: Stack, validation: tuple[np.ndarray, np.ndarray]
) -> None:
    stack.client.infer(DEMO_APP, validation[0][:1], latency_ms=50)
    assert httpx.get(f"{stack.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{stack.url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["workers"] >= 1
    metrics = httpx.get(f"{stack.url}/metrics").text
    assert 'infaas_queries_total{app="digits"' in metrics
    assert "infaas_query_latency_ms_bucket" in metrics
    assert 'infaas_rejected_queries_total{app="nope",code="unknown_app"}' in metrics
    assert httpx.get(f"{stack.url}/openapi.json").json()["info"]["title"] == "INFaaS gateway"


def test_stats_account_for_what_the_app_got(
    stack: Stack, validation: tuple[np.ndarray, np.ndarray]
) -> None:
    inputs, _ = validation
    url = f"{stack.url}/v1/apps/{DEMO_APP}/stats"
    before = httpx.get(url).json()["queries"]
    for i in range(5):
        stack.client.infer(DEMO_APP, inputs[i : i + 1], latency_ms=50, min_accuracy=0.97)
    view = httpx.get(url).json()
    assert view["queries"] >= before + 5
    assert view["accuracy_miss_rate"] == 0.0
    assert view["mean_accuracy"] >= 0.9
    assert view["cost_per_1000_queries_usd"] > 0
    assert view["p50_ms"] > 0
    assert view["hardware"]["cpu"]["queries"] >= 5
    assert sum(v["queries"] for v in view["variants"].values()) == view["queries"]
    missing = httpx.get(f"{stack.url}/v1/apps/nope/stats")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "unknown_app"

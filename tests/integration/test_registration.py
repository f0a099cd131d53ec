"""Registration end to end: upload a model that is not in the demo through the HTTP API,
watch its variants be generated and profiled by a worker, check what they measured
against our own onnxruntime run, serve it model-less, delete it. Every bad upload is
refused with a clear 4xx and leaves the catalog and the object store as they were."""

from __future__ import annotations

import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from infaas.cli import main as cli_main
from queues.celery_app import create_celery_app
from queues.errors import NotFound, UnknownModel
from registry.registrations import RegistrationStore
from tests.e2e_support import Stack
from tests.registration_models import Trained, onnx_accuracy, sklearn_onnx, torch_program
from tests.services import unique_name

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BATCH_SIZES = [1, 4, 8, 16, 32]


@pytest.fixture(scope="module")
def wine(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    # wide enough that a batch of 32 costs clearly more than one input
    return sklearn_onnx(tmp_path_factory.mktemp("wine"), "wine-mlp", "wine", hidden=(512, 512))


@pytest.fixture(scope="module")
def cancer(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return sklearn_onnx(tmp_path_factory.mktemp("bc"), "bc-mlp", "breast_cancer")


def _app_id(kind: str) -> str:
    return unique_name(kind)[-24:].strip("-")


def _create_wine_app(stack: Stack, app: str) -> None:
    stack.client.create_app(app, input_name="input", dtype="float32", shape=[-1, 13], num_classes=3)


def _wait_for_placement(
    stack: Stack, variant: str, *, present: bool, timeout_s: float = 30
) -> None:
    deadline = time.monotonic() + timeout_s
    while bool(stack.services.live.snapshot().placements(variant)) != present:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{variant} {'never appeared' if present else 'stayed'} in live state"
            )
        time.sleep(0.2)
    time.sleep(1.0)  # the gateway refreshes its snapshots every 0.5 s


def test_register_profile_serve_and_delete_on_the_real_services(
    services_e2e: Stack, wine: Trained, tmp_path: Path
) -> None:
    stack, client = services_e2e, services_e2e.client
    app = _app_id("wine")
    _create_wine_app(stack, app)
    answer = client.register_model(
        app,
        wine.path,
        wine.validation,
        model_id=f"{app}-mlp",
        metadata={"trained_on": "wine"},
        budget_s_per_batch=0.05,
        batch_sizes=BATCH_SIZES,
    )
    model = answer["model"]
    assert answer["status"] == "queued"
    assert list(answer["hardware"]) == ["cpu"]
    seen: set[str] = set()
    final = client.wait_for_registration(
        answer["registration"],
        timeout_s=240,
        on_progress=lambda p: seen.update(v["status"] for v in p["variants"]),
    )
    assert final["status"] == "ready", final
    assert "profiling" in seen or "ready" in seen
    worker = final["hardware"]["cpu"]["worker"]
    assert worker
    assert worker.startswith("cpu-")  # built by the separate worker process

    view = client.app(app)
    assert [m["id"] for m in view["models"]] == [model]
    assert view["models"][0]["status"] == "ready"
    variants = {v["id"]: v for v in view["variants"]}
    assert f"{model}.onnx-fp32.cpu-t1" in variants
    ready = [v for v in variants.values() if v["status"] == "ready"]
    assert ready
    catalog, store = stack.services.catalog, stack.services.store
    for view_variant in ready:
        variant = catalog.get_variant(view_variant["id"])
        artifact = store.get_file(variant.artifact_key, tmp_path / f"{variant.id}.onnx")
        expected = onnx_accuracy(artifact, wine.inputs, wine.labels)
        assert view_variant["accuracy"] == pytest.approx(expected, abs=0.005)
        assert view_variant["metric"] == "top1"
        latency = view_variant["latency_ms"]
        assert sorted(int(b) for b in latency) == BATCH_SIZES
        assert latency["32"] > latency["1"], view_variant
        assert view_variant["max_batch"] == 32
        assert view_variant["memory_mb"] > 0
        assert view_variant["load_ms"] > 0
        assert variant.cost_per_hour > 0
    for view_variant in variants.values():
        if view_variant["status"] == "failed":
            assert view_variant["error"]

    # served by model-less queries once a worker loads it
    chosen = f"{model}.onnx-fp32.cpu-t1"
    control = create_celery_app(stack.services.broker)
    replies = control.control.broadcast(
        "infaas_load", arguments={"variant": chosen, "replicas": 1}, reply=True, timeout=10, limit=1
    )
    assert replies, "no worker answered the load request"
    _wait_for_placement(stack, chosen, present=True)
    served = client.infer(app, wine.inputs[:8], min_accuracy=0.9)
    assert served["model"] == model
    assert served["variant"] == chosen
    assert (np.array(served["labels"]) == wine.labels[:8]).mean() >= 0.75

    # deleting waits for its queries, has the workers unload it, and leaves nothing
    deleted = client.delete_model(app, model)
    assert deleted["unloaded"] == [chosen]
    assert set(deleted["variants"]) == set(variants)
    with pytest.raises(UnknownModel):
        catalog.get_model(model)
    assert catalog.list_variants(model_id=model) == []
    assert store.list(f"models/{model}/") == []
    assert RegistrationStore(catalog).for_model(model) == []
    with pytest.raises(NotFound):
        client.registration(answer["registration"])
    _wait_for_placement(stack, chosen, present=False)
    client.delete_app(app)


def test_the_cli_registers_lists_and_deletes(
    embedded_e2e: Stack, cancer: Trained, capsys: pytest.CaptureFixture[str]
) -> None:
    app = _app_id("bc")
    url = embedded_e2e.url
    common = ["--budget-s", "0.05", "--batch-sizes", "1,8,32", "--url", url]
    code = cli_main(
        ["register", app, str(cancer.path), "--validation", str(cancer.validation), *common]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"created app {app}: input 'input' float32 [-1, 30], 2 classes" in out
    assert "bc-mlp.onnx-fp32.cpu-t1" in out
    assert cli_main(["models", app, "--url", url]) == 0
    table = capsys.readouterr().out
    assert "models: bc-mlp (ready)" in table
    row = next(line for line in table.splitlines() if line.startswith("bc-mlp.onnx-fp32.cpu-t1"))
    accuracy = float(row.split()[2])
    assert accuracy == pytest.approx(
        onnx_accuracy(cancer.path, cancer.inputs, cancer.labels), abs=0.0005
    )
    assert cli_main(["delete-model", app, "bc-mlp", "--url", url]) == 0
    assert "deleted bc-mlp" in capsys.readouterr().out
    assert cli_main(["delete-model", app, "bc-mlp", "--url", url]) == 1
    assert "unknown_model" in capsys.readouterr().err
    embedded_e2e.client.delete_app(app)


def test_a_registration_waits_queued_for_hardware_no_worker_has(
    embedded_e2e: Stack, wine: Trained
) -> None:
    client = embedded_e2e.client
    app = _app_id("gpu")
    _create_wine_app(embedded_e2e, app)
    answer = client.register_model(app, wine.path, wine.validation, hardware=["gpu"])
    time.sleep(1.0)
    progress = client.registration(answer["registration"])
    assert progress["status"] == "queued"
    assert progress["hardware"]["gpu"]["status"] == "queued"
    assert client.delete_model(app, answer["model"])["deleted"] == answer["model"]
    client.delete_app(app)


# -- bad input: a clear 4xx, and nothing changes ------------------------------------------


def _trace(stack: Stack) -> tuple[Any, ...]:
    snapshot = stack.services.catalog.snapshot()
    return (
        snapshot.revision,
        snapshot.apps,
        snapshot.models,
        snapshot.variants,
        RegistrationStore(stack.services.catalog).all(),
        stack.services.store.list(),
    )


def _post(stack: Stack, app: str, files: dict[str, Path], **fields: str) -> httpx.Response:
    opened = {name: (path.name, path.read_bytes()) for name, path in files.items()}
    return httpx.post(f"{stack.url}/v1/apps/{app}/models", files=opened, data=fields, timeout=60)


def _chunked(stack: Stack, app: str, files: dict[str, Path]) -> httpx.Response:
    """The same upload, streamed without a Content-Length."""
    opened = {name: (path.name, path.read_bytes()) for name, path in files.items()}
    request = httpx.Request("POST", f"{stack.url}/v1/apps/{app}/models", files=opened)
    body = request.read()
    headers = {"content-type": request.headers["content-type"]}

    def chunks() -> Any:
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    return httpx.post(request.url, content=chunks(), headers=headers, timeout=60)


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory: pytest.TempPathFactory, wine: Trained) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad")
    text = folder / "notes.onnx"
    text.write_text("these are notes, not a model\n" * 20)
    corrupt = folder / "cut.onnx"
    corrupt.write_bytes(wine.path.read_bytes()[: wine.path.stat().st_size // 2])
    short = folder / "short.npz"
    np.savez(short, inputs=wine.inputs, labels=wine.labels[:-3])
    doubles = folder / "doubles.npz"
    np.savez(doubles, inputs=wine.inputs.astype(np.float64), labels=wine.labels)
    out_of_range = folder / "range.npz"
    np.savez(out_of_range, inputs=wine.inputs, labels=wine.labels + 1)
    program = torch_program(folder / "torch", "wine-torch", "wine", epochs=2)
    unsafe = folder / "unsafe.pt2"
    with zipfile.ZipFile(program.path) as src, zipfile.ZipFile(unsafe, "w") as dst:
        for entry in src.infolist():
            data = src.read(entry)
            if entry.filename.endswith("models/model.json"):
                data = data.replace(b"torch.ops.aten.linear.default", b"torch.os.system", 1)
            dst.writestr(entry.filename, data)
    return {
        "text": text,
        "corrupt": corrupt,
        "short": short,
        "doubles": doubles,
        "range": out_of_range,
        "unsafe": unsafe,
    }


def test_bad_uploads_are_refused_and_leave_no_trace(
    stack: Stack,
    wine: Trained,
    cancer: Trained,
    bad_inputs: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = _app_id("bad")
    _create_wine_app(stack, app)
    good = {"model": wine.path, "validation": wine.validation}
    cases: list[tuple[str, dict[str, Path], dict[str, str], int, str, str]] = [
        ("not onnx", {**good, "model": bad_inputs["text"]}, {}, 422, "invalid_model", "ONNX"),
        ("corrupt", {**good, "model": bad_inputs["corrupt"]}, {}, 422, "invalid_model", "ONNX"),
        (
            "inputs differ",
            {**good, "model": cancer.path},
            {"id": "bc-x"},
            422,
            "invalid_model",
            "has shape [-1, 30] but app",
        ),
        (
            "lengths",
            {**good, "validation": bad_inputs["short"]},
            {},
            422,
            "invalid_validation_set",
            f"but {len(wine.labels) - 3} labels",
        ),
        (
            "dtype",
            {**good, "validation": bad_inputs["doubles"]},
            {},
            422,
            "invalid_validation_set",
            "are float64",
        ),
        (
            "labels",
            {**good, "validation": bad_inputs["range"]},
            {},
            422,
            "invalid_validation_set",
            "label 3 is out of range",
        ),
        ("id taken", good, {"id": "digits-logreg"}, 409, "conflict", "already exists"),
        ("bad id", good, {"id": "Wine MLP"}, 422, "invalid_request", "is not valid"),
        (
            "unsafe program",
            {**good, "model": bad_inputs["unsafe"]},
            {"id": "wine-torch"},
            422,
            "invalid_model",
            "torch.os.system",
        ),
        ("no validation", {"model": wine.path}, {}, 422, "invalid_request", "no file 'validation'"),
        ("unknown field", good, {"colour": "red"}, 422, "invalid_request", "unknown form field"),
        ("bad budget", good, {"budget_s_per_batch": "99"}, 422, "invalid_request", "outside"),
        ("bad hardware", good, {"hardware": "tpu"}, 422, "invalid_request", "hardware"),
        ("bad metadata", good, {"metadata": "[1, 2"}, 422, "invalid_request", "metadata"),
    ]
    before = _trace(stack)
    for name, files, fields, status, code, words in cases:
        response = _post(stack, app, files, **fields)
        assert response.status_code == status, (name, response.text)
        error = response.json()["error"]
        assert error["code"] == code, (name, error)
        assert words in error["message"], (name, error)
        assert _trace(stack) == before, name

    response = _post(stack, "no-such-app", good)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_app"
    assert _trace(stack) == before

    settings = stack.gateway.app.state.infaas.settings
    monkeypatch.setattr(settings, "max_upload_mb", 0.005)
    for response in (_post(stack, app, good), _chunked(stack, app, good)):
        assert response.status_code == 413, response.text
        error = response.json()["error"]
        assert error["code"] == "upload_too_large"
        assert "INFAAS_MAX_UPLOAD_MB" in error["message"]
        assert _trace(stack) == before
    monkeypatch.undo()

    response = httpx.post(f"{stack.url}/v1/apps/{app}/models", json={"model": "x"}, timeout=30)
    assert response.status_code == 422
    assert "multipart/form-data" in response.json()["error"]["message"]
    assert _trace(stack) == before
    stack.client.delete_app(app)


def _app_body(app: str, shape: list[int], dtype: str = "float32", **extra: str) -> dict[str, Any]:
    return {"id": app, "input": {"name": "x", "dtype": dtype, "shape": shape}, **extra}


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (_app_body("Bad Id", [-1, 3]), 422, "not valid"),
        (_app_body("shape-app", [3, 3]), 422, "batch"),
        (_app_body("dtype-app", [-1, 3], dtype="complex64"), 422, "dtype"),
        (_app_body("task-app", [-1, 3], task="detection"), 422, "task"),
        (_app_body("digits", [-1, 3]), 409, "already exists"),
    ],
)
def test_bad_apps_are_refused(stack: Stack, body: dict[str, Any], status: int, words: str) -> None:
    before = _trace(stack)
    response = httpx.post(f"{stack.url}/v1/apps", json=body, timeout=30)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]["message"]
    assert _trace(stack) == before


def test_deleting_what_is_not_there(stack: Stack) -> None:
    before = _trace(stack)
    for path, code in (
        ("/v1/apps/digits/models/no-such-model", "unknown_model"),
        ("/v1/apps/no-such-app/models/digits-logreg", "unknown_app"),
        ("/v1/apps/no-such-app", "unknown_app"),
    ):
        response = httpx.delete(f"{stack.url}{path}", timeout=30)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == code
    app = _app_id("other")
    _create_wine_app(stack, app)
    response = httpx.delete(f"{stack.url}/v1/apps/{app}/models/digits-logreg", timeout=30)
    assert response.status_code == 404
    assert "belongs to app 'digits'" in response.json()["error"]["message"]
    response = httpx.delete(f"{stack.url}/v1/apps/digits", timeout=30)
    assert response.status_code == 409
    assert "delete its models first" in response.json()["error"]["message"]
    stack.client.delete_app(app)
    assert _trace(stack)[1:] == before[1:]
    response = httpx.get(f"{stack.url}/v1/registrations/nope", timeout=30)
    assert response.status_code == 404

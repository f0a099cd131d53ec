"""A new user's journey, as the README tells it, through the command line and HTTP:
after the demo, a second app from a model the demo lacks (scikit-learn's breast-cancer
set, trained here), queried model-less at once (its variants are loaded on demand, with
no restart), by model and by variant; a batch job on it; ``infaas models``;
``infaas delete-model`` and the app's delete; then a clean refusal, and nothing of it
left in the catalog, the store or on the broker.

Runs on the embedded default and on the real services (the ``stack`` fixture), with the
CLI as a separate process talking to the stack's gateway, as a user's shell would.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from infaas.demo import DEMO_APP
from queues import topology
from queues.depth import QueueProbe
from registry.types import READY
from tests.e2e_support import Stack
from workers.celery_worker import broker_connector

pytestmark = [pytest.mark.integration, pytest.mark.slow]

APP = "cancer"
MODEL = "cancer-logreg"
GENEROUS_MS = 60_000  # a load on a loaded CI machine may take seconds: the query waits


@pytest.fixture(scope="module")
def cancer_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, np.ndarray]:
    """A logistic regression on the breast-cancer set, as ONNX, with a validation split."""
    from skl2onnx import to_onnx
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_breast_cancer(return_X_y=True)
    x = x.astype(np.float32)
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=0.3, random_state=0, stratify=y
    )
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model.fit(x_train, y_train)
    folder = tmp_path_factory.mktemp("cancer")
    onnx_path = folder / f"{MODEL}.onnx"
    onnx_path.write_bytes(
        to_onnx(model, x_train[:1], options={"zipmap": False}).SerializeToString()
    )
    val_path = folder / "val.npz"
    np.savez(val_path, inputs=x_val, labels=y_val.astype(np.int64))
    return onnx_path, val_path, x_val


def cli(stack: Stack, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``infaas ARGS --url GATEWAY`` as a separate process, as a user runs it."""
    proc = subprocess.run(
        [sys.executable, "-m", "infaas.cli", *args, "--url", stack.url],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if check:
        assert proc.returncode == 0, f"infaas {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def post(stack: Stack, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{stack.url}{path}", json=body, timeout=120)


def test_a_new_users_journey(
    stack: Stack, cancer_model: tuple[Path, Path, np.ndarray], tmp_path: Path
) -> None:
    onnx_path, val_path, rows = cancer_model
    catalog, store = stack.services.catalog, stack.services.store

    # the demo's app answers model-less queries
    demo_rows = np.load(stack.demo.validation_path)["inputs"][:2].astype(np.float32).tolist()
    demo = post(stack, f"/v1/apps/{DEMO_APP}/infer", {"inputs": demo_rows, "latency_ms": 1000})
    assert demo.status_code == 200, demo.text

    # a second app, from a model the demo does not have
    registered = cli(
        stack,
        "register",
        APP,
        str(onnx_path),
        "--validation",
        str(val_path),
        "--budget-s",
        "0.05",
        "--batch-sizes",
        "1,4",
    )
    assert MODEL in registered.stdout
    variants = [v.id for v in catalog.list_variants(app_id=APP, status=READY)]
    assert variants, registered.stdout

    # model-less, at once: nothing serves it yet, so a worker loads the chosen variant
    (tmp_path / "rows.json").write_text(json.dumps(rows[:3].tolist()))
    query = cli(
        stack,
        "query",
        APP,
        "--input",
        str(tmp_path / "rows.json"),
        "--latency-ms",
        "20000",
        "--min-accuracy",
        "0.9",
        "--json",
    )
    answer = json.loads(query.stdout)
    assert answer["app"] == APP
    assert answer["model"] == MODEL
    assert len(answer["labels"]) == 3

    # by model, and by a variant nobody runs yet (loaded on demand too)
    by_model = post(
        stack,
        f"/v1/models/{MODEL}/infer",
        {"inputs": rows[:2].tolist(), "latency_ms": 20000},
    )
    assert by_model.status_code == 200, by_model.text
    served = {answer["variant"], by_model.json()["variant"]}
    cold = next(v for v in variants if v not in served)
    by_variant = post(
        stack,
        f"/v1/variants/{cold}/infer",
        {"inputs": rows[:2].tolist(), "timeout_ms": GENEROUS_MS},
    )
    assert by_variant.status_code == 200, by_variant.text
    assert by_variant.json()["variant"] == cold

    # a batch job on it, uploaded from a local file
    np.savez(tmp_path / "batch.npz", inputs=rows)
    bucket = f"journey-{uuid.uuid4().hex[:8]}"
    job = cli(
        stack,
        "jobs",
        "submit",
        APP,
        "--upload",
        str(tmp_path / "batch.npz"),
        "--output",
        f"s3://{bucket}/out",
        "--min-accuracy",
        "0.9",
    )
    job_id = re.search(r"follow it with: infaas jobs wait (\w+)", job.stdout)
    assert job_id is not None, job.stdout
    waited = cli(stack, "jobs", "wait", job_id.group(1))  # exit 0: the job succeeded
    status = stack.client.job(job_id.group(1))
    assert status["status"] == "succeeded", waited.stdout
    assert status["progress"]["items_done"] == len(rows)

    # what the user sees of the app
    listing = cli(stack, "models", APP)
    assert MODEL in listing.stdout
    assert cold in listing.stdout

    # delete the model, then the app
    queues = [topology.variant_queue(stack.services.broker.queue_prefix, APP, v) for v in variants]
    cli(stack, "delete-model", APP, MODEL)
    gone = post(stack, f"/v1/models/{MODEL}/infer", {"inputs": rows[:1].tolist()})
    assert gone.status_code == 404, gone.text
    assert gone.json()["error"]["code"] == "unknown_model"
    empty = post(stack, f"/v1/apps/{APP}/infer", {"inputs": rows[:1].tolist()})
    assert empty.status_code == 409, empty.text
    assert empty.json()["error"]["code"] == "no_eligible_variant"
    deleted = httpx.delete(f"{stack.url}/v1/apps/{APP}", timeout=120)
    assert deleted.status_code == 200, deleted.text
    unknown = post(stack, f"/v1/apps/{APP}/infer", {"inputs": rows[:1].tolist()})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "unknown_app"

    # nothing of it is left
    assert APP not in {a.id for a in catalog.list_apps()}
    assert catalog.list_variants(app_id=APP) == []
    assert [k for k in store.list() if MODEL in k] == []
    probe = QueueProbe(broker_connector(stack.services.broker))
    try:
        batch_queue = topology.batch_queue(stack.services.broker.queue_prefix, APP)
        assert {q: probe.depth(q) for q in [*queues, batch_queue]} == dict.fromkeys(
            [*queues, batch_queue]
        )
    finally:
        probe.close()

"""The worker's chunk runner on a real ONNX model, an SQLite catalog, a local store and
Celery's in-memory transport: outputs equal the variant's own answers, written once;
duplicates, leftovers, cancels, other hardware and changed inputs are handled."""

from __future__ import annotations

import io
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kombu import Connection
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.linear_model import LogisticRegression

from queues import topology
from queues.celery_app import create_celery_app
from queues.settings import BrokerSettings
from registry.catalog import Catalog
from registry.jobs import Job, JobStore, NewJob, new_job_id
from registry.jobs.chunking import InputObject, plan_chunks
from registry.jobs.locations import Location
from registry.jobs.settings import JobSettings
from registry.jobs.status import CHUNK_DONE, JOB_FAILED, JOB_SUCCEEDED
from registry.livestate import MemoryLiveState
from registry.store import LocalStore
from registry.types import App, InputSignature, Model, Variant
from tests.factories import profile
from workers.jobs import ChunkRunner
from workers.runtimes.base import RuntimeSpec, load_runtime

VARIANT = "toy-logreg.onnx-fp32.cpu-t1"


@dataclass
class Setup:
    catalog: Catalog
    store: LocalStore
    runner: ChunkRunner
    jobs: JobStore
    inputs: np.ndarray
    artifact: Path
    broker: BrokerSettings


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 4)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    clf = LogisticRegression(max_iter=300).fit(x, y)
    onx = convert_sklearn(
        clf,
        initial_types=[("input", FloatTensorType([None, 4]))],
        options={id(clf): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    artifact = tmp_path / "toy.onnx"
    artifact.write_bytes(onx.SerializeToString())
    store = LocalStore(tmp_path / "store")
    store.put_file("models/toy/model.onnx", artifact)
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    catalog.create_app(App("toy", "classification", InputSignature("input", "float32", (-1, 4))))
    catalog.add_model(Model("toy-logreg", "toy", "onnx", "models/toy/model.onnx", "v.npz"))
    catalog.upsert_variant(
        Variant(
            id=VARIANT,
            model="toy-logreg",
            app="toy",
            runtime="onnx",
            precision="fp32",
            hardware="cpu",
            threads=1,
            artifact_key="models/toy/model.onnx",
            instance_class="m5.2xlarge",
            cost_per_hour=0.048,
            profile=profile(0.95, 0.05, slope_ms=0.01, max_batch=16),
        )
    )
    inputs = rng.normal(size=(230, 4)).astype(np.float64)  # converted to the app's float32
    buffer = io.BytesIO()
    np.savez(buffer, inputs=inputs)
    store.bucket("jobs-in").put_bytes("run/part.npz", buffer.getvalue())
    broker = BrokerSettings(broker_url=None, queue_prefix=f"t{uuid.uuid4().hex[:10]}")
    runner = ChunkRunner(
        catalog=catalog,
        store=store,
        live=MemoryLiveState(),
        cache_dir=tmp_path / "cache",
        worker_id="w-test",
        hardware="cpu",
        queue_prefix=broker.queue_prefix,
        celery=create_celery_app(broker),
        settings=JobSettings(renew_interval_s=0.01),
    )
    yield Setup(catalog, store, runner, JobStore(catalog), inputs, artifact, broker)
    runner.close()
    catalog.close()


def _job(setup: Setup, *, hardware: str = "cpu") -> Job:
    size = setup.store.bucket("jobs-in").size("run/part.npz")
    plan = plan_chunks([InputObject("run/part.npz", len(setup.inputs), size)], 100)
    new = NewJob(
        id=new_job_id(),
        tenant="default",
        app="toy",
        variant=VARIANT,
        hardware=hardware,
        input=Location("jobs-in", "run"),
        uploaded=False,
        output=Location("jobs-out", "x"),
        min_accuracy=0.9,
        deadline=None,
        max_cost_usd=None,
        idempotency_key=None,
        fingerprint="f",
        chunk_items=100,
        priority=3,
        estimate={},
    )
    job, _ = setup.jobs.create(new, plan, {"run/part.npz": size})
    return job


def _expected(setup: Setup) -> np.ndarray:
    runtime = load_runtime(RuntimeSpec("onnx", "fp32", "cpu", 1), setup.artifact)
    try:
        return runtime.predict(setup.inputs.astype(np.float32))
    finally:
        runtime.close()


def _read(setup: Setup, key: str) -> dict[str, np.ndarray]:
    data = setup.store.bucket("jobs-out").get_bytes(key)
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def test_a_job_runs_to_its_manifest_with_the_variants_own_answers(setup: Setup) -> None:
    job = _job(setup)
    outcomes = [setup.runner.run(job.id, i)["outcome"] for i in range(3)]
    assert outcomes == ["wrote", "wrote", "wrote"]
    done, chunks = setup.jobs.get_with_chunks(job.id)
    assert done.status == JOB_SUCCEEDED
    assert done.manifest_key == f"x/{job.id}/manifest.json"
    parts = [_read(setup, c.output_key) for c in chunks]
    outputs = np.concatenate([p["outputs"] for p in parts])
    np.testing.assert_array_equal(outputs, _expected(setup))
    assert np.concatenate([p["index"] for p in parts]).tolist() == list(range(230))
    assert np.concatenate([p["labels"] for p in parts]).tolist() == outputs.argmax(1).tolist()
    assert [c.output_writes for c in chunks] == [1, 1, 1]
    assert all(c.model_ms > 0 and c.cost_usd > 0 for c in chunks)
    # a duplicate message later changes nothing
    assert setup.runner.run(job.id, 1)["outcome"] == "skipped"
    assert [c.output_writes for c in setup.jobs.get_with_chunks(job.id)[1]] == [1, 1, 1]


def test_an_output_left_by_a_dead_worker_is_not_written_again(setup: Setup) -> None:
    job = _job(setup)
    assert setup.runner.run(job.id, 0)["outcome"] == "wrote"
    chunk = setup.jobs.chunk(job.id, 1)
    # a worker wrote chunk 1's output and died before recording it
    setup.store.bucket("jobs-out").put_bytes(chunk.output_key, b"written before the crash")
    assert setup.runner.run(job.id, 1)["outcome"] == "found"
    assert setup.runner.run(job.id, 2)["outcome"] == "wrote"
    chunks = setup.jobs.get_with_chunks(job.id)[1]
    assert [c.status for c in chunks] == [CHUNK_DONE] * 3
    assert [c.output_writes for c in chunks] == [1, 0, 1]
    assert setup.store.bucket("jobs-out").get_bytes(chunk.output_key) == b"written before the crash"


def test_a_cancelled_job_runs_no_more_chunks(setup: Setup) -> None:
    job = _job(setup)
    assert setup.runner.run(job.id, 0)["outcome"] == "wrote"
    setup.jobs.cancel(job.id)
    assert setup.runner.run(job.id, 1) == {
        "job": job.id,
        "chunk": 1,
        "outcome": "skipped",
        "detail": "the job is cancelled",
    }
    assert setup.store.bucket("jobs-out").list(f"x/{job.id}/") == [f"x/{job.id}/chunk-00000.npz"]


def test_a_chunk_for_other_hardware_is_handed_back(setup: Setup) -> None:
    job = _job(setup, hardware="gpu")
    assert setup.runner.run(job.id, 2)["outcome"] == "requeued"
    assert setup.jobs.chunk(job.id, 2).attempts == 0  # never claimed here
    assert setup.jobs.chunk(job.id, 2).publishes == 1
    queue = topology.batch_queue(setup.broker.queue_prefix, "toy")
    with Connection(setup.broker.url) as conn:
        message = conn.SimpleQueue(queue).get(timeout=5)
        body: Any = message.decode()
        message.ack()
    assert body[0] == [job.id, 2]
    assert message.headers["task"] == "infaas.jobs.run_chunk"
    assert message.headers["eta"] is not None  # after a delay


def test_inputs_changed_since_submission_fail_the_job_clearly(setup: Setup) -> None:
    job = _job(setup)
    buffer = io.BytesIO()
    np.savez(buffer, inputs=np.zeros((5, 4), np.float32))
    setup.store.bucket("jobs-in").put_bytes("run/part.npz", buffer.getvalue())
    assert setup.runner.run(job.id, 0)["outcome"] == "failed"
    failed = setup.jobs.get(job.id)
    assert failed.status == JOB_FAILED
    assert "changed since the job was submitted" in failed.error


def test_chunks_run_on_a_thread_at_the_lowest_priority(setup: Setup) -> None:
    def nice() -> tuple[int, str]:
        return os.getpriority(
            os.PRIO_PROCESS, threading.get_native_id()
        ), threading.current_thread().name

    priority, name = setup.runner.batch_thread.run(nice)
    assert (priority, name) == (19, "infaas-batch")
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) != 19

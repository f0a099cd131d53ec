"""Batch jobs end to end: on the real services (RabbitMQ, PostgreSQL, Redis, an S3
endpoint; the worker a separate process) and on the embedded default.

A 20,000-input job equals the chosen variant's own answers; an Idempotency-Key makes one
job; a worker killed with SIGKILL mid-job is replaced and every chunk is written once;
cancel stops a job and lists its partial outputs; a job recorded by a gateway that died
before publishing is published by the sweeper; a gateway restart loses nothing; every
bad submission is refused with a clear error and changes nothing.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import update

from api_gateway.settings import GatewaySettings
from infaas.demo import DEMO_APP
from infaas.demo_models import load_validation
from infaas.embedded import LocalStack
from queues import topology
from registry.jobs import ChunkRow, JobStore, NewJob, new_job_id
from registry.jobs.chunking import plan_chunks
from registry.jobs.locations import Location, parse_location
from registry.jobs.messages import add_batch_consumer
from registry.jobs.objects import discover_inputs
from registry.jobs.settings import JobSettings
from registry.jobs.status import CHUNK_DONE, JOB_CANCELLED, JOB_SUCCEEDED
from registry.jobs.variant_choice import JobNeeds, estimate
from registry.store import LocalStore
from registry.types import READY, utcnow
from tests.e2e_support import Stack
from workers.runtimes.base import RuntimeSpec, load_runtime

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FAST_FLOOR = 0.95  # a cheap, fast variant of the demo app reaches it
SLOW_FLOOR = 0.99  # only the CNN variants reach it: milliseconds per item
VICTIM_VARIANT = "digits-logreg.onnx-fp32.cpu-t1"


def _bucket(kind: str) -> str:
    return f"jobs-{kind}-{uuid.uuid4().hex[:8]}"


def _npz(inputs: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, inputs=inputs)
    return buffer.getvalue()


def _rows(stack: Stack, count: int) -> np.ndarray:
    inputs, _ = load_validation(stack.demo.validation_path)
    return np.resize(inputs.astype(np.float32), (count, inputs.shape[1]))


def _put_inputs(stack: Stack, bucket: str, prefix: str, parts: list[np.ndarray]) -> str:
    store = stack.services.store.bucket(bucket)
    for i, part in enumerate(parts):
        store.put_bytes(f"{prefix}/part-{i:03d}.npz", _npz(part))
    return f"s3://{bucket}/{prefix}"


def _submit(stack: Stack, body: dict[str, Any], key: str | None = None) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    return httpx.post(f"{stack.url}/v1/jobs", json=body, headers=headers, timeout=120)


def _accepted(response: httpx.Response) -> str:
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


def _own_output(
    stack: Stack, variant_id: str, inputs: np.ndarray, tmp: Path, chunk_sizes: list[int]
) -> np.ndarray:
    """What the variant's artifact computes for ``inputs``, run here with onnxruntime in
    the slices the job ran them in (chunk by chunk, one batch limit at a time): a
    dynamically quantised variant scales each slice by its own range, so other slices
    give other answers."""
    variant = stack.services.catalog.get_variant(variant_id)
    model = stack.services.catalog.get_model(variant.model)
    assert variant.profile is not None
    batch = variant.profile.batch_limit
    path = stack.services.store.get_file(variant.artifact_key, tmp / f"{variant_id}.onnx")
    spec = RuntimeSpec("onnx", variant.precision, "cpu", 1, output_name=model.output_name)
    runtime = load_runtime(spec, path)
    pieces = []
    try:
        first = 0
        for size in chunk_sizes:
            rows = inputs[first : first + size]
            pieces += [runtime.predict(rows[i : i + batch]) for i in range(0, size, batch)]
            first += size
        return np.concatenate(pieces)
    finally:
        runtime.close()


def _outputs_of(
    stack: Stack, status: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray, dict[str, Any], list[int]]:
    """(outputs, item indices, manifest, rows per chunk) of a finished job, read back from
    the store."""
    output = parse_location(status["output"], "output")
    store = stack.services.store.bucket(output.bucket)
    manifest = json.loads(store.get_bytes(status["manifest"]))
    outputs, index = [], []
    for chunk in manifest["chunks"]:
        with np.load(io.BytesIO(store.get_bytes(chunk["key"])), allow_pickle=False) as part:
            outputs.append(part["outputs"])
            index.append(part["index"])
            assert part["labels"].tolist() == part["outputs"].argmax(axis=1).tolist()
    return np.concatenate(outputs), np.concatenate(index), manifest, [len(o) for o in outputs]


def _everything(stack: Stack, *buckets: str) -> dict[str, list[str]]:
    """Every object of the system's store and of ``buckets``: to show nothing changed."""
    store = stack.services.store
    found = {"": store.list()}
    for name in buckets:
        found[name] = store.bucket(name).list()
    return found


def _job_count(stack: Stack) -> int:
    return len(JobStore(stack.services.catalog).recent(tenant="default", limit=1000))


# ------------------------------------------------------------------------ the big job


def test_a_20000_input_job_equals_the_chosen_variants_own_answers(
    services_e2e: Stack, tmp_path: Path
) -> None:
    stack = services_e2e
    inputs = _rows(stack, 20_000)
    source = _put_inputs(stack, _bucket("in"), "run", [inputs[:12_000], inputs[12_000:]])
    out = _bucket("out")
    job_id = _accepted(
        _submit(
            stack,
            {
                "app": DEMO_APP,
                "input": source,
                "output": f"s3://{out}/daily",
                "min_accuracy": FAST_FLOOR,
            },
        )
    )
    status = stack.client.wait_for_job(job_id, timeout_s=180, poll_s=0.2)
    assert status["status"] == JOB_SUCCEEDED, status["errors"]
    assert status["progress"] == {
        "items_done": 20_000,
        "items_total": 20_000,
        "chunks_done": 20,
        "chunks_total": 20,
        "fraction": 1.0,
    }
    assert status["errors"] == []
    assert status["cost_usd"] > 0
    chosen = stack.services.catalog.get_variant(status["variant"])
    assert chosen.profile is not None
    assert chosen.profile.accuracy >= FAST_FLOOR
    # the model-less choice: the cheapest per item at its best batch among those reaching the floor
    needs = JobNeeds(items=20_000, chunks=20, min_accuracy=FAST_FLOOR, now=utcnow())
    settings = JobSettings()
    candidates = [
        estimate(v, needs, settings)
        for v in stack.services.catalog.list_variants(app_id=DEMO_APP, status=READY)
        if v.profile is not None and v.profile.accuracy >= FAST_FLOOR
    ]
    assert status["estimate"]["cost_usd"] == pytest.approx(
        min(c.cost_usd for c in candidates), rel=1e-5
    )
    outputs, index, manifest, sizes = _outputs_of(stack, status)
    assert index.tolist() == list(range(20_000))
    np.testing.assert_allclose(
        outputs, _own_output(stack, chosen.id, inputs, tmp_path, sizes), rtol=1e-5, atol=1e-6
    )
    assert manifest["items_total"] == 20_000
    assert manifest["variant"] == chosen.id
    assert status["manifest"] == f"daily/{job_id}/manifest.json"
    chunks = JobStore(stack.services.catalog).get_with_chunks(job_id)[1]
    assert all(c.status == CHUNK_DONE and c.output_writes == 1 for c in chunks)
    listed = stack.client.jobs(app=DEMO_APP, status=JOB_SUCCEEDED)
    assert job_id in [j["job_id"] for j in listed]


def test_an_uploaded_npz_job_runs(stack: Stack, tmp_path: Path) -> None:
    inputs = _rows(stack, 700)
    path = tmp_path / "inputs.npz"
    path.write_bytes(_npz(inputs.astype(np.float64)))  # converted to the app's float32
    out = _bucket("out")
    answer = stack.client.submit_job(
        DEMO_APP, output=f"s3://{out}", min_accuracy=FAST_FLOOR, upload=path, chunk_items=300
    )
    assert answer["chunks_total"] == 3
    status = stack.client.wait_for_job(answer["job_id"], timeout_s=120, poll_s=0.2)
    assert status["status"] == JOB_SUCCEEDED, status["errors"]
    assert status["input"] == f"upload:jobs/{answer['job_id']}/input"
    outputs, index, _, sizes = _outputs_of(stack, status)
    assert index.tolist() == list(range(700))
    expected = _own_output(stack, status["variant"], inputs, tmp_path, sizes)
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------ idempotency


def test_the_same_idempotency_key_makes_one_job(services_e2e: Stack) -> None:
    stack = services_e2e
    source = _put_inputs(stack, _bucket("in"), "run", [_rows(stack, 300)])
    body = {
        "app": DEMO_APP,
        "input": source,
        "output": f"s3://{_bucket('out')}",
        "min_accuracy": FAST_FLOOR,
    }
    key = f"nightly-{uuid.uuid4().hex}"
    before = _job_count(stack)
    # four retries racing each other, then one more after the job finished
    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda _: _submit(stack, body, key), range(4)))
    ids = {_accepted(r) for r in responses}
    assert len(ids) == 1
    (job_id,) = ids
    assert sum(r.json()["replayed"] for r in responses) == 3
    stack.client.wait_for_job(job_id, timeout_s=120, poll_s=0.2)
    again = _submit(stack, body, key)
    assert _accepted(again) == job_id
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["status"] == JOB_SUCCEEDED
    assert _job_count(stack) == before + 1
    chunks = JobStore(stack.services.catalog).get_with_chunks(job_id)[1]
    assert [c.output_writes for c in chunks] == [1]
    # the key with other parameters is a conflict, and makes nothing
    other = _submit(stack, {**body, "min_accuracy": 0.9}, key)
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "conflict"
    assert "Idempotency-Key" in other.json()["error"]["message"]
    assert _job_count(stack) == before + 1


# ------------------------------------------------------------------ a worker killed


def _celery_names(stack: Stack) -> list[str]:
    return sorted(w.celery_name for w in stack.services.live.snapshot().workers.values())


def _consume(stack: Stack, names: list[str], *, on: bool) -> None:
    broker = stack.services.broker
    queue = topology.batch_queue(broker.queue_prefix, DEMO_APP)
    control = stack.gateway.app.state.infaas.services.celery.control
    if on:
        replies = add_batch_consumer(
            control, broker.queue_prefix, DEMO_APP, names, reply=True, timeout=5
        )
    else:
        replies = control.cancel_consumer(queue, destination=names, reply=True, timeout=5)
    assert len(replies) == len(names), replies


def test_a_worker_killed_mid_job_is_replaced_and_every_chunk_is_written_once(
    services_e2e: Stack, tmp_path: Path
) -> None:
    stack = services_e2e
    main = _celery_names(stack)
    inputs = _rows(stack, 600)
    source = _put_inputs(stack, _bucket("in"), "run", [inputs])
    _consume(stack, main, on=False)  # only the workers started here take this job's chunks
    replacement = None
    try:
        victim = stack.start_worker("--variants", VICTIM_VARIANT, log=tmp_path / "victim.log")
        stack.wait_for_workers(len(main) + 1)
        body = {
            "app": DEMO_APP,
            "input": source,
            "output": f"s3://{_bucket('out')}/x",
            "min_accuracy": SLOW_FLOOR,
            "chunk_items": 40,
        }
        job_id = _accepted(_submit(stack, body))
        jobs = JobStore(stack.services.catalog)
        mark = f"-{victim.pid}-"
        held = None
        deadline = time.monotonic() + 90
        while held is None and time.monotonic() < deadline:
            chunks = jobs.get_with_chunks(job_id)[1]
            done = sum(c.status == CHUNK_DONE for c in chunks)
            running = [c for c in chunks if c.status == "running" and mark in c.worker]
            if done >= 2 and running:
                held = running[0].index
            else:
                time.sleep(0.01)
        assert held is not None, "the victim never got to the middle of the job"
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(10)
        killed_at = jobs.get_with_chunks(job_id)[1]
        assert sum(c.status == CHUNK_DONE for c in killed_at) < len(killed_at)
        replacement = stack.start_worker("--variants", VICTIM_VARIANT, log=tmp_path / "repl.log")
        status = stack.client.wait_for_job(job_id, timeout_s=150, poll_s=0.2)
        assert status["status"] == JOB_SUCCEEDED, status["errors"]
        chunks = jobs.get_with_chunks(job_id)[1]
        assert [c.output_writes for c in chunks] == [1] * len(chunks)
        interrupted = chunks[held]  # the victim held it when it died: another finished it
        assert interrupted.attempts >= 2
        assert mark not in interrupted.worker
        assert any(f"-{replacement.pid}-" in c.worker for c in chunks)
        outputs, index, _, sizes = _outputs_of(stack, status)
        assert index.tolist() == list(range(600))
        expected = _own_output(stack, status["variant"], inputs, tmp_path, sizes)
        np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-6)
    finally:
        _consume(stack, main, on=True)
        if replacement is not None:
            os.killpg(replacement.pid, signal.SIGTERM)
            replacement.wait(30)


# --------------------------------------------------------------------------- cancel


def test_cancel_stops_a_job_and_lists_its_partial_outputs(services_e2e: Stack) -> None:
    stack = services_e2e
    source = _put_inputs(stack, _bucket("in"), "run", [_rows(stack, 1500)])
    out = _bucket("out")
    body = {
        "app": DEMO_APP,
        "input": source,
        "output": f"s3://{out}/x",
        "min_accuracy": SLOW_FLOOR,
        "chunk_items": 25,
    }
    job_id = _accepted(_submit(stack, body))
    deadline = time.monotonic() + 60
    while stack.client.job(job_id)["progress"]["chunks_done"] < 2:
        assert time.monotonic() < deadline, "the job made no progress"
        time.sleep(0.05)
    cancelled = stack.client.cancel_job(job_id)
    assert cancelled["status"] == JOB_CANCELLED
    assert stack.client.cancel_job(job_id)["status"] == JOB_CANCELLED  # again: same answer
    time.sleep(2.0)  # a chunk in flight stops at its next renewal (1 s), before writing
    settled = stack.services.store.bucket(out).list(f"x/{job_id}/")
    time.sleep(2.0)
    status = stack.client.job(job_id)
    assert status["status"] == JOB_CANCELLED
    assert stack.services.store.bucket(out).list(f"x/{job_id}/") == settled  # nothing new
    assert 2 <= status["progress"]["chunks_done"] < status["progress"]["chunks_total"]
    assert sorted(status["outputs"]) == settled  # the partial outputs, each listed
    assert status["manifest"] is None
    missing = httpx.post(f"{stack.url}/v1/jobs/{uuid.uuid4().hex}/cancel", timeout=30)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "unknown_job"


# ---------------------------------------------------------------- gateways that die


def test_a_job_its_gateway_never_published_is_published_by_the_sweeper(
    services_e2e: Stack,
) -> None:
    """A gateway that died between recording a job and publishing its chunks loses
    nothing: any gateway's sweeper publishes them."""
    stack = services_e2e
    store = stack.services.store
    source = parse_location(_put_inputs(stack, _bucket("in"), "run", [_rows(stack, 250)]), "in")
    app = stack.services.catalog.get_app(DEMO_APP)
    objects = discover_inputs(store, source, app.signature, max_objects=10)
    plan = plan_chunks(objects, 100)
    jobs = JobStore(stack.services.catalog)
    variant = "digits-mlp-small.onnx-fp32.cpu-t1"
    job, _ = jobs.create(
        NewJob(
            id=new_job_id(),
            tenant="default",
            app=DEMO_APP,
            variant=variant,
            hardware="cpu",
            input=source,
            uploaded=False,
            output=Location(_bucket("out"), "x"),
            min_accuracy=FAST_FLOOR,
            deadline=None,
            max_cost_usd=None,
            idempotency_key=None,
            fingerprint="-",
            chunk_items=100,
            priority=1,
            estimate={},
        ),
        plan,
        {o.key: o.size_bytes for o in objects},
    )
    # ... and its gateway died right here, a minute ago
    with stack.services.catalog.write_session(bump=False) as session:
        session.execute(
            update(ChunkRow)
            .where(ChunkRow.job_id == job.id)
            .values(created_at=utcnow() - timedelta(minutes=1))
        )
    swept = stack.gateway.app.state.infaas.jobs.sweeper.sweep()
    assert swept["republished"] == {job.id: [0, 1, 2]}
    status = stack.client.wait_for_job(job.id, timeout_s=120, poll_s=0.2)
    assert status["status"] == JOB_SUCCEEDED, status["errors"]
    assert [c.publishes for c in jobs.get_with_chunks(job.id)[1]] == [1, 1, 1]


def test_a_gateway_restart_mid_job_loses_nothing(services_e2e: Stack) -> None:
    stack = services_e2e
    source = _put_inputs(stack, _bucket("in"), "run", [_rows(stack, 400)])
    body = {
        "app": DEMO_APP,
        "input": source,
        "output": f"s3://{_bucket('out')}",
        "min_accuracy": SLOW_FLOOR,
        "chunk_items": 50,
    }
    with LocalStack(stack.services, gateway=GatewaySettings(port=0), with_worker=False) as other:
        answer = httpx.post(f"{other.url}/v1/jobs", json=body, timeout=120)
        job_id = _accepted(answer)
    # that gateway is gone; the job goes on, and any gateway reports it
    status = stack.client.wait_for_job(job_id, timeout_s=120, poll_s=0.2)
    assert status["status"] == JOB_SUCCEEDED, status["errors"]
    assert status["progress"]["items_done"] == 400


# ---------------------------------------------------------------------- bad input


def _past() -> str:
    return (datetime.now(UTC) - timedelta(minutes=5)).isoformat()


def _soon() -> str:
    return (datetime.now(UTC) + timedelta(seconds=2)).isoformat()


BAD_SUBMISSIONS: list[tuple[str, dict[str, Any], dict[str, str], int, str, str]] = [
    # (case, changes to a good body, headers, HTTP status, error code, the message says)
    (
        "no such bucket",
        {"input": "s3://no-such-bucket-here/x"},
        {},
        422,
        "input_unreadable",
        "no .npz objects under",
    ),
    (
        "nothing under the prefix",
        {"input": "{in}/empty"},
        {},
        422,
        "input_unreadable",
        "no .npz objects",
    ),
    (
        "not an npz",
        {"input": "{in}/garbage"},
        {},
        422,
        "input_unreadable",
        "is not a readable .npz",
    ),
    (
        "no inputs array",
        {"input": "{in}/unnamed"},
        {},
        422,
        "input_unreadable",
        "has no array 'inputs'",
    ),
    ("pickled objects", {"input": "{in}/pickled"}, {}, 422, "input_unreadable", "never unpickled"),
    ("wrong shape", {"input": "{in}/shape"}, {}, 422, "invalid_input", "expects [-1, 64]"),
    ("wrong dtype", {"input": "{in}/complex"}, {}, 422, "invalid_input", "does not convert"),
    ("no rows", {"input": "{in}/empty-rows"}, {}, 422, "empty_batch", "hold no rows"),
    ("not s3", {"input": "/data/inputs"}, {}, 422, "invalid_request", "not an s3://BUCKET/PREFIX"),
    (
        "bad output bucket",
        {"output": "s3://Bad_Bucket/x"},
        {},
        422,
        "invalid_request",
        "bucket name",
    ),
    (
        "output inside input",
        {"output": "{in}/good/out"},
        {},
        422,
        "invalid_request",
        "lies inside the input",
    ),
    (
        "floor out of reach",
        {"min_accuracy": 0.9999},
        {},
        409,
        "no_eligible_variant",
        "reaches accuracy 0.9999",
    ),
    ("deadline past", {"deadline": "{past}"}, {}, 422, "invalid_request", "is in the past"),
    ("deadline naive", {"deadline": "2031-01-01T18:00:00"}, {}, 422, "invalid_request", "deadline"),
    (
        "deadline too soon",
        {"deadline": "{soon}", "min_accuracy": SLOW_FLOOR},
        {},
        409,
        "no_eligible_variant",
        "move the deadline",
    ),
    (
        "cost cap too low",
        {"max_cost_usd": 1e-15},
        {},
        409,
        "no_eligible_variant",
        "raise max_cost_usd",
    ),
    ("unknown app", {"app": "no-such-app"}, {}, 404, "unknown_app", "no-such-app"),
    ("unknown field", {"priority": 3}, {}, 422, "invalid_request", "unknown field 'priority'"),
    ("accuracy above 1", {"min_accuracy": 1.5}, {}, 422, "invalid_request", "min_accuracy"),
    ("bad key", {}, {"Idempotency-Key": "x" * 300}, 422, "invalid_request", "Idempotency-Key"),
    ("no input", {"input": None}, {}, 422, "invalid_request", "give the input location"),
    # the system's own bucket (models, artifacts, uploads) is no job's, even the default
    # tenant's, whose INFAAS_JOB_BUCKETS rule allows every other bucket
    (
        "system bucket input",
        {"input": "s3://{system}/models"},
        {},
        403,
        "forbidden",
        "in the system's own bucket",
    ),
    (
        "system bucket output",
        {"output": "s3://{system}/artifacts"},
        {},
        403,
        "forbidden",
        "which no job may read or write",
    ),
]


@pytest.fixture(scope="module")
def bad_inputs(services_e2e: Stack) -> str:
    """A bucket of inputs, each wrong in its own way (and one good set)."""
    stack = services_e2e
    bucket = _bucket("bad")
    store = stack.services.store.bucket(bucket)
    objects = np.empty(2, dtype=object)
    objects[:] = [{"a": 1}, {"b": 2}]
    pickled = io.BytesIO()
    np.savez(pickled, inputs=objects)
    store.put_bytes("empty/readme.txt", b"no inputs here")
    store.put_bytes("garbage/part.npz", b"this is not a zip file")
    store.put_bytes(
        "unnamed/part.npz", _npz(np.zeros((3, 64), np.float32)).replace(b"inputs", b"values")
    )
    store.put_bytes("pickled/part.npz", pickled.getvalue())
    store.put_bytes("shape/part.npz", _npz(np.zeros((3, 8, 8), np.float32)))
    store.put_bytes("complex/part.npz", _npz(np.zeros((3, 64), np.complex64)))
    store.put_bytes("empty-rows/part.npz", _npz(np.zeros((0, 64), np.float32)))
    store.put_bytes("good/part.npz", _npz(_rows(stack, 20_000)))
    return f"s3://{bucket}"


@pytest.mark.parametrize(
    ("changes", "headers", "status", "code", "says"),
    [case[1:] for case in BAD_SUBMISSIONS],
    ids=[case[0] for case in BAD_SUBMISSIONS],
)
def test_bad_submissions_are_refused_clearly_and_change_nothing(
    services_e2e: Stack,
    bad_inputs: str,
    changes: dict[str, Any],
    headers: dict[str, str],
    status: int,
    code: str,
    says: str,
) -> None:
    stack = services_e2e
    out = _bucket("out")
    body: dict[str, Any] = {
        "app": DEMO_APP,
        "input": f"{bad_inputs}/good",
        "output": f"s3://{out}/x",
        "min_accuracy": FAST_FLOOR,
    }
    values = {
        "in": bad_inputs,
        "past": _past(),
        "soon": _soon(),
        "system": stack.services.store.bucket_name,
    }
    for name, value in changes.items():
        body[name] = value.format(**values) if isinstance(value, str) else value
    body = {k: v for k, v in body.items() if v is not None}
    bucket = bad_inputs.removeprefix("s3://")
    before = (_job_count(stack), _everything(stack, bucket, out))
    response = httpx.post(f"{stack.url}/v1/jobs", json=body, headers=headers, timeout=120)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert says in error["message"]
    assert (_job_count(stack), _everything(stack, bucket, out)) == before


def test_an_output_location_that_cannot_be_written_is_refused(embedded_e2e: Stack) -> None:
    stack = embedded_e2e
    source = _put_inputs(stack, _bucket("in"), "run", [_rows(stack, 10)])
    store = stack.services.store
    blocked = _bucket("blocked")
    assert isinstance(store, LocalStore)  # the embedded default: a local folder
    store.buckets.mkdir(parents=True, exist_ok=True)
    (store.buckets / blocked).write_text("a file where the bucket's folder would be")
    before = _job_count(stack)
    response = _submit(
        stack,
        {
            "app": DEMO_APP,
            "input": source,
            "output": f"s3://{blocked}/x",
            "min_accuracy": FAST_FLOOR,
        },
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "output_not_writable"
    assert f"s3://{blocked}/x cannot be written" in response.json()["error"]["message"]
    assert _job_count(stack) == before


def test_an_upload_that_is_not_an_npz_is_refused_and_not_kept(
    embedded_e2e: Stack, tmp_path: Path
) -> None:
    stack = embedded_e2e
    path = tmp_path / "inputs.npz"
    path.write_bytes(b"definitely not numpy")
    before = (_job_count(stack), _everything(stack))
    with path.open("rb") as data:
        response = httpx.post(
            f"{stack.url}/v1/jobs",
            data={"app": DEMO_APP, "output": f"s3://{_bucket('out')}", "min_accuracy": "0.95"},
            files={"inputs": ("inputs.npz", data)},
            timeout=60,
        )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "input_unreadable"
    assert (_job_count(stack), _everything(stack)) == before
    missing = httpx.post(
        f"{stack.url}/v1/jobs",
        data={"app": DEMO_APP, "output": "s3://x-out", "min_accuracy": "0.95"},
        files={"other": ("x", b"1")},
        timeout=60,
    )
    assert missing.status_code == 422
    assert "no file 'inputs'" in missing.json()["error"]["message"]


# --------------------------------------------------------------------------------- CLI


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("INFAAS_")}
    return subprocess.run(
        [sys.executable, "-m", "infaas.cli", *args],
        env=clean,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_cli_submits_waits_shows_and_lists_jobs(services_e2e: Stack, tmp_path: Path) -> None:
    stack = services_e2e
    upload = tmp_path / "rows.npz"
    upload.write_bytes(_npz(_rows(stack, 500)))
    out = f"s3://{_bucket('out')}/cli"
    done = _cli(
        "jobs", "submit", DEMO_APP, "--upload", str(upload), "--output", out,
        "--min-accuracy", "0.95", "--chunk-items", "200", "--wait", "--url", stack.url,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.split()[1].rstrip(":")
    assert "500 items in 3 chunks" in done.stdout
    assert "succeeded, 500/500 items" in done.stdout
    assert f"manifest: {out}/{job_id}/manifest.json" in done.stdout
    shown = _cli("jobs", "status", job_id, "--json", "--url", stack.url)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["status"] == JOB_SUCCEEDED
    listed = _cli("jobs", "list", "--app", DEMO_APP, "--url", stack.url)
    assert job_id in listed.stdout
    refused = _cli("jobs", "cancel", job_id, "--url", stack.url)
    assert refused.returncode == 1
    assert "conflict: job" in refused.stderr
    assert "already succeeded" in refused.stderr
    unknown = _cli("jobs", "wait", "nope", "--url", stack.url)
    assert unknown.returncode == 1
    assert "unknown_job" in unknown.stderr


def test_job_queries_with_bad_parameters_are_refused(embedded_e2e: Stack) -> None:
    url = embedded_e2e.url
    cases = [
        (f"/v1/jobs/{uuid.uuid4().hex}", 404, "unknown_job"),
        ("/v1/jobs?status=bogus", 422, "invalid_request"),
        ("/v1/jobs?limit=0", 422, "invalid_request"),
    ]
    for path, status, code in cases:
        response = httpx.get(f"{url}{path}", timeout=30)
        assert response.status_code == status, response.text
        assert response.json()["error"]["code"] == code
    wrong_type = httpx.post(
        f"{url}/v1/jobs", content=b"app=digits", headers={"content-type": "text/plain"}, timeout=30
    )
    assert wrong_type.status_code == 422
    assert "send the job as JSON" in wrong_type.json()["error"]["message"]

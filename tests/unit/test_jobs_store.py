"""Jobs and chunks in an SQLite catalog: creation with idempotency, claims and leases,
completion exactly once, cancel, failure, the manifest and the sweeper's view."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from queues.errors import Conflict, UnknownJob
from registry.catalog import Catalog
from registry.jobs import ChunkRow, Job, JobStore, NewJob, job_view, new_job_id
from registry.jobs.chunking import InputObject, plan_chunks
from registry.jobs.locations import Location
from registry.jobs.objects import finalize_job
from registry.jobs.recovery import CLAIM_DONE, CLAIM_EXHAUSTED, CLAIM_HELD, CLAIM_RUN
from registry.jobs.status import (
    CHUNK_DONE,
    CHUNK_FAILED,
    CHUNK_QUEUED,
    CHUNK_RUNNING,
    JOB_CANCELLED,
    JOB_FAILED,
    JOB_QUEUED,
    JOB_RUNNING,
    JOB_SUCCEEDED,
)
from registry.store import LocalStore
from registry.types import utcnow

LEASE_S = 30.0


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    with Catalog(f"sqlite:///{tmp_path / 'catalog.db'}") as opened:
        yield opened


@pytest.fixture
def jobs(catalog: Catalog) -> JobStore:
    return JobStore(catalog)


def _new(key: str | None = None, fingerprint: str = "f1") -> NewJob:
    return NewJob(
        id=new_job_id(),
        tenant="default",
        app="digits",
        variant="digits-logreg.onnx-fp32.cpu-t1",
        hardware="cpu",
        input=Location("jobs-in", "run"),
        uploaded=False,
        output=Location("jobs-out", "daily"),
        min_accuracy=0.95,
        deadline=None,
        max_cost_usd=None,
        idempotency_key=key,
        fingerprint=fingerprint,
        chunk_items=100,
        priority=1,
        estimate={"cost_usd": 0.001},
    )


OBJECTS = [InputObject("run/a.npz", 250, 1000), InputObject("run/b.npz", 50, 500)]


def _create(jobs: JobStore, key: str | None = None, fingerprint: str = "f1") -> Job:
    job, replayed = jobs.create(
        _new(key, fingerprint), plan_chunks(OBJECTS, 100), {o.key: o.size_bytes for o in OBJECTS}
    )
    assert not replayed
    return job


def _claim(jobs: JobStore, job: Job, index: int, worker: str = "w1", **kwargs: object) -> str:
    options: dict[str, object] = {"alive": frozenset(), "lease_s": LEASE_S, "max_attempts": 3}
    options.update(kwargs)
    claim = jobs.claim(job.id, index, worker=worker, variant=job.variant, **options)  # type: ignore[arg-type]
    return claim.decision


def _complete(jobs: JobStore, job: Job, index: int, *, wrote: bool = True) -> bool:
    return jobs.complete(
        job.id, index, worker="w1", variant=job.variant, wrote=wrote, model_ms=2.0, cost_usd=1e-6
    )


def test_a_job_and_its_chunks_are_recorded_together(jobs: JobStore) -> None:
    job = _create(jobs)
    assert (job.status, job.items_total, job.chunks_total) == (JOB_QUEUED, 300, 4)
    stored, chunks = jobs.get_with_chunks(job.id)
    assert stored == job
    assert [(c.input_key, c.row_start, c.row_stop, c.first_item) for c in chunks] == [
        ("run/a.npz", 0, 100, 0),
        ("run/a.npz", 100, 200, 100),
        ("run/a.npz", 200, 250, 200),
        ("run/b.npz", 0, 50, 250),
    ]
    assert chunks[3].output_key == f"daily/{job.id}/chunk-00003.npz"
    assert chunks[3].input_size_bytes == 500
    assert all(c.status == CHUNK_QUEUED and c.published_at is None for c in chunks)
    jobs.mark_published(job.id, [0, 1])
    chunks = jobs.get_with_chunks(job.id)[1]
    assert [c.publishes for c in chunks] == [1, 1, 0, 0]


def test_the_same_idempotency_key_gives_the_same_job(jobs: JobStore) -> None:
    first = _create(jobs, key="k1")
    again, replayed = jobs.create(
        _new("k1"), plan_chunks(OBJECTS, 100), {"run/a.npz": 1, "run/b.npz": 1}
    )
    assert replayed
    assert again.id == first.id
    with pytest.raises(Conflict, match=r"was used for job \w+ with other parameters"):
        jobs.create(_new("k1", fingerprint="other"), plan_chunks(OBJECTS, 100), {})
    assert [j.id for j, _ in jobs.recent(tenant="default")] == [first.id]
    assert jobs.replay("default", "k1", "f1") == first
    assert jobs.replay("default", "unused", "f1") is None
    assert jobs.replay("someone-else", "k1", "other") is None  # keys are per tenant


def test_claims_run_a_chunk_once_at_a_time(jobs: JobStore, catalog: Catalog) -> None:
    job = _create(jobs)
    assert _claim(jobs, job, 0) == CLAIM_RUN
    assert jobs.get(job.id).status == JOB_RUNNING
    # another worker gets a duplicate message while w1 is alive and renewing
    assert _claim(jobs, job, 0, worker="w2", alive=frozenset({"w1"})) == CLAIM_HELD
    # unknown liveness counts the holder as alive until its lease runs out
    assert _claim(jobs, job, 0, worker="w2", alive=None) == CLAIM_HELD
    # w1 died (gone from live state): w2 takes the chunk over
    assert _claim(jobs, job, 0, worker="w2", alive=frozenset()) == CLAIM_RUN
    chunk = jobs.chunk(job.id, 0)
    assert (chunk.status, chunk.worker, chunk.attempts) == (CHUNK_RUNNING, "w2", 2)
    assert not jobs.renew(job.id, 0, "w1", LEASE_S)  # w1 lost it
    assert jobs.renew(job.id, 0, "w2", LEASE_S)
    # a silent holder past its lease loses the chunk even while alive
    with catalog.write_session(bump=False) as session:
        session.execute(
            update(ChunkRow)
            .where(ChunkRow.job_id == job.id, ChunkRow.chunk_index == 0)
            .values(lease_until=utcnow() - timedelta(seconds=1))
        )
    assert _claim(jobs, job, 0, worker="w3", alive=frozenset({"w2"})) == CLAIM_RUN


def test_a_chunk_that_keeps_failing_fails_its_job(jobs: JobStore) -> None:
    job = _create(jobs)
    for _ in range(3):
        assert _claim(jobs, job, 1, worker="w1") == CLAIM_RUN  # each time its worker "died"
    assert _claim(jobs, job, 1, worker="w2") == CLAIM_EXHAUSTED
    failed = jobs.get(job.id)
    assert failed.status == JOB_FAILED
    assert "chunk 1 was tried 3 times" in failed.error
    assert jobs.chunk(job.id, 1).status == CHUNK_FAILED
    assert _claim(jobs, job, 2) == JOB_FAILED  # nothing more runs


def test_completion_counts_once_and_only_the_last_one_sees_all_done(jobs: JobStore) -> None:
    job = _create(jobs)
    for index in range(4):
        assert _claim(jobs, job, index) == CLAIM_RUN
    assert not _complete(jobs, job, 0)
    assert not _complete(jobs, job, 0)  # a repeat changes nothing
    assert not _complete(jobs, job, 1, wrote=False)  # found written by a dead worker
    assert not _complete(jobs, job, 2)
    assert _complete(jobs, job, 3)
    chunks = jobs.get_with_chunks(job.id)[1]
    assert [c.output_writes for c in chunks] == [1, 0, 1, 1]
    assert [c.status for c in chunks] == [CHUNK_DONE] * 4
    assert _claim(jobs, job, 2) == CLAIM_DONE
    view = job_view(*jobs.get_with_chunks(job.id), utcnow())
    assert view["progress"] == {
        "items_done": 300,
        "items_total": 300,
        "chunks_done": 4,
        "chunks_total": 4,
        "fraction": 1.0,
    }
    assert view["cost_usd"] == pytest.approx(4e-6)
    assert view["variants_used"] == [job.variant]


def test_released_chunks_wait_again_with_their_error(jobs: JobStore) -> None:
    job = _create(jobs)
    assert _claim(jobs, job, 0) == CLAIM_RUN
    jobs.release(job.id, 0, "w1", "the store is down")
    chunk = jobs.chunk(job.id, 0)
    assert (chunk.status, chunk.worker, chunk.error) == (CHUNK_QUEUED, "", "the store is down")
    jobs.release(job.id, 0, "w2", "not mine")  # only the holder can release
    assert jobs.chunk(job.id, 0).error == "the store is down"


def test_an_outage_longer_than_the_attempts_waits_and_never_fails_the_job(
    jobs: JobStore,
) -> None:
    job = _create(jobs)
    for _handback in range(10):  # max_attempts is 3: each hand-back gives its attempt back
        assert _claim(jobs, job, 0) == CLAIM_RUN
        jobs.release(job.id, 0, "w1", "the store is down")
    assert jobs.chunk(job.id, 0).attempts == 0
    assert _claim(jobs, job, 0) == CLAIM_RUN
    assert not _complete(jobs, job, 0)
    assert jobs.get(job.id).status != JOB_FAILED


def test_cancel_stops_the_job_and_keeps_its_partial_outputs(jobs: JobStore) -> None:
    job = _create(jobs)
    assert _claim(jobs, job, 0) == CLAIM_RUN
    _complete(jobs, job, 0)
    assert _claim(jobs, job, 1) == CLAIM_RUN
    cancelled = jobs.cancel(job.id)
    assert cancelled.status == JOB_CANCELLED
    assert cancelled.finished_at is not None
    assert jobs.cancel(job.id).status == JOB_CANCELLED  # again: no change, no error
    assert not jobs.renew(job.id, 1, "w1", LEASE_S)  # the running chunk stops
    assert _claim(jobs, job, 2) == JOB_CANCELLED  # the rest never start
    view = job_view(*jobs.get_with_chunks(job.id), utcnow())
    assert view["status"] == JOB_CANCELLED
    assert view["outputs"] == [f"daily/{job.id}/chunk-00000.npz"]
    assert not jobs.succeed(job.id, "m.json")
    assert not jobs.fail(job.id, "late")


def test_finished_jobs_cannot_be_cancelled(jobs: JobStore) -> None:
    job = _create(jobs)
    assert jobs.fail(job.id, "chunk 0: the model crashed", index=0)
    with pytest.raises(Conflict, match="already failed"):
        jobs.cancel(job.id)
    view = job_view(*jobs.get_with_chunks(job.id), utcnow())
    assert view["errors"][0] == {
        "chunk": None,
        "status": JOB_FAILED,
        "attempts": 0,
        "error": "chunk 0: the model crashed",
    }
    assert view["errors"][1]["chunk"] == 0


def test_unknown_jobs_are_404s(jobs: JobStore) -> None:
    with pytest.raises(UnknownJob, match="does not exist"):
        jobs.get("nope")
    with pytest.raises(UnknownJob):
        jobs.cancel("nope")


def test_the_manifest_is_written_once_every_chunk_is_done(jobs: JobStore, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    job = _create(jobs)
    for index in range(4):
        _claim(jobs, job, index)
    for index in range(3):
        _complete(jobs, job, index)
    assert not finalize_job(jobs, store, job.id)  # one chunk to go
    _, _, complete = jobs.unfinished()
    assert complete == []
    _complete(jobs, job, 3)
    _, waiting, complete = jobs.unfinished()
    assert (waiting, complete) == ([], [job.id])  # its finisher might have died here
    assert finalize_job(jobs, store, job.id)
    assert not finalize_job(jobs, store, job.id)
    done = jobs.get(job.id)
    assert done.status == JOB_SUCCEEDED
    assert done.manifest_key == f"daily/{job.id}/manifest.json"
    manifest = json.loads(store.bucket("jobs-out").get_bytes(done.manifest_key))
    assert manifest["items_total"] == 300
    assert [c["key"] for c in manifest["chunks"]] == [
        f"daily/{job.id}/chunk-{i:05d}.npz" for i in range(4)
    ]
    assert manifest["chunks"][3] == {
        "index": 3,
        "key": f"daily/{job.id}/chunk-00003.npz",
        "items": 50,
        "first_item": 250,
        "input": "run/b.npz",
        "rows": [0, 50],
    }


def test_the_sweeper_sees_active_jobs_and_their_waiting_chunks(jobs: JobStore) -> None:
    job = _create(jobs)
    other = _create(jobs)
    jobs.cancel(other.id)
    _claim(jobs, job, 0)
    active, waiting, complete = jobs.unfinished()
    assert [j.id for j in active] == [job.id]
    assert [(c.index, c.status, c.holder) for c in waiting] == [
        (0, CHUNK_RUNNING, "w1"),
        (1, CHUNK_QUEUED, ""),
        (2, CHUNK_QUEUED, ""),
        (3, CHUNK_QUEUED, ""),
    ]
    assert complete == []


def test_jobs_list_newest_first_with_their_progress(jobs: JobStore) -> None:
    first = _create(jobs)
    second = _create(jobs)
    _claim(jobs, second, 3)
    _complete(jobs, second, 3)
    listed = jobs.recent(tenant="default")
    assert [j.id for j, _ in listed] == [second.id, first.id]
    progress = listed[0][1]
    assert (progress.items_done, progress.chunks_done) == (50, 1)
    assert progress.cost_usd == pytest.approx(1e-6)
    assert jobs.recent(tenant="default", status=JOB_QUEUED)[0][0].id == first.id
    assert jobs.recent(tenant="default", app="other") == []
    assert len(jobs.recent(tenant="default", limit=1)) == 1

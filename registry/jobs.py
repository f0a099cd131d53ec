"""Batch jobs in the catalog: one row per job, one per chunk, and every state change.

The gateway writes a job and all its chunks in one transaction; workers claim, renew,
release and complete chunks; gateways read progress and sweep for lost messages. All of
it lives in the catalog's database, so a gateway, worker or scaler that restarts mid-job
loses nothing. Every change is idempotent (completing a finished chunk or cancelling a
cancelled job changes nothing) and safe under concurrency: a chunk's row is locked while
it is claimed or completed, a job's row while one of its chunks completes (so exactly
one worker sees the last chunk finish). None of these writes bump the catalog revision:
nothing the selector reads changes.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    select,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Mapped, Session, mapped_column

from queues.errors import Conflict, InvalidRequest, UnknownJob
from registry.catalog_schema import Base, JSONColumn, UTCDateTime
from registry.job_planning import (
    ACTIVE_JOB_STATUSES,
    CHUNK_DONE,
    CHUNK_FAILED,
    CHUNK_QUEUED,
    CHUNK_RUNNING,
    CLAIM_EXHAUSTED,
    CLAIM_RUN,
    EVENT_CANCEL,
    EVENT_FAIL,
    EVENT_START,
    EVENT_SUCCEED,
    FINISHED_JOB_STATUSES,
    JOB_CANCELLED,
    JOB_QUEUED,
    JOB_RUNNING,
    JOB_STATUSES,
    ChunkPlan,
    ChunkView,
    Location,
    claim_decision,
    next_job_status,
    output_key,
    required_items_per_s,
)
from registry.types import iso, utcnow

if TYPE_CHECKING:
    from registry.catalog import Catalog

MAX_ERROR_CHARS = 2000


# ----------------------------------------------------------------------------- tables


class JobRow(Base):
    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("tenant", "idempotency_key"),)

    id: Mapped[str] = mapped_column(String, primary_key=True)
    tenant: Mapped[str] = mapped_column(String, nullable=False)
    app_id: Mapped[str] = mapped_column(String, nullable=False, index=True)
    status: Mapped[str] = mapped_column(String, nullable=False, index=True)
    variant_id: Mapped[str] = mapped_column(String, nullable=False)
    hardware: Mapped[str] = mapped_column(String, nullable=False)
    input_bucket: Mapped[str] = mapped_column(String, nullable=False)
    input_prefix: Mapped[str] = mapped_column(String, nullable=False)
    uploaded: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    output_bucket: Mapped[str] = mapped_column(String, nullable=False)
    output_prefix: Mapped[str] = mapped_column(String, nullable=False)
    min_accuracy: Mapped[float] = mapped_column(Float, nullable=False)
    deadline: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    max_cost_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String, nullable=True)
    fingerprint: Mapped[str] = mapped_column(String, nullable=False)
    chunk_items: Mapped[int] = mapped_column(Integer, nullable=False)
    items_total: Mapped[int] = mapped_column(Integer, nullable=False)
    chunks_total: Mapped[int] = mapped_column(Integer, nullable=False)
    priority: Mapped[int] = mapped_column(Integer, nullable=False)
    estimate: Mapped[dict[str, Any]] = mapped_column(JSONColumn, nullable=False)
    error: Mapped[str] = mapped_column(Text, nullable=False, default="")
    manifest_key: Mapped[str] = mapped_column(String, nullable=False, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ChunkRow(Base):
    __tablename__ = "job_chunks"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    chunk_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    input_key: Mapped[str] = mapped_column(String, nullable=False)
    input_size_bytes: Mapped[int] = mapped_column(Integer, nullable=False)
    row_start: Mapped[int] = mapped_column(Integer, nullable=False)
    row_stop: Mapped[int] = mapped_column(Integer, nullable=False)
    first_item: Mapped[int] = mapped_column(Integer, nullable=False)
    output_key: Mapped[str] = mapped_column(String, nullable=False)
    status: Mapped[str] = mapped_column(String, nullable=False)
    worker: Mapped[str] = mapped_column(String, nullable=False, default="")
    variant_id: Mapped[str] = mapped_column(String, nullable=False, default="")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    output_writes: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    publishes: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    model_ms: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    cost_usd: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    error: Mapped[str] = mapped_column(Text, nullable=False, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


# ---------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class NewJob:
    """A checked submission, ready to record."""

    id: str
    tenant: str
    app: str
    variant: str
    hardware: str
    input: Location
    uploaded: bool
    output: Location
    min_accuracy: float
    deadline: datetime | None
    max_cost_usd: float | None
    idempotency_key: str | None
    fingerprint: str
    chunk_items: int
    priority: int
    estimate: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Chunk:
    job_id: str
    index: int
    input_key: str
    input_size_bytes: int
    row_start: int
    row_stop: int
    first_item: int
    output_key: str
    status: str
    worker: str
    variant: str
    attempts: int
    output_writes: int
    publishes: int
    lease_until: datetime | None
    model_ms: float
    cost_usd: float
    error: str
    created_at: datetime
    published_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def items(self) -> int:
        return self.row_stop - self.row_start

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "status": self.status,
            "input": self.input_key,
            "rows": [self.row_start, self.row_stop],
            "first_item": self.first_item,
            "output": self.output_key,
            "worker": self.worker or None,
            "variant": self.variant or None,
            "attempts": self.attempts,
            "output_writes": self.output_writes,
            "model_ms": round(self.model_ms, 3),
            "cost_usd": self.cost_usd,
            "error": self.error or None,
        }


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    tenant: str
    app: str
    status: str
    variant: str
    hardware: str
    input: Location
    uploaded: bool
    output: Location
    min_accuracy: float
    deadline: datetime | None
    max_cost_usd: float | None
    idempotency_key: str | None
    fingerprint: str
    chunk_items: int
    items_total: int
    chunks_total: int
    priority: int
    estimate: dict[str, Any]
    error: str
    manifest_key: str
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_JOB_STATUSES


@dataclass(frozen=True, slots=True)
class Progress:
    items_done: int
    chunks_done: int
    cost_usd: float
    model_ms: float


@dataclass(frozen=True, slots=True)
class Claim:
    decision: str
    job: Job
    chunk: Chunk


def progress_of(chunks: Sequence[Chunk]) -> Progress:
    done = [c for c in chunks if c.status == CHUNK_DONE]
    return Progress(
        items_done=sum(c.items for c in done),
        chunks_done=len(done),
        cost_usd=sum(c.cost_usd for c in chunks),
        model_ms=sum(c.model_ms for c in chunks),
    )


def job_summary(job: Job, progress: Progress) -> dict[str, Any]:
    """A job in a list: what, how far, how much."""
    return {
        "job_id": job.id,
        "app": job.app,
        "status": job.status,
        "variant": job.variant,
        "progress": {
            "items_done": progress.items_done,
            "items_total": job.items_total,
            "chunks_done": progress.chunks_done,
            "chunks_total": job.chunks_total,
        },
        "cost_usd": round(progress.cost_usd, 10),
        "created_at": iso(job.created_at),
        "finished_at": iso(job.finished_at),
        "status_url": f"/v1/jobs/{job.id}",
    }


def job_view(job: Job, chunks: Sequence[Chunk], now: datetime) -> dict[str, Any]:
    """Everything about a job: status, progress, variant(s) used, cost so far, errors, the
    outputs written (also those of a cancelled or failed job) and the manifest."""
    progress = progress_of(chunks)
    view = job_summary(job, progress)
    used = sorted({c.variant for c in chunks if c.variant and c.status == CHUNK_DONE})
    errors = [
        {"chunk": c.index, "status": c.status, "attempts": c.attempts, "error": c.error}
        for c in chunks
        if c.error
    ]
    if job.error:
        errors.insert(0, {"chunk": None, "status": job.status, "attempts": 0, "error": job.error})
    end = job.finished_at or now
    view.update(
        {
            "hardware": job.hardware,
            "variants_used": used,
            "input": job.input.url,
            "output": job.output.url,
            "min_accuracy": job.min_accuracy,
            "deadline": iso(job.deadline),
            "deadline_missed": job.deadline is not None and end > job.deadline,
            "required_items_per_s": 0.0
            if job.finished
            else required_items_per_s(job.items_total - progress.items_done, job.deadline, now),
            "max_cost_usd": job.max_cost_usd,
            "model_ms": round(progress.model_ms, 3),
            "estimate": job.estimate,
            "errors": errors,
            "outputs": [c.output_key for c in chunks if c.status == CHUNK_DONE],
            "manifest": job.manifest_key or None,
            "idempotency_key": job.idempotency_key,
            "started_at": iso(job.started_at),
            "updated_at": iso(job.updated_at),
        }
    )
    view["progress"]["fraction"] = (
        round(progress.items_done / job.items_total, 6) if job.items_total else 1.0
    )
    return view


def build_manifest(job: Job, chunks: Sequence[Chunk]) -> dict[str, Any]:
    """What a finished job wrote, in item order; the same content however often it is
    written."""
    return {
        "job_id": job.id,
        "app": job.app,
        "variant": job.variant,
        "variants_used": sorted({c.variant for c in chunks if c.variant}),
        "input": job.input.url,
        "output": job.output.url,
        "items_total": job.items_total,
        "chunks_total": job.chunks_total,
        "cost_usd": sum(c.cost_usd for c in chunks),
        "format": {
            "chunk": ".npz (numpy) per chunk",
            "arrays": {
                "outputs": "float32 [n, k]: the variant's outputs, one row per item",
                "labels": "int64 [n]: argmax of each row",
                "index": "int64 [n]: the item's position across the job's inputs",
            },
        },
        "chunks": [
            {
                "index": c.index,
                "key": c.output_key,
                "items": c.items,
                "first_item": c.first_item,
                "input": c.input_key,
                "rows": [c.row_start, c.row_stop],
            }
            for c in sorted(chunks, key=lambda c: c.index)
        ],
    }


def new_job_id() -> str:
    return uuid.uuid4().hex


# ---------------------------------------------------------------------- row <-> record


def _job_record(row: JobRow) -> Job:
    return Job(
        id=row.id,
        tenant=row.tenant,
        app=row.app_id,
        status=row.status,
        variant=row.variant_id,
        hardware=row.hardware,
        input=Location(row.input_bucket, row.input_prefix),
        uploaded=row.uploaded,
        output=Location(row.output_bucket, row.output_prefix),
        min_accuracy=row.min_accuracy,
        deadline=row.deadline,
        max_cost_usd=row.max_cost_usd,
        idempotency_key=row.idempotency_key,
        fingerprint=row.fingerprint,
        chunk_items=row.chunk_items,
        items_total=row.items_total,
        chunks_total=row.chunks_total,
        priority=row.priority,
        estimate=dict(row.estimate),
        error=row.error,
        manifest_key=row.manifest_key,
        created_at=row.created_at,
        updated_at=row.updated_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


def _chunk_record(row: ChunkRow) -> Chunk:
    return Chunk(
        job_id=row.job_id,
        index=row.chunk_index,
        input_key=row.input_key,
        input_size_bytes=row.input_size_bytes,
        row_start=row.row_start,
        row_stop=row.row_stop,
        first_item=row.first_item,
        output_key=row.output_key,
        status=row.status,
        worker=row.worker,
        variant=row.variant_id,
        attempts=row.attempts,
        output_writes=row.output_writes,
        publishes=row.publishes,
        lease_until=row.lease_until,
        model_ms=row.model_ms,
        cost_usd=row.cost_usd,
        error=row.error,
        created_at=row.created_at,
        published_at=row.published_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


def _clip(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def _move(row: JobRow, event: str, now: datetime) -> bool:
    """Apply ``event`` to a locked job row; False when its status does not change."""
    status = next_job_status(row.status, event)
    if status is None:
        return False
    row.status = status
    row.updated_at = now
    if status == JOB_RUNNING and row.started_at is None:
        row.started_at = now
    if status in FINISHED_JOB_STATUSES:
        row.finished_at = now
    return True


# ------------------------------------------------------------------------------ store


class JobStore:
    """Jobs and chunks in the catalog's database."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    # -- submission

    def create(
        self,
        job: NewJob,
        plan: Sequence[ChunkPlan],
        input_sizes: dict[str, int],
    ) -> tuple[Job, bool]:
        """Record the job and all its chunks in one transaction. With an idempotency key
        already used by the same request, the existing job comes back instead
        (``True``: replayed); used by another request, it is a conflict."""
        if job.idempotency_key is not None:
            found = self.replay(job.tenant, job.idempotency_key, job.fingerprint)
            if found is not None:
                return found, True
        now = utcnow()
        row = JobRow(
            id=job.id,
            tenant=job.tenant,
            app_id=job.app,
            status=JOB_QUEUED,
            variant_id=job.variant,
            hardware=job.hardware,
            input_bucket=job.input.bucket,
            input_prefix=job.input.prefix,
            uploaded=job.uploaded,
            output_bucket=job.output.bucket,
            output_prefix=job.output.prefix,
            min_accuracy=job.min_accuracy,
            deadline=job.deadline,
            max_cost_usd=job.max_cost_usd,
            idempotency_key=job.idempotency_key,
            fingerprint=job.fingerprint,
            chunk_items=job.chunk_items,
            items_total=sum(c.items for c in plan),
            chunks_total=len(plan),
            priority=job.priority,
            estimate=dict(job.estimate),
            error="",
            manifest_key="",
            created_at=now,
            updated_at=now,
        )
        chunks = [
            ChunkRow(
                job_id=job.id,
                chunk_index=c.index,
                input_key=c.input_key,
                input_size_bytes=input_sizes[c.input_key],
                row_start=c.row_start,
                row_stop=c.row_stop,
                first_item=c.first_item,
                output_key=output_key(job.output, job.id, c.index),
                status=CHUNK_QUEUED,
                worker="",
                variant_id="",
                attempts=0,
                output_writes=0,
                publishes=0,
                model_ms=0.0,
                cost_usd=0.0,
                error="",
                created_at=now,
            )
            for c in plan
        ]
        try:
            with self._catalog.write_session(bump=False) as session:
                session.add(row)
                session.flush()
                session.add_all(chunks)
                created = _job_record(row)
        except sa_exc.IntegrityError:
            # another gateway recorded the same idempotency key a moment ago
            if job.idempotency_key is None:
                raise
            found = self.replay(job.tenant, job.idempotency_key, job.fingerprint)
            if found is None:
                raise
            return found, True
        return created, False

    def replay(self, tenant: str, key: str, fingerprint: str) -> Job | None:
        """The job recorded under an idempotency key, if the request is the same one;
        a conflict if the key was used for another request."""
        found = self.find_by_key(tenant, key)
        if found is not None and found.fingerprint != fingerprint:
            raise Conflict(
                f"Idempotency-Key {key!r} was used for job {found.id} with other "
                "parameters; use a new key for a new job, or repeat the original request"
            )
        return found

    def find_by_key(self, tenant: str, key: str) -> Job | None:
        with self._catalog.read_session() as session:
            row = session.scalars(
                select(JobRow).where(JobRow.tenant == tenant, JobRow.idempotency_key == key)
            ).first()
            return _job_record(row) if row is not None else None

    def mark_published(self, job_id: str, indices: Sequence[int]) -> None:
        if not indices:
            return
        now = utcnow()
        with self._catalog.write_session(bump=False) as session:
            session.execute(
                update(ChunkRow)
                .where(ChunkRow.job_id == job_id, ChunkRow.chunk_index.in_(list(indices)))
                .values(published_at=now, publishes=ChunkRow.publishes + 1)
            )

    # -- reading

    def get(self, job_id: str) -> Job:
        with self._catalog.read_session() as session:
            return _job_record(_require(session, job_id))

    def get_with_chunks(self, job_id: str) -> tuple[Job, list[Chunk]]:
        with self._catalog.read_session() as session:
            job = _job_record(_require(session, job_id))
            return job, _chunks(session, job_id)

    def chunk(self, job_id: str, index: int) -> Chunk:
        with self._catalog.read_session() as session:
            return _chunk_record(_require_chunk(session, job_id, index))

    def recent(
        self,
        *,
        tenant: str,
        app: str | None = None,
        status: str | None = None,
        limit: int = 50,
    ) -> list[tuple[Job, Progress]]:
        """The newest jobs first, with their progress."""
        query = select(JobRow).where(JobRow.tenant == tenant)
        if app is not None:
            query = query.where(JobRow.app_id == app)
        if status is not None:
            query = query.where(JobRow.status == status)
        query = query.order_by(JobRow.created_at.desc(), JobRow.id).limit(limit)
        with self._catalog.read_session() as session:
            jobs = [_job_record(r) for r in session.scalars(query)]
            if not jobs:
                return []
            done = session.execute(
                select(
                    ChunkRow.job_id,
                    func.count(),
                    func.coalesce(func.sum(ChunkRow.row_stop - ChunkRow.row_start), 0),
                )
                .where(ChunkRow.job_id.in_([j.id for j in jobs]), ChunkRow.status == CHUNK_DONE)
                .group_by(ChunkRow.job_id)
            ).all()
            costs = session.execute(
                select(
                    ChunkRow.job_id,
                    func.coalesce(func.sum(ChunkRow.cost_usd), 0.0),
                    func.coalesce(func.sum(ChunkRow.model_ms), 0.0),
                )
                .where(ChunkRow.job_id.in_([j.id for j in jobs]))
                .group_by(ChunkRow.job_id)
            ).all()
        counts = {job_id: (int(n), int(items)) for job_id, n, items in done}
        spent = {job_id: (float(cost), float(ms)) for job_id, cost, ms in costs}
        return [
            (
                job,
                Progress(
                    items_done=counts.get(job.id, (0, 0))[1],
                    chunks_done=counts.get(job.id, (0, 0))[0],
                    cost_usd=spent.get(job.id, (0.0, 0.0))[0],
                    model_ms=spent.get(job.id, (0.0, 0.0))[1],
                ),
            )
            for job in jobs
        ]

    # -- workers

    def claim(
        self,
        job_id: str,
        index: int,
        *,
        worker: str,
        variant: str,
        alive: frozenset[str] | None,
        lease_s: float,
        max_attempts: int,
    ) -> Claim:
        """Decide, with the chunk's row locked, whether ``worker`` runs the chunk; if so,
        take it (and start the job). A chunk out of attempts fails its job.

        ``alive``: the other workers live now (None: unknown, so every other holder counts
        as alive until its lease runs out). A claim ``worker`` holds itself is a leftover
        (it runs one chunk at a time and is not running this one), so it is taken over."""
        now = utcnow()
        with self._catalog.write_session(bump=False) as session:
            job_row = _require(session, job_id, lock=True)
            row = _require_chunk(session, job_id, index, lock=True)
            if job_row.status not in ACTIVE_JOB_STATUSES:
                return Claim(job_row.status, _job_record(job_row), _chunk_record(row))
            decision = claim_decision(
                status=row.status,
                holder=row.worker,
                lease_until=row.lease_until,
                attempts=row.attempts,
                holder_alive=row.worker != worker and (alive is None or row.worker in alive),
                now=now,
                max_attempts=max_attempts,
            )
            if decision == CLAIM_RUN:
                row.status = CHUNK_RUNNING
                row.worker = worker
                row.variant_id = variant
                row.attempts += 1
                row.lease_until = now + timedelta(seconds=lease_s)
                row.started_at = now
                _move(job_row, EVENT_START, now)
            elif decision == CLAIM_EXHAUSTED:
                row.status = CHUNK_FAILED
                row.finished_at = now
                reason = f"chunk {index} was tried {row.attempts} times without finishing" + (
                    f"; last error: {row.error}" if row.error else " (its worker died)"
                )
                if _move(job_row, EVENT_FAIL, now):
                    job_row.error = _clip(reason)
            return Claim(decision, _job_record(job_row), _chunk_record(row))

    def renew(self, job_id: str, index: int, worker: str, lease_s: float) -> bool:
        """Extend ``worker``'s claim; False when it must stop (the job was cancelled or
        failed, or the chunk is no longer its own)."""
        now = utcnow()
        with self._catalog.write_session(bump=False) as session:
            job_row = _require(session, job_id)
            row = _require_chunk(session, job_id, index, lock=True)
            if job_row.status not in ACTIVE_JOB_STATUSES:
                return False
            if row.status != CHUNK_RUNNING or row.worker != worker:
                return False
            row.lease_until = now + timedelta(seconds=lease_s)
            return True

    def release(self, job_id: str, index: int, worker: str, error: str) -> None:
        """Hand a chunk back after a passing failure (a store outage): queued again, with
        the error kept for the status."""
        with self._catalog.write_session(bump=False) as session:
            row = _require_chunk(session, job_id, index, lock=True)
            if row.status == CHUNK_RUNNING and row.worker == worker:
                row.status = CHUNK_QUEUED
                row.worker = ""
                row.lease_until = None
                row.error = _clip(error)

    def complete(
        self,
        job_id: str,
        index: int,
        *,
        worker: str,
        variant: str,
        wrote: bool,
        model_ms: float,
        cost_usd: float,
    ) -> bool:
        """Mark the chunk done (once: completing a done chunk changes nothing) and say
        whether every chunk of the job is now done. The job's row is locked first, so of
        two chunks finishing at once exactly one sees the last one done."""
        now = utcnow()
        with self._catalog.write_session(bump=False) as session:
            _require(session, job_id, lock=True)
            row = _require_chunk(session, job_id, index, lock=True)
            if row.status != CHUNK_DONE:
                row.status = CHUNK_DONE
                row.worker = worker
                row.variant_id = variant
                row.output_writes += 1 if wrote else 0
                row.model_ms += model_ms
                row.cost_usd += cost_usd
                row.lease_until = None
                row.finished_at = now
            remaining = session.scalar(
                select(func.count())
                .select_from(ChunkRow)
                .where(ChunkRow.job_id == job_id, ChunkRow.status != CHUNK_DONE)
            )
            return int(remaining or 0) == 0

    def fail(self, job_id: str, reason: str, *, index: int | None = None) -> bool:
        """Fail the job (and the chunk that made it fail); False if it had finished."""
        now = utcnow()
        with self._catalog.write_session(bump=False) as session:
            job_row = _require(session, job_id, lock=True)
            if index is not None:
                row = _require_chunk(session, job_id, index, lock=True)
                if row.status != CHUNK_DONE:
                    row.status = CHUNK_FAILED
                    row.error = _clip(reason)
                    row.lease_until = None
                    row.finished_at = now
            if not _move(job_row, EVENT_FAIL, now):
                return False
            job_row.error = _clip(reason)
            return True

    def succeed(self, job_id: str, manifest_key: str) -> bool:
        """Mark a running job succeeded with its manifest; False if it had finished."""
        now = utcnow()
        with self._catalog.write_session(bump=False) as session:
            job_row = _require(session, job_id, lock=True)
            if not _move(job_row, EVENT_SUCCEED, now):
                return False
            job_row.manifest_key = manifest_key
            return True

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued or running job (cancelling a cancelled job changes nothing)."""
        now = utcnow()
        with self._catalog.write_session(bump=False) as session:
            job_row = _require(session, job_id, lock=True)
            if job_row.status == JOB_CANCELLED or _move(job_row, EVENT_CANCEL, now):
                return _job_record(job_row)
            raise Conflict(
                f"job {job_id} already {job_row.status}; only a queued or running job can "
                "be cancelled"
            )

    # -- sweeping

    def unfinished(self) -> tuple[list[Job], list[ChunkView], list[str]]:
        """Active jobs, their chunks not done yet, and the running jobs whose every chunk
        is done (their finisher died before writing the manifest)."""
        with self._catalog.read_session() as session:
            jobs = [
                _job_record(r)
                for r in session.scalars(
                    select(JobRow)
                    .where(JobRow.status.in_(sorted(ACTIVE_JOB_STATUSES)))
                    .order_by(JobRow.created_at)
                )
            ]
            if not jobs:
                return [], [], []
            rows = session.scalars(
                select(ChunkRow)
                .where(
                    ChunkRow.job_id.in_([j.id for j in jobs]),
                    ChunkRow.status.in_([CHUNK_QUEUED, CHUNK_RUNNING]),
                )
                .order_by(ChunkRow.job_id, ChunkRow.chunk_index)
            ).all()
            failed = set(
                session.scalars(
                    select(ChunkRow.job_id)
                    .where(
                        ChunkRow.job_id.in_([j.id for j in jobs]),
                        ChunkRow.status == CHUNK_FAILED,
                    )
                    .distinct()
                )
            )
        views = [
            ChunkView(
                job_id=r.job_id,
                index=r.chunk_index,
                status=r.status,
                holder=r.worker,
                lease_until=r.lease_until,
                published_at=r.published_at,
                created_at=r.created_at,
                items=r.row_stop - r.row_start,
            )
            for r in rows
        ]
        waiting = {v.job_id for v in views}
        complete = [
            j.id
            for j in jobs
            if j.status == JOB_RUNNING and j.id not in waiting and j.id not in failed
        ]
        return jobs, views, complete


def _require(session: Session, job_id: str, *, lock: bool = False) -> JobRow:
    row = session.get(JobRow, job_id, with_for_update=lock or None)
    if row is None:
        raise UnknownJob(
            f"job {job_id!r} does not exist; use the job_id that POST /v1/jobs answered "
            "with (GET /v1/jobs lists them)"
        )
    return row


def _require_chunk(session: Session, job_id: str, index: int, *, lock: bool = False) -> ChunkRow:
    row = session.get(ChunkRow, (job_id, index), with_for_update=lock or None)
    if row is None:
        raise UnknownJob(f"job {job_id!r} has no chunk {index}")
    return row


def _chunks(session: Session, job_id: str) -> list[Chunk]:
    rows = session.scalars(
        select(ChunkRow).where(ChunkRow.job_id == job_id).order_by(ChunkRow.chunk_index)
    )
    return [_chunk_record(r) for r in rows]


def check_status_filter(status: str | None) -> str | None:
    if status is not None and status not in JOB_STATUSES:
        raise InvalidRequest(f"status {status!r} is not one of {list(JOB_STATUSES)}")
    return status

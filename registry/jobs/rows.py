"""Between the catalog's rows and the records: building a new job's rows, reading rows
back as records, and the small steps every write shares (a job's status moving, a row
that must exist, an error clipped to what the catalog keeps)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from queues.errors import UnknownJob
from registry.jobs.chunking import ChunkPlan
from registry.jobs.locations import Location, output_key
from registry.jobs.records import Chunk, Job, NewJob
from registry.jobs.status import (
    CHUNK_QUEUED,
    FINISHED_JOB_STATUSES,
    JOB_QUEUED,
    JOB_RUNNING,
    next_job_status,
)
from registry.jobs.tables import ChunkRow, JobRow

MAX_ERROR_CHARS = 2000


def new_job_row(job: NewJob, plan: Sequence[ChunkPlan], now: datetime) -> JobRow:
    """The row of a job just submitted: queued, nothing run yet."""
    return JobRow(
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


def new_chunk_rows(
    job: NewJob, plan: Sequence[ChunkPlan], input_sizes: dict[str, int], now: datetime
) -> list[ChunkRow]:
    """The rows of its chunks, queued, each with the output key every attempt writes."""
    return [
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


def job_record(row: JobRow) -> Job:
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


def chunk_record(row: ChunkRow) -> Chunk:
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


def clip(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def move_job(row: JobRow, event: str, now: datetime) -> bool:
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


def require_job(session: Session, job_id: str, *, lock: bool = False) -> JobRow:
    row = session.get(JobRow, job_id, with_for_update=lock or None)
    if row is None:
        raise UnknownJob(
            f"job {job_id!r} does not exist; use the job_id that POST /v1/jobs answered "
            "with (GET /v1/jobs lists them)"
        )
    return row


def require_chunk(session: Session, job_id: str, index: int, *, lock: bool = False) -> ChunkRow:
    row = session.get(ChunkRow, (job_id, index), with_for_update=lock or None)
    if row is None:
        raise UnknownJob(f"job {job_id!r} has no chunk {index}")
    return row


def chunks_of(session: Session, job_id: str) -> list[Chunk]:
    rows = session.scalars(
        select(ChunkRow).where(ChunkRow.job_id == job_id).order_by(ChunkRow.chunk_index)
    )
    return [chunk_record(r) for r in rows]

"""Batch jobs in the catalog: one row per job, one per chunk, and every state change.

The gateway writes a job and all its chunks in one transaction; workers claim, renew,
release and complete chunks (:class:`~registry.jobs.claims.ChunkClaims`); gateways read
progress and sweep for lost messages. All of it lives in the catalog's database, so a
gateway, worker or scaler that restarts mid-job loses nothing. Every change is
idempotent (completing a finished chunk or cancelling a cancelled job changes nothing)
and safe under concurrency. None of these writes bump the catalog revision: nothing the
selector reads changes.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import exc as sa_exc
from sqlalchemy import func, select, update

from queues.errors import Conflict
from registry.jobs.chunking import ChunkPlan
from registry.jobs.claims import ChunkClaims
from registry.jobs.records import Chunk, Job, NewJob, Progress
from registry.jobs.recovery import ChunkView
from registry.jobs.rows import (
    chunk_record,
    chunks_of,
    job_record,
    move_job,
    new_chunk_rows,
    new_job_row,
    require_chunk,
    require_job,
)
from registry.jobs.status import (
    ACTIVE_JOB_STATUSES,
    CHUNK_DONE,
    CHUNK_FAILED,
    CHUNK_QUEUED,
    CHUNK_RUNNING,
    EVENT_CANCEL,
    JOB_CANCELLED,
    JOB_RUNNING,
)
from registry.jobs.tables import ChunkRow, JobRow
from registry.types import utcnow


class JobStore(ChunkClaims):
    """Jobs and chunks in the catalog's database: submission, reading, cancelling and
    sweeping here, the workers' writes inherited from :class:`ChunkClaims`."""

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
        row = new_job_row(job, plan, now)
        chunks = new_chunk_rows(job, plan, input_sizes, now)
        try:
            with self._catalog.write_session(bump=False) as session:
                session.add(row)
                session.flush()
                session.add_all(chunks)
                created = job_record(row)
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
            return job_record(row) if row is not None else None

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
            return job_record(require_job(session, job_id))

    def get_with_chunks(self, job_id: str) -> tuple[Job, list[Chunk]]:
        with self._catalog.read_session() as session:
            job = job_record(require_job(session, job_id))
            return job, chunks_of(session, job_id)

    def chunk(self, job_id: str, index: int) -> Chunk:
        with self._catalog.read_session() as session:
            return chunk_record(require_chunk(session, job_id, index))

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
            jobs = [job_record(r) for r in session.scalars(query)]
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

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued or running job (cancelling a cancelled job changes nothing)."""
        now = utcnow()
        with self._catalog.write_session(bump=False) as session:
            job_row = require_job(session, job_id, lock=True)
            if job_row.status == JOB_CANCELLED or move_job(job_row, EVENT_CANCEL, now):
                return job_record(job_row)
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
                job_record(r)
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

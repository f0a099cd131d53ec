"""What workers write about chunks: claims with leases, renewals, hand-backs and
completions, and the end of a job (failed, or succeeded with its manifest).

Each write locks the rows it changes: a chunk's row while it is claimed or completed, a
job's row while one of its chunks completes (so exactly one worker sees the last chunk
finish). Every write is idempotent: completing a finished chunk changes nothing."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from registry.jobs.records import Claim
from registry.jobs.recovery import CLAIM_EXHAUSTED, CLAIM_RUN, claim_decision
from registry.jobs.rows import chunk_record, clip, job_record, move_job, require_chunk, require_job
from registry.jobs.status import (
    ACTIVE_JOB_STATUSES,
    CHUNK_DONE,
    CHUNK_FAILED,
    CHUNK_QUEUED,
    CHUNK_RUNNING,
    EVENT_FAIL,
    EVENT_START,
    EVENT_SUCCEED,
)
from registry.jobs.tables import ChunkRow
from registry.types import utcnow

if TYPE_CHECKING:
    from registry.catalog import Catalog


class ChunkClaims:
    """The workers' side of jobs in the catalog's database."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

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
            job_row = require_job(session, job_id, lock=True)
            row = require_chunk(session, job_id, index, lock=True)
            if job_row.status not in ACTIVE_JOB_STATUSES:
                return Claim(job_row.status, job_record(job_row), chunk_record(row))
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
                move_job(job_row, EVENT_START, now)
            elif decision == CLAIM_EXHAUSTED:
                row.status = CHUNK_FAILED
                row.finished_at = now
                reason = f"chunk {index} was tried {row.attempts} times without finishing" + (
                    f"; last error: {row.error}" if row.error else " (its worker died)"
                )
                if move_job(job_row, EVENT_FAIL, now):
                    job_row.error = clip(reason)
            return Claim(decision, job_record(job_row), chunk_record(row))

    def renew(self, job_id: str, index: int, worker: str, lease_s: float) -> bool:
        """Extend ``worker``'s claim; False when it must stop (the job was cancelled or
        failed, or the chunk is no longer its own)."""
        now = utcnow()
        with self._catalog.write_session(bump=False) as session:
            job_row = require_job(session, job_id)
            row = require_chunk(session, job_id, index, lock=True)
            if job_row.status not in ACTIVE_JOB_STATUSES:
                return False
            if row.status != CHUNK_RUNNING or row.worker != worker:
                return False
            row.lease_until = now + timedelta(seconds=lease_s)
            return True

    def release(self, job_id: str, index: int, worker: str, error: str) -> None:
        """Hand a chunk back after a passing failure (a store outage): queued again, with
        the error kept for the status, and its attempt given back: an outage is not a
        failed run, so one longer than ``max_attempts`` hand-backs (each after
        ``requeue_delay_s``) waits instead of failing the job (bench/faults.py
        ``s3-down``: a 30 s outage failed a 20,000-item job before)."""
        with self._catalog.write_session(bump=False) as session:
            row = require_chunk(session, job_id, index, lock=True)
            if row.status == CHUNK_RUNNING and row.worker == worker:
                row.status = CHUNK_QUEUED
                row.worker = ""
                row.lease_until = None
                row.error = clip(error)
                row.attempts = max(0, row.attempts - 1)

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
            require_job(session, job_id, lock=True)
            row = require_chunk(session, job_id, index, lock=True)
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
            job_row = require_job(session, job_id, lock=True)
            if index is not None:
                row = require_chunk(session, job_id, index, lock=True)
                if row.status != CHUNK_DONE:
                    row.status = CHUNK_FAILED
                    row.error = clip(reason)
                    row.lease_until = None
                    row.finished_at = now
            if not move_job(job_row, EVENT_FAIL, now):
                return False
            job_row.error = clip(reason)
            return True

    def succeed(self, job_id: str, manifest_key: str) -> bool:
        """Mark a running job succeeded with its manifest; False if it had finished."""
        now = utcnow()
        with self._catalog.write_session(bump=False) as session:
            job_row = require_job(session, job_id, lock=True)
            if not move_job(job_row, EVENT_SUCCEED, now):
                return False
            job_row.manifest_key = manifest_key
            return True

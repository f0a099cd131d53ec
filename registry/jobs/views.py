"""A job as JSON: a line in a list, everything about one job, and the manifest a
finished job writes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from queues.errors import InvalidRequest
from registry.jobs.pacing import required_items_per_s
from registry.jobs.records import Chunk, Job, Progress, progress_of
from registry.jobs.status import CHUNK_DONE, JOB_STATUSES
from registry.types import iso


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


def check_status_filter(status: str | None) -> str | None:
    if status is not None and status not in JOB_STATUSES:
        raise InvalidRequest(f"status {status!r} is not one of {list(JOB_STATUSES)}")
    return status

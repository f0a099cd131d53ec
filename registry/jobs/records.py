"""A batch job and its chunks as plain records: what the store hands out and takes in.

A submission (:class:`NewJob`) and a recorded job (:class:`Job`) share the fields a
client chose and the gateway decided (:class:`JobFields`); the recorded job adds what
the catalog keeps track of as it runs."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from registry.jobs.locations import Location
from registry.jobs.status import CHUNK_DONE, FINISHED_JOB_STATUSES


@dataclass(frozen=True, slots=True, kw_only=True)
class JobFields:
    """What a job is: the fields a submission and a recorded job share."""

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


@dataclass(frozen=True, slots=True, kw_only=True)
class NewJob(JobFields):
    """A checked submission, ready to record."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Job(JobFields):
    """A recorded job, as the catalog holds it now."""

    status: str
    items_total: int
    chunks_total: int
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


def new_job_id() -> str:
    return uuid.uuid4().hex


def request_fingerprint(fields: Mapping[str, Any]) -> str:
    """A digest of a submission, to tell a retried request from a different one that
    reuses its Idempotency-Key."""
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()

"""The decisions of batch jobs, as pure functions of plain data (unit-tested by hand).

* where a job reads and writes (``s3://BUCKET/PREFIX`` locations, deterministic output
  keys);
* how its items split into chunks;
* which variant runs it: among ready variants meeting the accuracy floor whose hardware
  has a live worker, the cheapest per item at its throughput-optimal batch, as long as
  the estimate finishes by the deadline and fits the cost cap;
* whether a worker may run a chunk now (claims with leases);
* which chunks a sweeper publishes again (a gateway died between commit and publish, or
  a message was lost);
* how a job's status moves (terminal states never change again).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from queues.errors import InvalidRequest, NoEligibleVariant, NoWorker
from registry.job_settings import JobSettings
from registry.livestate import OVERLOADED, WorkerReport
from registry.selector import MS_PER_HOUR
from registry.store import check_bucket_name, check_prefix
from registry.types import Variant

# Status of a job.
JOB_QUEUED = "queued"
JOB_RUNNING = "running"
JOB_SUCCEEDED = "succeeded"
JOB_FAILED = "failed"
JOB_CANCELLED = "cancelled"
JOB_STATUSES = (JOB_QUEUED, JOB_RUNNING, JOB_SUCCEEDED, JOB_FAILED, JOB_CANCELLED)
ACTIVE_JOB_STATUSES = frozenset({JOB_QUEUED, JOB_RUNNING})
FINISHED_JOB_STATUSES = frozenset({JOB_SUCCEEDED, JOB_FAILED, JOB_CANCELLED})

# What happens to a job.
EVENT_START = "start"
EVENT_SUCCEED = "succeed"
EVENT_FAIL = "fail"
EVENT_CANCEL = "cancel"
_TRANSITIONS = {
    (JOB_QUEUED, EVENT_START): JOB_RUNNING,
    (JOB_QUEUED, EVENT_SUCCEED): JOB_SUCCEEDED,
    (JOB_RUNNING, EVENT_SUCCEED): JOB_SUCCEEDED,
    (JOB_QUEUED, EVENT_FAIL): JOB_FAILED,
    (JOB_RUNNING, EVENT_FAIL): JOB_FAILED,
    (JOB_QUEUED, EVENT_CANCEL): JOB_CANCELLED,
    (JOB_RUNNING, EVENT_CANCEL): JOB_CANCELLED,
}

# Status of a chunk.
CHUNK_QUEUED = "queued"
CHUNK_RUNNING = "running"
CHUNK_DONE = "done"
CHUNK_FAILED = "failed"

# What a worker does with a chunk it was handed.
CLAIM_RUN = "run"
CLAIM_DONE = "done"  # finished already: nothing to do
CLAIM_HELD = "held"  # a live worker runs it right now: this copy comes back later
CLAIM_EXHAUSTED = "exhausted"  # tried max_attempts times: the job fails


def next_job_status(current: str, event: str) -> str | None:
    """The job's new status after ``event``, or None when it does not change (a finished
    job stays as it is; starting a running job again is no change)."""
    return _TRANSITIONS.get((current, event))


# ------------------------------------------------------------------------- locations


@dataclass(frozen=True, slots=True)
class Location:
    """A folder of objects: a bucket of the object store and a key prefix (no trailing
    '/'). ``bucket`` empty means the system's own store (uploaded inputs)."""

    bucket: str
    prefix: str

    @property
    def url(self) -> str:
        if not self.bucket:
            return f"upload:{self.prefix}"
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def folder(self) -> str:
        """The prefix to list the folder's objects with."""
        return f"{self.prefix}/" if self.prefix else ""

    def contains(self, other: Location) -> bool:
        """Whether ``other`` lies inside this folder (or is it)."""
        if self.bucket != other.bucket:
            return False
        return (
            not self.prefix
            or other.prefix == self.prefix
            or other.folder().startswith(self.folder())
        )


def parse_location(text: str, what: str) -> Location:
    """``s3://BUCKET[/PREFIX]`` on the configured object store, checked like every key."""
    value = text.strip()
    if not value.startswith("s3://"):
        raise InvalidRequest(
            f"{what} {text!r} is not an s3://BUCKET/PREFIX location; give one on this "
            "system's object store (a local store keeps each bucket as a folder)"
        )
    bucket, _, prefix = value[len("s3://") :].partition("/")
    prefix = prefix.rstrip("/")
    try:
        check_bucket_name(bucket)
        check_prefix(f"{prefix}/" if prefix else "")
    except InvalidRequest as exc:
        raise InvalidRequest(f"{what} {text!r}: {exc.message}") from exc
    return Location(bucket, prefix)


def output_key(output: Location, job_id: str, index: int) -> str:
    """Where chunk ``index`` of a job writes: the same key for every attempt."""
    return output.key(job_id, f"chunk-{index:05d}.npz")


def manifest_key(output: Location, job_id: str) -> str:
    return output.key(job_id, "manifest.json")


# --------------------------------------------------------------------------- chunks


@dataclass(frozen=True, slots=True)
class InputObject:
    """One input object as read at submission: its rows, and its size to notice a change."""

    key: str
    rows: int
    size_bytes: int


@dataclass(frozen=True, slots=True)
class ChunkPlan:
    index: int
    input_key: str
    row_start: int
    row_stop: int
    first_item: int  # the job-wide index of the chunk's first item

    @property
    def items(self) -> int:
        return self.row_stop - self.row_start


def plan_chunks(objects: Sequence[InputObject], chunk_items: int) -> list[ChunkPlan]:
    """Consecutive rows of each object, at most ``chunk_items`` per chunk; items are
    numbered across objects in the given (key) order. A chunk never spans two objects."""
    if chunk_items < 1:
        raise InvalidRequest(f"chunk_items must be at least 1, got {chunk_items}")
    chunks: list[ChunkPlan] = []
    first = 0
    for obj in objects:
        for start in range(0, obj.rows, chunk_items):
            stop = min(start + chunk_items, obj.rows)
            chunks.append(ChunkPlan(len(chunks), obj.key, start, stop, first + start))
        first += obj.rows
    return chunks


def chunk_priority(deadline: datetime | None, now: datetime) -> int:
    """Message priority on the app's batch queue (0-9): the sooner a job is due, the
    higher; jobs without a deadline come last."""
    if deadline is None:
        return 1
    hours_left = max((deadline - now).total_seconds(), 0.0) / 3600.0
    return max(2, 9 - int(hours_left))


def request_fingerprint(fields: Mapping[str, Any]) -> str:
    """A digest of a submission, to tell a retried request from a different one that
    reuses its Idempotency-Key."""
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------- the variant


@dataclass(frozen=True, slots=True)
class JobNeeds:
    items: int
    chunks: int
    min_accuracy: float
    now: datetime
    deadline: datetime | None = None
    max_cost_usd: float | None = None


@dataclass(frozen=True, slots=True)
class JobOption:
    """One variant's estimate for a job."""

    variant: Variant
    batch: int
    per_item_ms: float
    cost_usd: float
    duration_s: float
    finish_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant.id,
            "batch": self.batch,
            "per_item_ms": _significant(self.per_item_ms),
            "cost_usd": _significant(self.cost_usd),
            "duration_s": round(self.duration_s, 3),
            "finish_at": self.finish_at.isoformat(),
        }


def _significant(value: float, digits: int = 6) -> float:
    """Rounded to significant digits: costs of a few items are tiny fractions of a cent."""
    return float(f"{value:.{digits}g}")


def estimate(variant: Variant, needs: JobNeeds, settings: JobSettings) -> JobOption:
    """Cost and time of the job on ``variant`` at its throughput-optimal batch.

    Cost counts model time at the variant's price (what the job is charged as it runs);
    time adds the per-chunk overhead, slows the model by ``time_factor`` (spare
    capacity) and shares the work among the replicas the job can count on."""
    profile = variant.profile
    assert profile is not None
    batch = profile.batch_limit
    per_item_ms = profile.predict_latency_ms(batch) / batch
    model_ms = needs.items * per_item_ms
    cost_usd = variant.cost_per_hour * model_ms / MS_PER_HOUR
    total_ms = model_ms * settings.time_factor + needs.chunks * settings.chunk_overhead_ms
    duration_s = total_ms / 1000.0 / settings.assumed_replicas
    finish_at = needs.now + timedelta(seconds=duration_s)
    return JobOption(variant, batch, per_item_ms, cost_usd, duration_s, finish_at)


def choose_variant(
    variants: Iterable[Variant],
    live_hardware: frozenset[str],
    needs: JobNeeds,
    settings: JobSettings,
    *,
    app: str,
) -> JobOption:
    """The cheapest variant for the job (ties: the faster, then the id), or the error
    that names what stands in the way and what is on offer."""
    ready = sorted((v for v in variants if v.ready), key=lambda v: v.id)
    if not ready:
        raise NoEligibleVariant(
            f"app {app} has no ready variant yet; register a model or wait for its profiling"
        )
    floor = [v for v in ready if v.profile is not None and v.profile.accuracy >= needs.min_accuracy]
    if not floor:
        best = max(ready, key=lambda v: (v.profile.accuracy if v.profile else 0.0, v.id))
        accuracy = best.profile.accuracy if best.profile else 0.0
        raise NoEligibleVariant(
            f"no variant of app {app} reaches accuracy {needs.min_accuracy:g}; the best is "
            f"{accuracy:.4f} ({best.id}); lower min_accuracy",
            details={"best_accuracy": {"variant": best.id, "accuracy": accuracy}},
        )
    served = [v for v in floor if v.hardware in live_hardware]
    if not served:
        kinds = sorted({v.hardware for v in floor})
        raise NoWorker(
            f"variants of app {app} reaching accuracy {needs.min_accuracy:g} run on "
            f"{'/'.join(kinds)}, and no worker of that hardware is live; start one "
            f"(infaas worker --hardware {kinds[0]}) and submit again"
        )
    options = [estimate(v, needs, settings) for v in served]
    fits = [
        o
        for o in options
        if (needs.max_cost_usd is None or o.cost_usd <= needs.max_cost_usd)
        and (needs.deadline is None or o.finish_at <= needs.deadline)
    ]
    if fits:
        return min(fits, key=lambda o: (o.cost_usd, o.duration_s, o.variant.id))
    raise _no_fit(options, needs, app)


def _no_fit(options: list[JobOption], needs: JobNeeds, app: str) -> NoEligibleVariant:
    cheapest = min(options, key=lambda o: (o.cost_usd, o.duration_s, o.variant.id))
    fastest = min(options, key=lambda o: (o.duration_s, o.cost_usd, o.variant.id))
    asked = " and ".join(
        part
        for part in (
            f"by {needs.deadline.isoformat()}" if needs.deadline is not None else "",
            f"for at most ${needs.max_cost_usd:g}" if needs.max_cost_usd is not None else "",
        )
        if part
    )
    return NoEligibleVariant(
        f"no variant of app {app} reaching accuracy {needs.min_accuracy:g} can run "
        f"{needs.items} items {asked}: the cheapest, {cheapest.variant.id}, costs about "
        f"${cheapest.cost_usd:.6f} and finishes about {cheapest.finish_at.isoformat()}; the "
        f"fastest, {fastest.variant.id}, finishes about {fastest.finish_at.isoformat()} for "
        f"${fastest.cost_usd:.6f}; move the deadline or raise max_cost_usd",
        details={"cheapest": cheapest.to_dict(), "fastest": fastest.to_dict()},
    )


# ------------------------------------------------------------------ claims, sweeps


def claim_decision(
    *,
    status: str,
    holder: str,
    lease_until: datetime | None,
    attempts: int,
    holder_alive: bool,
    now: datetime,
    max_attempts: int,
) -> str:
    """Whether a worker handed a chunk runs it.

    A chunk runs once at a time: while its holder is alive and renews its lease, another
    copy of the message waits (the worker hands it back for later: should the holder have
    died before live state noticed, that copy runs the chunk). A chunk that keeps failing
    or killing its worker stops after ``max_attempts`` runs."""
    if status == CHUNK_DONE:
        return CLAIM_DONE
    if (
        status == CHUNK_RUNNING
        and holder
        and holder_alive
        and lease_until is not None
        and lease_until > now
    ):
        return CLAIM_HELD
    if attempts >= max_attempts or status == CHUNK_FAILED:
        return CLAIM_EXHAUSTED
    return CLAIM_RUN


@dataclass(frozen=True, slots=True)
class ChunkView:
    """An unfinished chunk of an active job, as the sweeper sees it."""

    job_id: str
    index: int
    status: str
    holder: str
    lease_until: datetime | None
    published_at: datetime | None
    created_at: datetime
    items: int = 0


def chunks_to_republish(
    chunks: Iterable[ChunkView],
    *,
    now: datetime,
    queue_ready: Mapping[str, int | None],
    alive: frozenset[str],
    settings: JobSettings,
) -> dict[str, list[int]]:
    """Chunks (per job) whose message is missing, to publish again.

    ``queue_ready``: per job, the messages ready in its app's batch queue (None: not
    known). Duplicates are harmless (a chunk runs once and its output is written once),
    so this errs on publishing:

    * never published and recorded over ``publish_grace_s`` ago: the gateway that
      recorded it died or lost the broker before publishing;
    * waiting (queued, or held by a dead or silent worker) with the last publish over
      ``stale_s`` ago while nothing is ready in the queue: the message is gone.
    """
    grace = timedelta(seconds=settings.publish_grace_s)
    stale = timedelta(seconds=settings.stale_s)
    found: dict[str, list[int]] = {}
    for chunk in chunks:
        if chunk.status in (CHUNK_DONE, CHUNK_FAILED):
            continue
        if chunk.published_at is None:
            due = now - chunk.created_at > grace
        else:
            holder_gone = chunk.status == CHUNK_RUNNING and (
                chunk.holder not in alive or chunk.lease_until is None or chunk.lease_until <= now
            )
            waiting = chunk.status == CHUNK_QUEUED or holder_gone
            due = (
                waiting and now - chunk.published_at > stale and queue_ready.get(chunk.job_id) == 0
            )
        if due:
            found.setdefault(chunk.job_id, []).append(chunk.index)
    return {job: sorted(indices) for job, indices in sorted(found.items())}


def online_pressure(report: WorkerReport | None, busy_limit: float) -> bool:
    """Whether batch work on a worker should pause for its online queries: one of its
    online variants is Overloaded, has more queries waiting than its replicas take in
    one batch, or kept its replicas busy at least ``busy_limit`` of the last monitoring
    window. (Not Interfered: that flags latency above the profile, which tiny models
    show on a shared machine with no queries waiting; pausing on it starves the job.)"""
    if report is None:
        return False
    return any(
        load.state == OVERLOADED
        or load.busy >= busy_limit
        or load.backlog > max(load.replicas, 1) * max(load.max_batch, 1)
        for load in report.variants.values()
    )


def required_items_per_s(items_remaining: int, deadline: datetime | None, now: datetime) -> float:
    """The rate a job's remaining items need to finish by its deadline (0 without one;
    a deadline already past needs everything at once: the rate of one second)."""
    if deadline is None or not items_remaining:
        return 0.0
    left_s = max((deadline - now).total_seconds(), 1.0)
    return round(items_remaining / left_s, 6)

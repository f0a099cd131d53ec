"""How a job survives dead workers and lost messages: whether a worker may run a chunk
now (claims with leases), and which chunks a sweeper publishes again (a gateway died
between commit and publish, or a message was lost)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from registry.jobs.settings import JobSettings
from registry.jobs.status import CHUNK_DONE, CHUNK_FAILED, CHUNK_QUEUED, CHUNK_RUNNING

# What a worker does with a chunk it was handed.
CLAIM_RUN = "run"
CLAIM_DONE = "done"  # finished already: nothing to do
CLAIM_HELD = "held"  # a live worker runs it right now: this copy comes back later
CLAIM_EXHAUSTED = "exhausted"  # tried max_attempts times: the job fails


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

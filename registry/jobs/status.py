"""How a job's status and a chunk's status move (terminal states never change again)."""

from __future__ import annotations

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


def next_job_status(current: str, event: str) -> str | None:
    """The job's new status after ``event``, or None when it does not change (a finished
    job stays as it is; starting a running job again is no change)."""
    return _TRANSITIONS.get((current, event))

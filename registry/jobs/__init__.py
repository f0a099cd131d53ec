"""Batch jobs: a job's items in chunks, run on spare capacity by the workers, its state
in the catalog so that nothing is lost when a process dies.

Pure decisions (plain data in, plain data out):

* ``status``: how a job's and a chunk's status move;
* ``locations``: where a job reads and writes;
* ``chunking``: how its items split into chunks, and their message priority;
* ``variant_choice``: which variant runs it, and its estimate;
* ``recovery``: claims with leases, and which lost chunks a sweeper publishes again;
* ``pacing``: the rate a deadline needs, and when chunks give way to online queries.

Around them: ``settings`` (``INFAAS_JOB_*``); ``records`` (what the store hands out);
``tables`` and ``rows`` (the catalog's rows and their records); ``store`` and ``claims``
(the catalog's reads and writes); ``views`` (JSON); ``objects`` (inputs, outputs and the
manifest in the object store); ``messages`` (chunk messages on the batch queues).

Importing the package declares its tables on the catalog's metadata.
"""

from registry.jobs.records import (
    Chunk,
    Claim,
    Job,
    JobFields,
    NewJob,
    Progress,
    new_job_id,
    progress_of,
)
from registry.jobs.rows import MAX_ERROR_CHARS
from registry.jobs.store import JobStore
from registry.jobs.tables import ChunkRow, JobRow
from registry.jobs.views import build_manifest, check_status_filter, job_summary, job_view

__all__ = [
    "MAX_ERROR_CHARS",
    "Chunk",
    "ChunkRow",
    "Claim",
    "Job",
    "JobFields",
    "JobRow",
    "JobStore",
    "NewJob",
    "Progress",
    "build_manifest",
    "check_status_filter",
    "job_summary",
    "job_view",
    "new_job_id",
    "progress_of",
]

"""The gateway's side of batch jobs: accept a submission (every check first, so a refused
one changes nothing), record it with its chunks in one transaction, then hand it to the
sweeper (``registry/jobs/sweep.py``), which publishes one task per chunk on the app's
batch queue, makes sure some worker of the right hardware consumes that queue, and every
``sweep_interval_s`` publishes again what went missing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from api_gateway.services import GatewayServices
from queues.errors import (
    EmptyBatch,
    InfaasError,
    InvalidRequest,
)
from registry.jobs import Job, JobStore, NewJob, new_job_id
from registry.jobs.buckets import check_job_bucket
from registry.jobs.chunking import ChunkPlan, InputObject, chunk_priority, plan_chunks
from registry.jobs.locations import Location, parse_location
from registry.jobs.objects import (
    check_output_writable,
    check_upload,
    discover_inputs,
    store_for,
    upload_location,
)
from registry.jobs.records import request_fingerprint
from registry.jobs.sweep import JobSweeper
from registry.jobs.variant_choice import JobNeeds, JobOption, choose_variant
from registry.livestate import LiveSnapshot
from registry.store import ObjectStore
from registry.types import READY, App, utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Submission:
    """A job as the user asked for it (fields checked for type and range already)."""

    tenant: str
    app: str
    output: str
    min_accuracy: float
    input: str | None = None
    upload: Path | None = None
    upload_sha256: str = ""
    deadline: datetime | None = None
    max_cost_usd: float | None = None
    chunk_items: int | None = None
    idempotency_key: str | None = None

    def fingerprint(self) -> str:
        return request_fingerprint(
            {
                "app": self.app,
                "input": self.input,
                "upload_sha256": self.upload_sha256,
                "output": self.output,
                "min_accuracy": self.min_accuracy,
                "deadline": self.deadline.isoformat() if self.deadline else None,
                "max_cost_usd": self.max_cost_usd,
                "chunk_items": self.chunk_items,
            }
        )


class JobDispatcher:
    """Submissions (run in a thread); ``live`` returns the gateway's newest snapshot of
    the live workers."""

    def __init__(
        self,
        services: GatewayServices,
        live: Callable[[], LiveSnapshot],
    ) -> None:
        self._catalog = services.catalog
        self._live = live
        self.settings = services.jobs
        self.jobs = JobStore(services.catalog)
        self.sweeper = JobSweeper(
            self.jobs, services.broker, services.store, services.celery, live, self.settings
        )

    def submit(self, sub: Submission) -> tuple[Job, bool]:
        """Check everything, record the job, publish its chunks; (job, replayed)."""
        store, _celery = self.sweeper.tools()
        fingerprint = sub.fingerprint()
        if sub.idempotency_key is not None:
            found = self.jobs.replay(sub.tenant, sub.idempotency_key, fingerprint)
            if found is not None:
                return found, True
        app = self._catalog.get_app(sub.app)
        now = utcnow()
        if sub.deadline is not None and sub.deadline <= now:
            raise InvalidRequest(
                f"deadline {sub.deadline.isoformat()} is in the past (now is "
                f"{now.isoformat()}); give a time still to come, with its time zone"
            )
        output = self._confined(store, sub.tenant, parse_location(sub.output, "output"), "output")
        job_id = new_job_id()
        source, objects = self._inputs(store, sub, app, output, job_id)
        chunk_items = sub.chunk_items or self.settings.chunk_items
        plan = self._plan(objects, chunk_items)
        option = self._choose(app.id, plan, sub, now)
        check_output_writable(store, output)
        new = NewJob(
            id=job_id,
            tenant=sub.tenant,
            app=app.id,
            variant=option.variant.id,
            hardware=option.variant.hardware,
            input=source,
            uploaded=sub.upload is not None,
            output=output,
            min_accuracy=sub.min_accuracy,
            deadline=sub.deadline,
            max_cost_usd=sub.max_cost_usd,
            idempotency_key=sub.idempotency_key,
            fingerprint=fingerprint,
            chunk_items=chunk_items,
            priority=chunk_priority(sub.deadline, now),
            estimate=option.to_dict(),
        )
        if sub.upload is not None:
            store_for(store, source).put_file(objects[0].key, sub.upload)
        try:
            job, replayed = self.jobs.create(new, plan, {o.key: o.size_bytes for o in objects})
        except BaseException:
            self._drop_upload(store, new)
            raise
        if replayed:
            self._drop_upload(store, new)
            return job, True
        self.sweeper.publish(job, [c.index for c in plan])
        self.sweeper.ensure_consumers(job.app, job.hardware)
        return job, False

    def _inputs(
        self, store: ObjectStore, sub: Submission, app: App, output: Location, job_id: str
    ) -> tuple[Location, list[InputObject]]:
        """Where the job reads, and its input objects, checked against the app."""
        cap = int(self.settings.max_upload_mb * 1024 * 1024)  # what one array may unpack to
        if sub.upload is not None:
            checked = check_upload(sub.upload, app.signature, job_id, max_unpacked_bytes=cap)
            return upload_location(job_id), [checked]
        if sub.input is None:
            raise InvalidRequest("give the input: an s3://BUCKET/PREFIX location or a file")
        source = self._confined(store, sub.tenant, parse_location(sub.input, "input"), "input")
        if source.contains(output):
            raise InvalidRequest(
                f"the output location {output.url} lies inside the input location "
                f"{source.url}, so a later job would read these outputs as inputs; "
                "write the outputs somewhere else"
            )
        limit = self.settings.max_input_objects
        return source, discover_inputs(
            store, source, app.signature, max_objects=limit, max_unpacked_bytes=cap
        )

    def _confined(self, store: ObjectStore, tenant: str, location: Location, what: str) -> Location:
        """``location``, if the tenant's jobs may use its bucket (registry/jobs/buckets.py)."""
        rules = self.settings.bucket_rules
        check_job_bucket(rules, tenant, location, reserved={store.bucket_name}, what=what)
        return location

    def _choose(self, app: str, plan: list[ChunkPlan], sub: Submission, now: datetime) -> JobOption:
        """The variant, among the app's ready ones whose hardware has a live worker."""
        variants = self._catalog.list_variants(app_id=app, status=READY)
        live_hardware = frozenset(w.hardware for w in self._live().workers.values())
        needs = JobNeeds(
            items=sum(c.items for c in plan),
            chunks=len(plan),
            min_accuracy=sub.min_accuracy,
            now=now,
            deadline=sub.deadline,
            max_cost_usd=sub.max_cost_usd,
        )
        return choose_variant(variants, live_hardware, needs, self.settings, app=app)

    def _plan(self, objects: list[InputObject], chunk_items: int) -> list[ChunkPlan]:
        items = sum(o.rows for o in objects)
        if items == 0:
            raise EmptyBatch("the inputs hold no rows; give at least one input row")
        if items > self.settings.max_items:
            raise InvalidRequest(
                f"{items} items in one job, more than the limit of {self.settings.max_items} "
                "(INFAAS_JOB_MAX_ITEMS); split the inputs into several jobs"
            )
        plan = plan_chunks(objects, chunk_items)
        if len(plan) > self.settings.max_chunks:
            raise InvalidRequest(
                f"{len(plan)} chunks of {chunk_items} items, more than the limit of "
                f"{self.settings.max_chunks} (INFAAS_JOB_MAX_CHUNKS); give a larger chunk_items"
            )
        return plan

    @staticmethod
    def _drop_upload(store: ObjectStore, job: NewJob) -> None:
        if not job.uploaded:
            return
        try:
            store_for(store, job.input).delete_prefix(job.input.folder())
        except InfaasError as exc:
            log.warning("could not remove the upload of job %s: %s", job.id, exc.message)

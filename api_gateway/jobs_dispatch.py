"""The gateway's side of batch jobs: accept a submission (every check first, so a refused
one changes nothing), record it with its chunks in one transaction, publish one task per
chunk on the app's batch queue, and make sure some worker of the right hardware consumes
that queue; every ``sweep_interval_s`` also publish again what went missing and finish
jobs whose last worker died before writing the manifest.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kombu import Connection

from queues import topology
from queues.depth import QueueProbe
from queues.errors import (
    EmptyBatch,
    InfaasError,
    InvalidRequest,
    Unavailable,
)
from queues.memory_rpc import memory_connection
from queues.settings import BrokerSettings
from registry.jobs import Job, JobStore, NewJob, new_job_id
from registry.jobs.buckets import check_job_bucket
from registry.jobs.chunking import ChunkPlan, InputObject, chunk_priority, plan_chunks
from registry.jobs.locations import Location, parse_location
from registry.jobs.messages import batch_queue_options, send_chunks
from registry.jobs.objects import (
    check_output_writable,
    check_upload,
    discover_inputs,
    finalize_job,
    store_for,
    upload_location,
)
from registry.jobs.records import request_fingerprint
from registry.jobs.recovery import chunks_to_republish
from registry.jobs.settings import JobSettings
from registry.jobs.variant_choice import JobNeeds, JobOption, choose_variant
from registry.store import ObjectStore
from registry.types import READY, App, utcnow

if TYPE_CHECKING:
    from api_gateway.state import GatewayState

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


def _probe_connector(broker: BrokerSettings) -> Any:
    if broker.embedded:
        return lambda: memory_connection(broker.url)
    return lambda: Connection(broker.url, connect_timeout=5)


class JobDispatcher:
    def __init__(self, state: GatewayState, settings: JobSettings | None = None) -> None:
        self._state = state
        self.settings = settings or JobSettings()
        self.jobs = JobStore(state.services.catalog)
        self._swept_at = 0.0

    # -- submission (runs in a thread)

    def _tools(self) -> tuple[ObjectStore, Any]:
        services = self._state.services
        if services.store is None or services.celery is None:
            raise Unavailable(
                "this gateway has no object store or task queue for batch jobs; start it "
                "with `infaas gateway` or `infaas demo`"
            )
        return services.store, services.celery

    def submit(self, sub: Submission) -> tuple[Job, bool]:
        """Check everything, record the job, publish its chunks; (job, replayed)."""
        store, _celery = self._tools()
        fingerprint = sub.fingerprint()
        if sub.idempotency_key is not None:
            found = self.jobs.replay(sub.tenant, sub.idempotency_key, fingerprint)
            if found is not None:
                return found, True
        app = self._state.services.catalog.get_app(sub.app)
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
        self.publish(job, [c.index for c in plan])
        self.ensure_consumers(job.app, job.hardware)
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
        variants = self._state.services.catalog.list_variants(app_id=app, status=READY)
        live_hardware = frozenset(w.hardware for w in self._state.live_snapshot.workers.values())
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

    def publish(self, job: Job, indices: list[int]) -> None:
        """Publish chunk tasks and record it; a failure is logged (the sweeper publishes
        what was recorded and never published)."""
        _store, celery = self._tools()
        prefix = self._state.services.broker.queue_prefix
        try:
            sent = send_chunks(celery, prefix, job.app, job.id, indices, priority=job.priority)
        except Exception as exc:
            log.warning("publishing chunks of job %s failed, the sweeper retries: %s", job.id, exc)
            return
        self.jobs.mark_published(job.id, sent)

    def ensure_consumers(self, app: str, hardware: str) -> None:
        """When nobody consumes the app's batch queue, ask the live workers of the job's
        hardware to (workers started before the app existed do not yet)."""
        broker = self._state.services.broker
        queue = topology.batch_queue(broker.queue_prefix, app)
        probe = QueueProbe(_probe_connector(broker))
        try:
            depth = probe.depth(queue)
        except InfaasError as exc:
            log.warning("cannot read the consumers of %s: %s", queue, exc.message)
            depth = None
        finally:
            probe.close()
        if depth is not None and depth.consumers > 0:
            return
        names = sorted(
            w.celery_name
            for w in self._state.live_snapshot.workers.values()
            if w.hardware == hardware and w.celery_name
        )
        if not names:
            return
        options = batch_queue_options(broker.queue_prefix, app)
        try:
            self._state.services.celery.control.add_consumer(
                queue,
                exchange=options.pop("exchange"),
                exchange_type=options.pop("exchange_type"),
                routing_key=options.pop("routing_key"),
                options=options,
                destination=names,
                reply=False,
            )
        except Exception as exc:
            log.warning("could not ask workers to consume %s: %s", queue, exc)

    # -- the sweeper

    async def tick(self) -> None:
        """Sweep when it is due (called from the gateway's refresh loop)."""
        services = self._state.services
        if services.store is None or services.celery is None:
            return  # this gateway serves no batch jobs
        now = time.monotonic()
        if now - self._swept_at < self.settings.sweep_interval_s:
            return
        self._swept_at = now
        try:
            await asyncio.to_thread(self.sweep)
        except Exception:
            log.exception("sweeping batch jobs failed")

    def sweep(self) -> dict[str, Any]:
        """Finish jobs whose chunks are all done, and publish again the chunks whose
        message went missing; returns what it did."""
        store, _celery = self._tools()
        jobs, chunks, complete = self.jobs.unfinished()
        finished = [job_id for job_id in complete if finalize_job(self.jobs, store, job_id)]
        by_id = {j.id: j for j in jobs}
        ready = self._ready_by_app({by_id[c.job_id].app for c in chunks})
        alive = frozenset(self._state.live_snapshot.workers)
        due = chunks_to_republish(
            chunks,
            now=utcnow(),
            queue_ready={job_id: ready.get(job.app) for job_id, job in by_id.items()},
            alive=alive,
            settings=self.settings,
        )
        for job_id, indices in due.items():
            log.warning("job %s: publishing chunks %s again", job_id, indices)
            self.publish(by_id[job_id], indices)
        for app, hardware in sorted({(j.app, j.hardware) for j in jobs if not j.finished}):
            self.ensure_consumers(app, hardware)
        return {"finished": finished, "republished": due}

    def _ready_by_app(self, apps: set[str]) -> dict[str, int | None]:
        broker = self._state.services.broker
        probe = QueueProbe(_probe_connector(broker))
        ready: dict[str, int | None] = {}
        try:
            for app in sorted(apps):
                try:
                    depth = probe.depth(topology.batch_queue(broker.queue_prefix, app))
                except InfaasError:
                    ready[app] = None
                    continue
                ready[app] = depth.messages if depth is not None else 0
        finally:
            probe.close()
        return ready

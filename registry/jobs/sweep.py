"""Batch jobs never stuck: publish a job's chunks, make sure someone consumes them, and
every ``sweep_interval_s`` publish again what went missing.

A job is recorded with its chunks in one transaction, then its chunk messages are
published on the app's batch queue. A gateway killed in between, a broker that lost a
message, or a worker that died before writing a job's manifest would leave a job
unfinished for ever; the sweeper finds those from what the catalog recorded and what the
batch queues hold (the decision is :func:`registry.jobs.recovery.chunks_to_republish`,
pure) and acts. Every gateway runs one from its refresh loop, as it runs the
registrations' (``registry/registration_sweep.py``); two gateways sweeping at once
publish a chunk twice at worst, and a chunk's claim (``registry/jobs/claims.py``) lets
one worker at a time run it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from queues import topology
from queues.broker_admin import read_depths
from queues.depth import QueueDepth
from queues.errors import Unavailable
from queues.settings import BrokerSettings
from registry.jobs.messages import add_batch_consumer, send_chunks
from registry.jobs.objects import finalize_job
from registry.jobs.records import Job
from registry.jobs.recovery import chunks_to_republish
from registry.jobs.settings import JobSettings
from registry.jobs.store import JobStore
from registry.livestate import LiveSnapshot
from registry.store import ObjectStore
from registry.types import utcnow

log = logging.getLogger(__name__)


class JobSweeper:
    """Publishes chunks and keeps batch queues consumed; sweeps when :meth:`tick` is due.

    ``live`` returns the newest snapshot of the live workers (the gateway's, refreshed in
    the background), so the sweeper never reads Redis itself."""

    def __init__(
        self,
        jobs: JobStore,
        broker: BrokerSettings,
        store: ObjectStore | None,
        celery: Any,
        live: Callable[[], LiveSnapshot],
        settings: JobSettings,
    ) -> None:
        self.jobs = jobs
        self._broker = broker
        self._store = store
        self._celery = celery
        self._live = live
        self.settings = settings
        self._swept_at = 0.0

    @property
    def serves_jobs(self) -> bool:
        return self._store is not None and self._celery is not None

    def tools(self) -> tuple[ObjectStore, Any]:
        """The object store and the Celery app, or a clear refusal without them."""
        if self._store is None or self._celery is None:
            raise Unavailable(
                "this gateway has no object store or task queue for batch jobs; start it "
                "with `infaas gateway` or `infaas demo`"
            )
        return self._store, self._celery

    def publish(self, job: Job, indices: list[int]) -> None:
        """Publish chunk tasks and record it; a failure is logged (the sweep publishes
        what was recorded and never published)."""
        _store, celery = self.tools()
        prefix = self._broker.queue_prefix
        try:
            sent = send_chunks(celery, prefix, job.app, job.id, indices, priority=job.priority)
        except Exception as exc:
            log.warning("publishing chunks of job %s failed, the sweeper retries: %s", job.id, exc)
            return
        self.jobs.mark_published(job.id, sent)

    def ensure_consumers(self, app: str, hardware: str) -> None:
        """When nobody consumes the app's batch queue, ask the live workers of the job's
        hardware to (workers started before the app existed do not yet)."""
        depths = self._batch_depths({app})
        self._ensure_consumers(app, hardware, depths[app] if depths is not None else None)

    def _ensure_consumers(self, app: str, hardware: str, depth: QueueDepth | None) -> None:
        """As :meth:`ensure_consumers`, with the queue's depth read already (None:
        unknown, so the workers are asked)."""
        if depth is not None and depth.consumers > 0:
            return
        names = sorted(
            w.celery_name
            for w in self._live().workers.values()
            if w.hardware == hardware and w.celery_name
        )
        if not names:
            return
        try:
            add_batch_consumer(
                self._celery.control, self._broker.queue_prefix, app, names, reply=False
            )
        except Exception as exc:
            log.warning("could not ask workers to consume the batch queue of %s: %s", app, exc)

    async def tick(self) -> None:
        """Sweep when it is due (called from the gateway's refresh loop)."""
        if not self.serves_jobs:
            return
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
        store, _celery = self.tools()
        jobs, chunks, complete = self.jobs.unfinished()
        finished = [job_id for job_id in complete if finalize_job(self.jobs, store, job_id)]
        by_id = {j.id: j for j in jobs}
        depths = self._batch_depths({j.app for j in jobs})  # one connection for the sweep
        due = chunks_to_republish(
            chunks,
            now=utcnow(),
            queue_ready={
                job_id: depths[job.app].messages if depths is not None else None
                for job_id, job in by_id.items()
            },
            alive=frozenset(self._live().workers),
            settings=self.settings,
        )
        for job_id, indices in due.items():
            log.warning("job %s: publishing chunks %s again", job_id, indices)
            self.publish(by_id[job_id], indices)
        for app, hardware in sorted({(j.app, j.hardware) for j in jobs if not j.finished}):
            self._ensure_consumers(app, hardware, depths[app] if depths is not None else None)
        return {"finished": finished, "republished": due}

    def _batch_depths(self, apps: set[str]) -> dict[str, QueueDepth] | None:
        """Each app's batch queue's depth, by app (None: the broker cannot be read)."""
        if not apps:
            return {}
        prefix = self._broker.queue_prefix
        queues = {app: topology.batch_queue(prefix, app) for app in sorted(apps)}
        depths = read_depths(self._broker, queues.values())
        return {app: depths[q] for app, q in queues.items()} if depths is not None else None

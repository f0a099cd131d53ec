"""The worker's batch-job task (thin: it decodes and calls :class:`ChunkRunner`) and the
consumer step that makes the worker take chunks from the batch queues of the apps it
can serve.

The task acknowledges late and is rejected when its worker is lost, so a chunk whose
worker was killed goes back to its queue and another worker runs it.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import bootsteps

from queues import topology
from queues.errors import ConfigError, InfaasError
from registry.jobs.messages import CHUNK_TASK, batch_queue_options
from registry.types import READY
from workers.jobs import ChunkRunner

log = logging.getLogger(__name__)
RUNNER_ATTRIBUTE = "infaas_chunk_runner"


class BatchQueuesStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Consume the batch queue of every app with a ready variant of this worker's
    hardware, declared with the queue's own arguments (gateways send ``add_consumer``
    for apps that appear later).

    Not through the worker's ``queues`` option: Celery would declare those without the
    batch queue's arguments, which RabbitMQ refuses once a gateway declared them."""

    label = "infaas batch queues"
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(
        self,
        parent: Any,
        infaas_services: Any = None,
        infaas_settings: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(parent, **kwargs)
        self.services = infaas_services
        self.settings = infaas_settings

    def start(self, c: Any) -> None:
        if self.services is None or self.settings is None:
            return
        prefix = self.services.broker.queue_prefix
        try:
            variants = self.services.catalog.list_variants(
                hardware=self.settings.hardware, status=READY
            )
        except InfaasError as exc:
            log.error("batch queues not consumed: %s", exc.message)
            return
        queues = c.app.amqp.queues
        for app in sorted({v.app for v in variants}):
            name = topology.batch_queue(prefix, app)
            if name in queues:
                queue = queues.select_add(queues[name])
            else:
                queue = queues.select_add(name, **batch_queue_options(prefix, app))
            # Declared now, consumed when the consumer's loop starts: it first installs the
            # message callback (consuming here, a message could arrive before it).
            c.task_consumer.add_queue(queue)

    def shutdown(self, c: Any) -> None:
        runner: ChunkRunner | None = getattr(c.app, RUNNER_ATTRIBUTE, None)
        if runner is not None:
            runner.close()
            setattr(c.app, RUNNER_ATTRIBUTE, None)


def register_job_tasks(app: Any) -> None:
    """Add the chunk task and the batch-queue step to a worker's Celery app."""
    app.steps["consumer"].add(BatchQueuesStep)
    lock = threading.Lock()

    def runner_of(celery_app: Any) -> ChunkRunner:
        with lock:
            runner: ChunkRunner | None = getattr(celery_app, RUNNER_ATTRIBUTE, None)
            if runner is not None:
                return runner
            services = getattr(celery_app, "infaas_services", None)
            server = getattr(celery_app, "infaas_server", None)
            if services is None or server is None:
                raise ConfigError("this worker has no infaas services to run batch jobs with")
            runner = ChunkRunner(
                catalog=services.catalog,
                store=services.store,
                live=services.live,
                cache_dir=services.cache_dir,
                worker_id=server.worker_id,
                hardware=server.hardware,
                queue_prefix=services.broker.queue_prefix,
                celery=celery_app,
                settings=services.jobs,
            )
            setattr(celery_app, RUNNER_ATTRIBUTE, runner)
            return runner

    @app.task(name=CHUNK_TASK, bind=True, shared=False, acks_late=True, ignore_result=True)  # type: ignore[untyped-decorator]
    def run_chunk(self: Any, job_id: str, index: int) -> dict[str, Any]:
        return runner_of(self.app).run(str(job_id), int(index))

"""Celery tasks of a worker: thin, they decode, call the real logic, and return.

Registration runs on the control queue of the worker's hardware, so variants are built
and profiled on the hardware they will serve on. Tasks acknowledge late (the app's
default) and are rejected when their worker is lost, so a registration whose worker was
killed is redone by another; after ``MAX_REGISTRATION_ATTEMPTS`` lost workers it is
marked failed with the reason instead, and the message is acked (not redelivered).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps

from queues.errors import ConfigError, InfaasError
from registry.registrations import REGISTER_TASK
from workers.registration_task import BuildContext, run_registration

log = logging.getLogger(__name__)


class CurrentAppStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Makes the worker's app current in the thread that runs its tasks.

    Celery looks a received task up in the *current* app. A separate worker process makes
    its app the default at start; an embedded worker (a thread of a process that may hold
    other Celery apps, solo pool) does not, and would look in Celery's default app.
    """

    label = "infaas current app"

    def start(self, worker: Any) -> None:
        worker.app.set_current()


def register_tasks(app: Any) -> None:
    """Add this worker's tasks (and the step that lets them be found) to its Celery app."""
    app.steps["worker"].add(CurrentAppStep)

    @app.task(name=REGISTER_TASK, bind=True, shared=False, acks_late=True, ignore_result=True)  # type: ignore[untyped-decorator]
    def generate_and_profile(self: Any, registration_id: str, hardware: str) -> dict[str, Any]:
        services = getattr(self.app, "infaas_services", None)
        server = getattr(self.app, "infaas_server", None)
        if services is None or server is None:
            raise ConfigError("this worker has no infaas services to register models with")
        if hardware != server.hardware:
            raise ConfigError(
                f"registration {registration_id} asked for {hardware} work on a "
                f"{server.hardware} worker; check the control queue routing"
            )
        context = BuildContext(
            catalog=services.catalog,
            store=services.store,
            prices=services.prices,
            hardware=hardware,
            worker=server.worker_id,
        )
        try:
            ready = run_registration(registration_id, context)
        except InfaasError as exc:
            log.error("registration %s on %s failed: %s", registration_id, hardware, exc.message)
            return {"registration": registration_id, "error": exc.message}
        return {"registration": registration_id, "ready": [v.id for v in ready]}

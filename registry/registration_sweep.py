"""Registrations never stuck: send again a task whose message was lost.

The gateway records a registration, then sends one task per hardware to that hardware's
control queue. A gateway killed between the two (or a broker that lost the message)
would leave the model ``queued`` forever, and a re-upload of the same id refused (409).
Every gateway sweeps for such tasks from its refresh loop (as it sweeps batch jobs).

The rule (:func:`decide`, pure) relies on two facts of the control queues: Celery's
workers there take one message at a time (prefetch multiplier 1, late acks) and mark the
task running the moment they take it; and a worker that dies puts its message back. So a
task still ``queued`` long after it was recorded (or last sent again), while *nothing*
is ready in its control queue, has no message anywhere: it is sent again, at most
``max_resends`` times, then marked failed with the reason. While messages wait in the
queue (the task waits its turn, or for a worker of its hardware to start) it is left
alone, so a registration for hardware no worker has yet is never failed for waiting.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from queues import topology
from queues.broker_admin import read_depths
from queues.settings import BrokerSettings
from registry.catalog import Catalog
from registry.registrations import REGISTER_TASK, QueuedTask, RegistrationStore
from registry.types import FAILED, QUEUED, READY, utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SweepSettings:
    interval_s: float = 5.0
    # a worker starts a task within milliseconds of taking its message; this leaves room
    # for the gateway that recorded it to send it, and for a slow catalog write
    resend_after_s: float = 30.0
    max_resends: int = 3


@dataclass(frozen=True, slots=True)
class Action:
    registration: str
    model: str
    hardware: str
    reason: str


@dataclass(frozen=True, slots=True)
class SweepPlan:
    resend: tuple[Action, ...] = ()
    fail: tuple[Action, ...] = ()
    left: tuple[Action, ...] = field(default=(), repr=False)  # waiting, with why

    def to_dict(self) -> dict[str, list[str]]:
        return {
            "resend": [f"{a.registration}/{a.hardware}" for a in self.resend],
            "fail": [f"{a.registration}/{a.hardware}" for a in self.fail],
        }


def decide(
    tasks: Iterable[QueuedTask],
    *,
    now: datetime,
    control_ready: Mapping[str, int | None],
    settings: SweepSettings,
) -> SweepPlan:
    """What to do with each queued task. ``control_ready``: per hardware, the messages
    ready in its control queue (0 when the queue does not exist; None when unknown)."""
    resend: list[Action] = []
    fail: list[Action] = []
    left: list[Action] = []
    for task in tasks:
        since = task.resent_at or task.created_at
        quiet_s = (now - since).total_seconds()
        ready = control_ready.get(task.hardware)

        def act(reason: str, task: QueuedTask = task) -> Action:
            return Action(task.registration, task.model, task.hardware, reason)

        if quiet_s < settings.resend_after_s:
            left.append(act(f"sent {quiet_s:.0f} s ago"))
        elif ready is None:
            left.append(act("its control queue cannot be read"))
        elif ready > 0:
            left.append(act(f"{ready} message(s) wait in its control queue"))
        elif task.resends >= settings.max_resends:
            age_s = (now - task.created_at).total_seconds()
            fail.append(
                act(
                    f"no {task.hardware} worker started this registration in {age_s:.0f} s: "
                    f"it was sent {task.resends + 1} times and each time its message was gone "
                    f"from the control queue; check the {task.hardware} workers' logs, then "
                    "delete the model and register it again"
                )
            )
        else:
            resend.append(
                act(
                    f"queued for {quiet_s:.0f} s with nothing in its control queue (the gateway "
                    f"stopped before sending it, or the message was lost); sending it again "
                    f"({task.resends + 1} of {settings.max_resends})"
                )
            )
    return SweepPlan(tuple(resend), tuple(fail), tuple(left))


def send_registration_task(celery: Any, prefix: str, registration_id: str, hardware: str) -> None:
    celery.send_task(
        REGISTER_TASK,
        args=[registration_id, hardware],
        queue=topology.control_queue(prefix, hardware),
    )


class RegistrationSweeper:
    """Reads the queued tasks and their control queues, decides, acts (the gateway's)."""

    def __init__(
        self,
        catalog: Catalog,
        broker: BrokerSettings,
        celery: Any,
        settings: SweepSettings | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._catalog = catalog
        self._broker = broker
        self._celery = celery
        self.settings = settings or SweepSettings()
        self._clock = clock
        self._registrations = RegistrationStore(catalog)
        self._swept_at = 0.0

    async def tick(self) -> None:
        """Sweep when it is due (called from the gateway's refresh loop)."""
        if self._celery is None:
            return  # this gateway sends no registrations
        now = time.monotonic()
        if now - self._swept_at < self.settings.interval_s:
            return
        self._swept_at = now
        try:
            await asyncio.to_thread(self.sweep)
        except Exception:
            log.exception("sweeping registrations failed")

    def sweep(self) -> SweepPlan:
        tasks = self._registrations.queued_tasks()
        if not tasks:
            return SweepPlan()
        plan = decide(
            tasks,
            now=self._clock(),
            control_ready=self._control_ready({t.hardware for t in tasks}),
            settings=self.settings,
        )
        prefix = self._broker.queue_prefix
        for action in plan.resend:
            log.warning(
                "registration %s (%s): %s", action.registration, action.hardware, action.reason
            )
            # recorded before it is sent: a sweep that dies in between sends one less, never more
            self._registrations.mark_resent(action.registration, action.hardware)
            send_registration_task(self._celery, prefix, action.registration, action.hardware)
        for action in plan.fail:
            log.error(
                "registration %s (%s): %s", action.registration, action.hardware, action.reason
            )
            self._registrations.finish_task(
                action.registration, action.hardware, failed=True, error=action.reason
            )
            self._settle_model(action.model)
        return plan

    def _control_ready(self, hardware: set[str]) -> dict[str, int | None]:
        queues = {hw: topology.control_queue(self._broker.queue_prefix, hw) for hw in hardware}
        depths = read_depths(self._broker, sorted(queues.values()))
        return {hw: depths[q].messages if depths is not None else None for hw, q in queues.items()}

    def _settle_model(self, model_id: str) -> None:
        """A model no worker will build is failed once none of its tasks is left."""
        model = self._catalog.get_model(model_id)
        if model.status != QUEUED or self._catalog.list_variants(model_id=model_id, status=READY):
            return
        if all(t.finished for r in self._registrations.for_model(model_id) for t in r.tasks):
            self._catalog.set_model_status(model_id, FAILED)

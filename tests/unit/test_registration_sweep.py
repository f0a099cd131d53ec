"""The registration sweeper's rule (registry/registration_sweep.py), on plain data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from registry.registration_sweep import SweepSettings, decide
from registry.registrations import QueuedTask

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
SETTINGS = SweepSettings(resend_after_s=30, max_resends=3)


def _task(age_s: float, resends: int = 0, resent_s: float | None = None) -> QueuedTask:
    return QueuedTask(
        registration="r1",
        model="m1",
        hardware="cpu",
        created_at=NOW - timedelta(seconds=age_s),
        resends=resends,
        resent_at=None if resent_s is None else NOW - timedelta(seconds=resent_s),
    )


def _decide(task: QueuedTask, ready: int | None) -> tuple[int, int]:
    plan = decide([task], now=NOW, control_ready={"cpu": ready}, settings=SETTINGS)
    return len(plan.resend), len(plan.fail)


@pytest.mark.parametrize(
    ("task", "ready", "expected"),
    [
        (_task(5), 0, (0, 0)),  # just recorded: its gateway is sending it
        (_task(60), 0, (1, 0)),  # never started, nothing in the queue: the message is gone
        (_task(60), 2, (0, 0)),  # messages wait: it waits its turn (or for a worker)
        (_task(60), None, (0, 0)),  # the queue cannot be read: nothing is decided
        (_task(600, resends=1, resent_s=10), 0, (0, 0)),  # sent again a moment ago
        (_task(600, resends=2, resent_s=40), 0, (1, 0)),
        (_task(600, resends=3, resent_s=40), 0, (0, 1)),  # capped: failed with the reason
        (_task(600, resends=3, resent_s=40), 1, (0, 0)),  # capped, but its message waits
    ],
)
def test_a_queued_task_is_sent_again_only_when_its_message_is_gone(
    task: QueuedTask, ready: int | None, expected: tuple[int, int]
) -> None:
    assert _decide(task, ready) == expected


def test_the_reasons_say_what_happened_and_what_to_do() -> None:
    resend = decide([_task(60)], now=NOW, control_ready={"cpu": 0}, settings=SETTINGS).resend
    assert "sending it again (1 of 3)" in resend[0].reason
    failed = decide(
        [_task(600, resends=3, resent_s=40)],
        now=NOW,
        control_ready={"cpu": 0},
        settings=SETTINGS,
    ).fail
    assert "no cpu worker started this registration in 600 s" in failed[0].reason
    assert "sent 4 times" in failed[0].reason
    assert "delete the model and register it again" in failed[0].reason


def test_each_hardware_reads_its_own_queue() -> None:
    gpu = QueuedTask("r1", "m1", "gpu", NOW - timedelta(seconds=60))
    cpu = QueuedTask("r1", "m1", "cpu", NOW - timedelta(seconds=60))
    plan = decide([cpu, gpu], now=NOW, control_ready={"cpu": 0, "gpu": 3}, settings=SETTINGS)
    assert [a.hardware for a in plan.resend] == ["cpu"]
    assert [a.hardware for a in plan.left] == ["gpu"]

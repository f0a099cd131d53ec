"""Control queues on a real broker: declared as quorum queues by whoever declares them
first (a sender or a worker), and a Celery worker consumes them (quorum queues refuse the
global QoS that Celery would otherwise ask for)."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from celery.contrib.testing.worker import TestWorkController
from celery.worker import state as worker_state

from queues import topology
from queues.celery_app import create_celery_app
from queues.settings import BrokerSettings
from tests.services import ServiceMissing, rabbitmq_vhost

pytestmark = pytest.mark.integration


def _queue_types(vhost: str) -> dict[str, str]:
    exe = shutil.which("rabbitmqctl")
    if exe is None:
        raise ServiceMissing("rabbitmq", "rabbitmqctl is not on PATH")
    proc = subprocess.run(
        [exe, "list_queues", "-p", vhost, "name", "type", "--silent", "--no-table-headers"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    rows = (line.split() for line in proc.stdout.splitlines() if line.strip())
    return {row[0]: row[1] for row in rows if len(row) == 2}


@contextmanager
def worker_thread(
    app: Any, hostname: str, queue: str
) -> Iterator[tuple[TestWorkController, threading.Thread]]:
    """A Celery worker (threads pool) in a thread of this process, stopped on the way out.

    Stopping sets Celery's terminate flag, which its event loop reads between polls, and
    a poll waits up to 10 s when no message comes (Celery's own ``start_worker`` stops in
    about that): a ping to the worker's control queue wakes it to read the flag."""
    worker = TestWorkController(
        app=app, hostname=hostname, pool="threads", concurrency=1, queues=[queue],
        ready_callback=None, without_heartbeat=True, without_mingle=True, without_gossip=True,
    )  # fmt: skip
    thread = threading.Thread(target=worker.start, daemon=True)
    thread.start()
    try:
        yield worker, thread
    finally:
        worker_state.should_terminate = 0
        deadline = time.monotonic() + 60
        while thread.is_alive() and time.monotonic() < deadline:
            app.control.ping(destination=[hostname], timeout=0.2)
            thread.join(0.3)
        worker_state.should_terminate = None
    assert not thread.is_alive(), "the worker did not stop"


def test_a_sent_task_declares_a_quorum_control_queue_and_a_worker_runs_it() -> None:
    with rabbitmq_vhost() as url:
        vhost = url.rsplit("/", 1)[1]
        broker = BrokerSettings(broker_url=url, queue_prefix="cq")
        app: Any = create_celery_app(broker, name="control-queue-test")
        ran = threading.Event()

        @app.task(name="infaas.test.mark")  # type: ignore[untyped-decorator]
        def mark() -> None:
            ran.set()

        queue = topology.control_queue("cq", "cpu")
        # sent before any worker exists: the sender declares the queue, as the gateway does
        app.send_task("infaas.test.mark", queue=queue)
        assert _queue_types(vhost).get(queue) == "quorum"
        with worker_thread(app, "runner@control-queue-test", queue):
            assert ran.wait(timeout=60), "the worker never ran the task from the quorum queue"
        assert _queue_types(vhost)[queue] == "quorum"


# Celery warns on every retried connection that it will cancel running late-ack tasks
# from 6.0 on; the suite turns warnings into errors, which would end the retry here.
@pytest.mark.filterwarnings("ignore::celery.exceptions.CPendingDeprecationWarning")
def test_a_worker_whose_control_queue_is_still_locked_waits_for_it() -> None:
    """A worker cut off the network reconnects before the broker has dropped its old
    connection, which still holds the worker's exclusive remote-control (pidbox) queue:
    declaring it again is refused RESOURCE_LOCKED. Here the test's own connection holds
    that queue while the worker starts; the worker must retry (not stop) and answer a
    ping once the queue is free."""
    with rabbitmq_vhost() as url:
        broker = BrokerSettings(broker_url=url, queue_prefix="lk")
        app: Any = create_celery_app(broker, name="locked-pidbox-test")
        hostname = "locked@pidbox-test"
        pidbox = f"{hostname}.lk.ctl.pidbox"
        holder = app.connection()
        holder.default_channel.queue_declare(pidbox, exclusive=True, auto_delete=True)
        try:
            with worker_thread(app, hostname, topology.control_queue("lk", "cpu")) as (
                worker,
                thread,
            ):
                # refused at least once while the queue is held, and still running
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and thread.is_alive():
                    consumer = worker.consumer
                    if consumer is not None and consumer.restart_count >= 2:
                        break
                    time.sleep(0.2)
                assert thread.is_alive(), "the worker stopped on its locked control queue"
                assert worker.consumer.restart_count >= 2, "the worker never met the lock"
                assert not worker._on_started.is_set()
                holder.release()  # the old connection is gone: the queue is free
                assert worker._on_started.wait(timeout=60), "the worker never started"
                replies = app.control.ping(destination=[hostname], timeout=5)
                assert replies == [{hostname: {"ok": "pong"}}]
        finally:
            holder.release()

"""Control queues on a real broker: declared as quorum queues by whoever declares them
first (a sender or a worker), and a Celery worker consumes them (quorum queues refuse the
global QoS that Celery would otherwise ask for)."""

from __future__ import annotations

import shutil
import subprocess
import threading
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker

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
        with start_worker(
            app,
            pool="threads",
            concurrency=1,
            queues=[queue],
            perform_ping_check=False,
            shutdown_timeout=60,  # the test harness's worker takes ~10 s to stop
        ):
            assert ran.wait(timeout=60), "the worker never ran the task from the quorum queue"
        assert _queue_types(vhost)[queue] == "quorum"

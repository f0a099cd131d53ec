"""What RabbitMQ itself says a vhost holds, read with ``rabbitmqctl`` (not through the
AMQP clients under test)."""

from __future__ import annotations

import shutil
import subprocess

from tests.services import ServiceMissing


def _names(kind: str, vhost: str) -> set[str]:
    exe = shutil.which("rabbitmqctl")
    if exe is None:
        raise ServiceMissing("rabbitmq", "rabbitmqctl is not on PATH")
    proc = subprocess.run(
        [exe, kind, "-p", vhost, "name", "--silent"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        raise ServiceMissing("rabbitmq", f"`rabbitmqctl {kind} -p {vhost}` failed: {proc.stderr}")
    return {line.strip() for line in proc.stdout.splitlines() if line.strip()}


def queue_names(vhost: str) -> set[str]:
    return _names("list_queues", vhost)


def exchange_names(vhost: str) -> set[str]:
    return _names("list_exchanges", vhost)

"""The Celery app factory. Celery carries control (load/unload variants), registration
and batch-job work; online queries take the faster path of :mod:`workers.consumer`."""

from __future__ import annotations

from typing import Any

from celery import Celery

from queues import topology
from queues.settings import BrokerSettings


def create_celery_app(settings: BrokerSettings, *, name: str = "infaas") -> Any:
    """A Celery app on the configured broker (memory transport when embedded).

    Returned as ``Any``: Celery ships no type information.
    """
    app = Celery(name, set_as_current=False)
    prefix = settings.queue_prefix
    app.conf.update(
        broker_url=settings.url,
        broker_connection_retry_on_startup=True,
        broker_heartbeat=settings.broker_heartbeat_s,
        # A channel error while the worker's consumer starts is retried like a lost
        # connection. The one seen: a worker cut off the network reconnects before the
        # broker has found its old connection dead (up to two heartbeats), and declaring
        # its remote-control (pidbox) queue again, exclusive to that old connection, is
        # refused RESOURCE_LOCKED; without the retry Celery stopped the worker
        # (docs/faults.md, the partition run).
        broker_channel_error_retry=True,
        broker_transport_options={"polling_interval": 0.01} if settings.embedded else {},
        task_default_queue=topology.control_queue(prefix, "any"),
        # every queue Celery declares by name is a control queue (batch queues come with
        # their own declaration): quorum, as topology says
        task_create_missing_queue_type=topology.CONTROL_QUEUE_TYPE,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
        control_exchange=f"{prefix}.ctl",
        event_exchange=f"{prefix}.ev",
        enable_utc=True,
    )
    return app

"""How chunks travel: the worker task's name, the app's batch queue as Celery and kombu
need it (the same arguments wherever it is declared), and publishing one chunk.

The registry names the worker task and never imports the workers. Chunk messages are
persistent (durable queue, delivery mode 2) and carry only ``(job_id, index)``: the
catalog holds everything else, so a message published twice does no harm.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kombu import Exchange, Queue

from queues import topology

# The Celery task a worker runs for one chunk: (job id, chunk index).
CHUNK_TASK = "infaas.jobs.run_chunk"


def batch_queue_options(prefix: str, app: str) -> dict[str, Any]:
    """Keyword arguments that declare the app's batch queue (Celery's ``add_consumer``
    and ``Consumer.add_task_queue`` take them)."""
    name = topology.batch_queue(prefix, app)
    return {
        "exchange": topology.batch_exchange(prefix, app),
        "exchange_type": "direct",
        "routing_key": name,
        "queue_arguments": topology.batch_queue_arguments(),
        "durable": True,
    }


def add_batch_consumer(
    control: Any, prefix: str, app: str, destination: list[str], **reply: Any
) -> Any:
    """Ask the Celery workers named in ``destination`` to consume the app's batch queue
    (``reply``: Celery's ``reply=``, ``timeout=``; its replies, or None without)."""
    options = batch_queue_options(prefix, app)
    return control.add_consumer(
        topology.batch_queue(prefix, app),
        exchange=options.pop("exchange"),
        exchange_type=options.pop("exchange_type"),
        routing_key=options.pop("routing_key"),
        options=options,
        destination=destination,
        **reply,
    )


def batch_kombu_queue(prefix: str, app: str) -> Queue:
    name = topology.batch_queue(prefix, app)
    return Queue(
        name,
        Exchange(topology.batch_exchange(prefix, app), type="direct", durable=True),
        routing_key=name,
        durable=True,
        queue_arguments=topology.batch_queue_arguments(),
    )


def send_chunks(
    celery: Any,
    prefix: str,
    app: str,
    job_id: str,
    indices: Iterable[int],
    *,
    priority: int,
    countdown_s: float | None = None,
) -> list[int]:
    """Publish one persistent task per chunk on the app's batch queue; returns the
    indices sent (all of them, or an exception)."""
    queue = batch_kombu_queue(prefix, app)
    sent: list[int] = []
    with celery.producer_or_acquire() as producer:
        for index in indices:
            celery.send_task(
                CHUNK_TASK,
                args=[job_id, int(index)],
                queue=queue,
                priority=priority,
                countdown=countdown_s,
                delivery_mode=2,
                producer=producer,
            )
            sent.append(int(index))
    return sent

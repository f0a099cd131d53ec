"""The README's broker URL reaches the same vhost from every AMQP client.

``amqp://guest:guest@127.0.0.1:5672//`` once left the gateway unready forever: pika read
the vhost as "" (RabbitMQ: ``vhost  not found``) while kombu read it as "/". Here the
gateway's pika query client and the kombu queue-depth probe connect with that URL and
with a fresh named vhost, and RabbitMQ's own listing shows where they declared.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from kombu import Connection

from queues import topology
from queues.amqp_url import parse_amqp_url
from queues.depth import QueueDepth, QueueProbe
from queues.rpc import create_query_client
from queues.settings import BrokerSettings
from tests.rabbitmq_admin import exchange_names, queue_names
from tests.services import RABBIT_HOST, rabbitmq_vhost

pytestmark = pytest.mark.integration

README_URL = f"amqp://guest:guest@{RABBIT_HOST}:5672//"


@pytest.fixture(params=["readme-url", "named-vhost"])
def broker(request: pytest.FixtureRequest) -> Iterator[BrokerSettings]:
    prefix = f"url-{uuid.uuid4().hex[:12]}"
    with ExitStack() as stack:
        url = README_URL if request.param == "readme-url" else stack.enter_context(rabbitmq_vhost())
        settings = BrokerSettings(broker_url=url, queue_prefix=prefix)
        yield settings
        # the default vhost outlives the test: remove what the gateway declared there
        with Connection(settings.url, connect_timeout=5) as conn:
            channel = conn.channel()
            channel.queue_delete(topology.dead_letter_queue(prefix))
            channel.exchange_delete(topology.dead_letter_exchange(prefix))


def test_gateway_query_client_and_depth_probe_connect(broker: BrokerSettings) -> None:
    vhost = parse_amqp_url(broker.broker_url or "").vhost
    expired = topology.dead_letter_queue(broker.queue_prefix)
    assert expired not in queue_names(vhost)

    async def connect_and_probe() -> tuple[bool, QueueDepth | None]:
        client = create_query_client(broker)
        await client.start()  # a failed connect only logs and retries in the background
        try:
            probe = QueueProbe(lambda: Connection(broker.url, connect_timeout=5))
            try:
                return client.connected, probe.depth(expired)
            finally:
                probe.close()
        finally:
            await client.close()

    connected, depth = asyncio.run(connect_and_probe())
    assert connected, f"the gateway's query client did not connect to {broker.redacted_url()}"
    # the probe sees the gateway consuming its expired-query queue: the same vhost
    assert depth == QueueDepth(messages=0, consumers=1)
    assert expired in queue_names(vhost)
    assert topology.dead_letter_exchange(broker.queue_prefix) in exchange_names(vhost)

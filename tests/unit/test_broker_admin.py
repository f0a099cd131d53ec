"""What a deleted variant or app declared on the broker, and removing it (here on the
memory transport of the embedded mode; tests/integration/test_registration_cleanup.py
does it on RabbitMQ)."""

from __future__ import annotations

import uuid

import pytest
from kombu import Connection
from kombu import Queue as KombuQueue

from queues import topology
from queues.broker_admin import Removal, broker_connection, remove_declared
from queues.depth import QueueProbe
from queues.settings import BrokerSettings
from registry.jobs.messages import batch_kombu_queue


def test_what_a_variant_and_an_app_declare() -> None:
    assert topology.declared_for_variants(
        "p", "wine", ["m.onnx-fp32.cpu-t2", "m.onnx-fp32.cpu-t1"]
    ) == (topology.Declared(queues=("p.wine.m.onnx-fp32.cpu-t1", "p.wine.m.onnx-fp32.cpu-t2")))
    assert topology.declared_for_variants("p", "wine", []) == topology.Declared()
    assert topology.declared_for_app("p", "wine") == topology.Declared(
        queues=("p.wine.batch",), exchanges=("p.wine.batch",)
    )
    # the batch queue's exchange is the one its chunks are published to
    queue = batch_kombu_queue("p", "wine")
    assert queue.exchange.name == topology.batch_exchange("p", "wine")


@pytest.mark.parametrize("bad", ["", "Wine", "a b"])
def test_bad_app_names_declare_nothing(bad: str) -> None:
    with pytest.raises(ValueError, match="cannot be part of a queue name"):
        topology.declared_for_app("p", bad)
    with pytest.raises(ValueError, match="cannot be part of a queue name"):
        topology.declared_for_variants("p", bad, ["m.onnx-fp32.cpu-t1"])


@pytest.fixture
def embedded() -> BrokerSettings:
    return BrokerSettings(broker_url=None, queue_prefix=f"adm-{uuid.uuid4().hex[:8]}")


def _declare(conn: Connection, queue: KombuQueue) -> None:
    queue(conn.channel()).declare()


def test_removing_variant_and_batch_queues_on_the_memory_transport(
    embedded: BrokerSettings,
) -> None:
    prefix = embedded.queue_prefix
    variants = topology.declared_for_variants(prefix, "wine", ["m.onnx-fp32.cpu-t1"])
    app = topology.declared_for_app(prefix, "wine")
    other = topology.variant_queue(prefix, "other", "o.onnx-fp32.cpu-t1")
    probe = QueueProbe(lambda: broker_connection(embedded))
    with broker_connection(embedded) as conn:
        for name in (*variants.queues, other):
            _declare(conn, KombuQueue(name, routing_key=name, durable=True))
        _declare(conn, batch_kombu_queue(prefix, "wine"))
    everything = [*variants.queues, *app.queues, other]
    assert set(probe.depths(everything)) == set(everything)

    removal = remove_declared(lambda: broker_connection(embedded), variants)
    assert removal == Removal(queues=variants.queues)
    removal = remove_declared(lambda: broker_connection(embedded), app)
    assert removal == Removal(queues=app.queues, exchanges=app.exchanges)
    assert set(probe.depths(everything)) == {other}  # only what was named
    # already gone: deleting again is no error
    assert remove_declared(lambda: broker_connection(embedded), variants).queues
    probe.close()


def test_a_broker_that_cannot_be_reached_raises(embedded: BrokerSettings) -> None:
    def refuse() -> Connection:
        raise ConnectionRefusedError("nothing listens")

    with pytest.raises(ConnectionRefusedError):
        remove_declared(refuse, topology.declared_for_app(embedded.queue_prefix, "wine"))

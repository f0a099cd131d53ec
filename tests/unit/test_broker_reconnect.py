"""A dropped broker connection, without a broker: the gateway's query client sends the
queries in flight again on the next connection (their reply address died with the old
one) and holds new ones for the reconnect within a grace; past it, or once the broker
has been gone longer, it refuses at once. The worker's replica reconnects at once after
losing a connection that served, and backs off only while attempts keep failing."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from queues.amqp_link import LinkCallbacks, QueryLink, reconnect_wait_s
from queues.amqp_rpc import AmqpQueryClient
from queues.errors import BrokerUnavailable
from queues.messages import Query, Reply, now_ms
from queues.settings import BrokerSettings
from workers.consumer import RECONNECT_FIRST_S, RECONNECT_MAX_S, reconnect_delay_s

URL = "amqp://guest:guest@127.0.0.1:5672//"


@pytest.mark.parametrize(
    ("now", "lost_at", "give_up", "expected"),
    [
        (10.0, None, 20.0, 0.0),  # connected: no wait
        (10.0, 10.0, 20.0, 1.0),  # just lost: the whole grace
        (10.4, 10.0, 20.0, 0.6),  # within it: what is left of it
        (10.0, 10.0, 10.3, 0.3),  # never past the query's own deadline
        (12.0, 10.0, 20.0, 0.0),  # lost long ago: the broker is down, refuse at once
        (10.0, 10.0, 9.0, 0.0),  # the query is already out of time
    ],
)
def test_a_query_waits_for_the_reconnect_within_the_grace_and_its_deadline(
    now: float, lost_at: float | None, give_up: float, expected: float
) -> None:
    wait = reconnect_wait_s(now=now, lost_at=lost_at, grace_s=1.0, give_up=give_up)
    assert wait == pytest.approx(expected)


@pytest.mark.parametrize(
    ("failures", "expected"),
    [(1, RECONNECT_FIRST_S), (2, 2 * RECONNECT_FIRST_S), (3, 4 * RECONNECT_FIRST_S)]
    + [(n, RECONNECT_MAX_S) for n in (8, 50)],
)
def test_a_replica_backs_off_only_while_connecting_keeps_failing(
    failures: int, expected: float
) -> None:
    assert reconnect_delay_s(failures) == pytest.approx(expected)


@dataclass
class FakeChannel:
    """What the query client touches of a pika channel: publishes are recorded."""

    published: list[tuple[str, Any]] = field(default_factory=list)
    is_open: bool = True

    def basic_publish(
        self, _exchange: str, routing_key: str, _body: bytes, props: Any, mandatory: bool
    ) -> None:
        self.published.append((routing_key, props))


class FakeLink(QueryLink):
    """The broker link with each (re)connect handing it a fresh fake channel."""

    def __init__(self, settings: BrokerSettings, callbacks: LinkCallbacks) -> None:
        super().__init__(settings, callbacks)
        self.channels: list[FakeChannel] = []

    async def _connect(self) -> None:
        channel = FakeChannel()
        self.channels.append(channel)
        self.opened(channel)

    def drop(self) -> None:
        """As pika reports a connection the broker closed."""
        if self.channels:
            self.channels[-1].is_open = False
        self._on_connection_closed(None, ConnectionResetError("closed by the broker"))


class DownLink(FakeLink):
    """A broker that stays down: every reconnect fails."""

    async def _connect(self) -> None:
        if self.channels:
            raise BrokerUnavailable("cannot reach the broker")
        await super()._connect()


class FakeClient(AmqpQueryClient):
    """The query client on a fake link."""

    link_class: type[FakeLink] = FakeLink

    def _open_link(self, callbacks: LinkCallbacks) -> QueryLink:
        self.link = self.link_class(self._settings, callbacks)
        return self.link

    @property
    def channels(self) -> list[FakeChannel]:
        return self.link.channels

    def drop(self) -> None:
        self.link.drop()

    def answer(self, channel: FakeChannel, index: int = -1) -> None:
        props = channel.published[index][1]
        cid = props.correlation_id
        self._resolve(cid, Reply(request_id=cid, ok=True, outputs=np.zeros((1, 1))))


def _query(request_id: str, timeout_s: float) -> Query:
    now = now_ms()
    inputs = np.zeros((1, 4), dtype=np.float32)
    return Query(request_id, "app", "v", inputs, deadline_ms=now + timeout_s * 1000, sent_ms=now)


async def _until(condition: Any, timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


def test_a_query_in_flight_when_the_connection_drops_is_sent_again_and_answered() -> None:
    async def scenario() -> None:
        client = FakeClient(BrokerSettings(broker_url=URL, broker_reconnect_grace_s=30))
        await client.start()
        call = asyncio.create_task(client.call("q", _query("r1", 30), timeout_s=30))
        await _until(lambda: client.channels[0].published)
        client.drop()  # its reply address is gone; it goes out again on the next channel
        await _until(lambda: len(client.channels) == 2 and client.channels[1].published)
        client.answer(client.channels[1])
        reply = await call
        assert reply.ok
        assert reply.request_id == "r1"
        assert [p.correlation_id for _, p in client.channels[1].published] == ["r1"]
        await client.close()

    asyncio.run(scenario())


def test_a_query_sent_while_reconnecting_waits_for_the_connection() -> None:
    async def scenario() -> None:
        client = FakeClient(BrokerSettings(broker_url=URL, broker_reconnect_grace_s=30))
        await client.start()
        client.drop()
        assert not client.connected
        call = asyncio.create_task(client.call("q", _query("r2", 30), timeout_s=30))
        await _until(lambda: len(client.channels) == 2 and client.channels[1].published)
        client.answer(client.channels[1])
        assert (await call).ok
        await client.close()

    asyncio.run(scenario())


class DownClient(FakeClient):
    """The query client on a broker that stays down after its first connection."""

    link_class = DownLink


def test_a_broker_down_past_the_grace_refuses_at_once_not_at_the_deadline() -> None:
    async def scenario() -> None:
        client = DownClient(BrokerSettings(broker_url=URL, broker_reconnect_grace_s=0.2))
        await client.start()
        in_flight = asyncio.create_task(client.call("q", _query("r3", 60), timeout_s=60))
        await _until(lambda: client.channels[0].published)
        client.drop()
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(BrokerUnavailable):
            await in_flight
        with pytest.raises(BrokerUnavailable):
            await client.call("q", _query("r4", 60), timeout_s=60)
        assert loop.time() - started < 30  # the grace, not the 60 s deadline
        await client.close()

    asyncio.run(scenario())

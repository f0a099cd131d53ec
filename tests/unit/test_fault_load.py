"""The fault bench's open-loop client: every query gets an outcome, bounded in time,
whatever the server does (answers, never answers, refuses the connection)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest

from bench import fault_load
from bench.fault_load import LOST, OpenLoad, post_json


@contextmanager
def http_server(answer: bool) -> Iterator[int]:
    """A server on a free loopback port that answers each POST with a fixed JSON body,
    or reads the request and never answers."""
    loop = asyncio.new_event_loop()
    body = json.dumps({"variant": "v", "labels": [3]}).encode()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
            await reader.readexactly(length)
            if not answer:
                await reader.read()  # until the client gives up and closes
                return
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                + f"content-length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        finally:
            writer.close()

    async def shutdown() -> None:
        server.close()
        await server.wait_closed()

    server = loop.run_until_complete(asyncio.start_server(handle, "127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def _load(port: int, rate_qps: float = 50.0) -> OpenLoad:
    return OpenLoad(
        url=f"http://127.0.0.1:{port}",
        app="digits",
        inputs=np.zeros((4, 64), dtype=np.float32),
        rate_qps=rate_qps,
        slo_ms=100.0,
        deadline_ms=100.0,
        min_accuracy=0.0,
    )


def test_post_json_returns_the_status_and_body() -> None:
    with http_server(answer=True) as port:
        status, body = asyncio.run(post_json(f"http://127.0.0.1:{port}", "/x", {"a": 1}))
    assert status == 200
    assert json.loads(body) == {"variant": "v", "labels": [3]}


def test_answered_queries_are_recorded_with_their_answer() -> None:
    with http_server(answer=True) as port:
        load = _load(port).start()
        load.wait_good(time.monotonic() - 60, count=5, timeout_s=30)
        load.stop()
    assert load.shots
    assert all(s.ok and s.variant == "v" and s.label == 3 for s in load.shots)


def test_a_server_that_never_answers_loses_every_query_within_its_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fault_load, "LOST_AFTER_S", 0.5)
    with http_server(answer=False) as port:
        load = _load(port).start()
        time.sleep(0.5)
        started = time.monotonic()
        load.stop()
        stopped_s = time.monotonic() - started
    assert load.shots
    assert all(s.code == LOST and s.why.startswith("no answer in") for s in load.shots)
    # each query ends at its deadline + LOST_AFTER_S (0.6 s here), not at some later
    # time-out of the client's: stop() waits for the last one only
    assert all(s.done - s.sent < 30 for s in load.shots)
    assert stopped_s < 30


def test_a_refused_connection_is_a_connect_error() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    load = _load(port, rate_qps=20).start()
    time.sleep(0.3)
    load.stop()
    assert load.shots
    assert {s.code for s in load.shots} == {"ConnectError"}

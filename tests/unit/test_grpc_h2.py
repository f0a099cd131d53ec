"""Our gRPC server (api_gateway/grpc_h2.py) against real gRPC clients (grpcio's C core,
the one tritonclient uses) and raw sockets, with a small handler of its own: echo,
errors, flow control both ways, limits, cancels, malformed peers and a graceful stop.
The Open Inference Protocol's methods on it are tested with tritonclient in
tests/integration/test_oip_clients.py."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import grpc
import pytest

from api_gateway.grpc_h2 import Call, H2Server, Limits, Reply, Status, percent_encode
from api_gateway.http2 import PREFACE, ErrorCode, FrameReader, FrameType, HeaderDecoder, frame
from bench import grpc_load

LIMIT_BYTES = 8 * 1024 * 1024
WAIT_S = 10.0


class Harness:
    """An H2Server on its own loop in a thread; what the handler saw."""

    def __init__(self, limits: Limits) -> None:
        self.calls: list[Call] = []
        self.cancelled: list[str] = []
        self.release = asyncio.Event()
        self.loop = asyncio.new_event_loop()
        self.server = H2Server(self.handle, limits)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = self.run(self.server.start("127.0.0.1", 0))

    def run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(WAIT_S)

    async def handle(self, call: Call) -> Reply:
        self.calls.append(call)
        method = call.path.rsplit("/", 1)[-1]
        if method == "Echo":
            return Reply(message=call.message)
        if method == "Big":
            size = int(call.message.decode())
            return Reply(message=bytes(range(256)) * (size // 256))
        if method == "Fail":
            return Reply(
                Status.NOT_FOUND,
                details="no model named 'ñandú' (100% sure)\nlook again",
                trailers=(("x-infaas-error", "not_found"),),
            )
        if method == "Hang":
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancelled.append(call.path)
                raise
            return Reply(message=b"released")
        if method == "Crash":
            raise RuntimeError("a bug")
        return Reply(Status.UNIMPLEMENTED, details=f"no method {call.path}")

    def stop(self) -> None:
        self.run(self.server.stop(grace_s=1.0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(WAIT_S)
        self.loop.close()


@pytest.fixture
def harness() -> Iterator[Harness]:
    h = Harness(Limits(max_message_bytes=LIMIT_BYTES))
    yield h
    h.stop()


@pytest.fixture
def channel(harness: Harness) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(
        f"127.0.0.1:{harness.port}",
        options=[
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ],
    ) as ch:
        yield ch


def method(channel: grpc.Channel, name: str) -> Any:
    """The method's callable (bytes in, bytes out; ``.future`` for calls at once)."""
    return channel.unary_unary(f"/test.Service/{name}")


def test_a_call_and_its_metadata_reach_the_handler(harness: Harness, channel: grpc.Channel) -> None:
    answer = method(channel, "Echo")(
        b"hello", metadata=[("authorization", "Bearer k1"), ("x-api-key", "k2")], timeout=WAIT_S
    )
    assert answer == b"hello"
    call = harness.calls[-1]
    assert call.path == "/test.Service/Echo"
    metadata = dict(call.metadata)
    assert metadata["authorization"] == "Bearer k1"
    assert metadata["x-api-key"] == "k2"
    assert method(channel, "Echo")(b"", timeout=WAIT_S) == b""  # an empty message is one


def test_many_calls_at_once_on_one_connection(channel: grpc.Channel) -> None:
    echo = method(channel, "Echo")
    futures = [echo.future(str(i).encode(), timeout=WAIT_S) for i in range(300)]
    assert [f.result() for f in futures] == [str(i).encode() for i in range(300)]


def test_an_error_reaches_the_client_with_its_details_and_code(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        method(channel, "Fail")(b"", timeout=WAIT_S)
    error: Any = caught.value
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "no model named 'ñandú' (100% sure)\nlook again"
    assert ("x-infaas-error", "not_found") in error.trailing_metadata()


def test_a_handler_that_raises_is_an_internal_error(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        method(channel, "Crash")(b"", timeout=WAIT_S)
    error: Any = caught.value
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "gateway's log" in error.details()
    assert method(channel, "Echo")(b"still here", timeout=WAIT_S) == b"still here"


@pytest.mark.parametrize("size", [70_000, 3 * 1024 * 1024])
def test_messages_larger_than_the_windows_flow_both_ways(channel: grpc.Channel, size: int) -> None:
    """A request past our stream window's half (WINDOW_UPDATEs from us) and answers past
    the client's first windows (we wait for its WINDOW_UPDATEs)."""
    request = bytes(range(256)) * (6 * 1024 * 1024 // 256)
    assert method(channel, "Echo")(request, timeout=WAIT_S) == request
    answer = method(channel, "Big")(str(size).encode(), timeout=WAIT_S)
    assert answer == bytes(range(256)) * (size // 256)


def test_a_request_over_the_limit_is_refused_with_what_to_do(
    harness: Harness, channel: grpc.Channel
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        method(channel, "Echo")(b"x" * (LIMIT_BYTES + 1), timeout=WAIT_S)
    error: Any = caught.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"over this server's limit of {LIMIT_BYTES}" in error.details()
    assert not [c for c in harness.calls if c.path.endswith("Echo")]  # nothing ran
    assert method(channel, "Echo")(b"after", timeout=WAIT_S) == b"after"


def test_an_answer_over_the_limit_is_refused(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        method(channel, "Big")(str(LIMIT_BYTES + 256).encode(), timeout=WAIT_S)
    error: Any = caught.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "the response is" in error.details()


def test_a_compressed_message_is_refused(harness: Harness) -> None:
    with (
        grpc.insecure_channel(f"127.0.0.1:{harness.port}", compression=grpc.Compression.Gzip) as gz,
        pytest.raises(grpc.RpcError) as caught,
    ):
        method(gz, "Echo")(b"z" * 1000, timeout=WAIT_S)
    error: Any = caught.value
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "send them uncompressed" in error.details()


def test_a_client_that_gives_up_cancels_the_handler(
    harness: Harness, channel: grpc.Channel
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        method(channel, "Hang")(b"", timeout=0.3)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    deadline = time.monotonic() + WAIT_S
    while not harness.cancelled and time.monotonic() < deadline:
        time.sleep(0.02)
    assert harness.cancelled == ["/test.Service/Hang"]
    assert method(channel, "Echo")(b"next", timeout=WAIT_S) == b"next"


def test_a_stop_answers_open_calls_and_takes_no_new_ones(harness: Harness) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{harness.port}")
    hanging: Future[Any] = method(channel, "Hang").future(b"", timeout=WAIT_S)
    deadline = time.monotonic() + WAIT_S
    while not harness.calls and time.monotonic() < deadline:
        time.sleep(0.02)
    stopped = asyncio.run_coroutine_threadsafe(harness.server.stop(grace_s=5.0), harness.loop)
    time.sleep(0.2)
    harness.loop.call_soon_threadsafe(harness.release.set)
    stopped.result(WAIT_S)
    assert hanging.result(WAIT_S) == b"released"
    with pytest.raises(grpc.RpcError):
        method(channel, "Echo")(b"", timeout=1.0)
    channel.close()


def raw_connection(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)


def read_frames(sock: socket.socket, until: int) -> list[Any]:
    """Frames from the server until one of type ``until`` or the connection closes."""
    reader = FrameReader(max_frame_bytes=2**24 - 1)
    frames: list[Any] = []
    while True:
        data = sock.recv(65_536)
        if not data:
            return frames
        frames += reader.feed(data)
        if any(f.type == until for f in frames):
            return frames


def test_a_plain_http_request_on_the_grpc_port_is_told_where_it_is(harness: Harness) -> None:
    with raw_connection(harness.port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 400")
    assert b"this port serves gRPC" in answer


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        (frame(FrameType.DATA, 0, 1, b"x"), ErrorCode.PROTOCOL_ERROR),  # DATA on an idle stream
        (frame(FrameType.HEADERS, 0x4, 2, b"\x82"), ErrorCode.PROTOCOL_ERROR),  # an even stream
        (frame(FrameType.PING, 0, 0, b"123"), ErrorCode.PROTOCOL_ERROR),  # a short PING
        (frame(FrameType.SETTINGS, 0, 0, b"\0\4\0"), ErrorCode.FRAME_SIZE_ERROR),
        (frame(FrameType.HEADERS, 0x4, 1, b"\xff\xff\xff\xff"), ErrorCode.COMPRESSION_ERROR),
        (frame(FrameType.WINDOW_UPDATE, 0, 0, struct.pack(">I", 0)), ErrorCode.PROTOCOL_ERROR),
        (frame(FrameType.DATA, 0, 1, b"x" * 20_000), ErrorCode.FRAME_SIZE_ERROR),
    ],
)
def test_a_peer_that_breaks_the_protocol_gets_goaway_and_the_server_goes_on(
    harness: Harness, frames: bytes, code: ErrorCode
) -> None:
    with raw_connection(harness.port) as sock:
        sock.sendall(PREFACE + frame(FrameType.SETTINGS, 0, 0) + frames)
        got = read_frames(sock, until=FrameType.GOAWAY)
    goaways = [f for f in got if f.type == FrameType.GOAWAY]
    assert goaways, got
    assert struct.unpack(">I", goaways[0].payload[4:8])[0] == code
    with grpc.insecure_channel(f"127.0.0.1:{harness.port}") as ch:
        assert method(ch, "Echo")(b"ok", timeout=WAIT_S) == b"ok"


def test_the_benchmarks_lean_client_counts_answers_and_errors(harness: Harness) -> None:
    address = f"127.0.0.1:{harness.port}"
    ok = asyncio.run(
        grpc_load.closed_loop(address, "/test.Service/Echo", b"abc", concurrency=4, requests=200)
    )
    assert ok.statuses == {200: 200}
    failed = asyncio.run(
        grpc_load.closed_loop(address, "/test.Service/Fail", b"", concurrency=2, requests=10)
    )
    assert failed.statuses == {500: 10}
    assert "grpc-status 5 no model named" in failed.error_samples[0]


def test_grpc_message_is_percent_encoded() -> None:
    assert percent_encode("a b%c\nñ") == b"a b%25c%0A%C3%B1"


def test_an_answer_waits_for_the_clients_window(harness: Harness) -> None:
    """A client that opens 1,000-byte stream windows: the answer leaves 1,000 bytes at a
    time, each after the client's WINDOW_UPDATE, then its trailers."""
    size = 10_240
    block, data = grpc_load.call_frames("x", "/test.Service/Big", str(size).encode())
    settings = struct.pack(">HI", 0x4, 1000)
    with raw_connection(harness.port) as sock:
        sock.sendall(
            PREFACE
            + frame(FrameType.SETTINGS, 0, 0, settings)
            + frame(FrameType.HEADERS, 0x4, 1, block)
            + frame(FrameType.DATA, 0x1, 1, data)
        )
        reader = FrameReader()
        received, updates, pieces = 0, 0, []
        while True:
            chunk = sock.recv(65_536)
            assert chunk, "the server closed the connection"
            frames = reader.feed(chunk)
            for item in frames:
                if item.type == FrameType.DATA and item.stream_id == 1:
                    received += len(item.payload)
                    pieces.append(len(item.payload))
                    assert received <= 1000 * (updates + 1)
            if any(f.type == FrameType.HEADERS and f.flags & 0x1 for f in frames):
                break
            if received == 1000 * (updates + 1):
                updates += 1
                sock.sendall(
                    frame(FrameType.WINDOW_UPDATE, 0, 1, struct.pack(">I", 1000))
                    + frame(FrameType.WINDOW_UPDATE, 0, 0, struct.pack(">I", 1000))
                )
    assert received == 5 + size  # the message's prefix and its bytes
    assert max(pieces) <= 1000
    assert updates == (5 + size) // 1000


def test_a_connection_holding_too_many_unfinished_bytes_has_its_newest_call_refused() -> None:
    """HTTP/2 lets one connection open a thousand streams: the request bytes it may hold
    for calls not yet complete are bounded (``Limits.max_buffered_bytes``), and the call
    that would go past the bound is refused, the others kept."""
    mib = 1024 * 1024
    harness = Harness(Limits(max_message_bytes=8 * mib, max_buffered_bytes=10 * mib))
    try:
        block, _ = grpc_load.call_frames("x", "/test.Service/Echo", b"")
        chunk = b"\0" * 16_384

        def partial(sid: int, size: int) -> bytes:
            data = struct.pack(">BI", 0, 7 * mib) + b"\0" * (size - 5)
            return frame(FrameType.HEADERS, 0x4, sid, block) + b"".join(
                frame(FrameType.DATA, 0, sid, data[at : at + len(chunk)])
                for at in range(0, len(data), len(chunk))
            )

        with raw_connection(harness.port) as sock:
            sock.sendall(PREFACE + frame(FrameType.SETTINGS, 0, 0) + partial(1, 6 * mib))
            sock.sendall(partial(3, 6 * mib) + frame(FrameType.PING, 0, 0, b"stillup?"))
            reader, decoder = FrameReader(), HeaderDecoder()
            refused: dict[bytes, bytes] = {}
            pinged = False
            while not (refused and pinged):
                data = sock.recv(65_536)
                assert data, "the server closed the connection"
                for item in reader.feed(data):
                    if item.type == FrameType.HEADERS:
                        headers = dict(decoder.decode(item.payload))
                        assert item.stream_id == 3, headers  # stream 1 is still held
                        refused = headers
                    pinged = pinged or (item.type == FrameType.PING and item.flags & 0x1 == 1)
        assert refused[b"grpc-status"] == str(int(Status.RESOURCE_EXHAUSTED)).encode()
        assert b"requests not yet complete, over its limit of 10485760" in refused[b"grpc-message"]
        assert harness.calls == []
    finally:
        harness.stop()

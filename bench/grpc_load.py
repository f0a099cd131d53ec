"""A lean gRPC load client: unary calls over HTTP/2 with prior knowledge, as lean as
bench/loadgen.py is for HTTP/1.1, so that on two cores the client takes as little CPU as
it can from the server it measures.

Each client is one connection on which it sends the same prepared call again and again:
a HEADERS frame whose block is literals never indexed (the same bytes on every stream,
no encoder table), then the request message in one DATA frame. It reads frames until
the stream's trailers, decodes every header block with the connection's HPACK decoder
(api_gateway/http2.py) and counts the call as answered when ``grpc-status`` is 0.
A real gRPC client (``grpc.aio``) is measured beside it in bench/oip.py: it costs this
machine about three times the CPU per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator

from api_gateway.http2 import (
    PREFACE,
    Flag,
    FrameReader,
    FrameType,
    HeaderDecoder,
    Setting,
    encode_headers,
    frame,
    settings_payload,
    window_update,
)
from bench.loadgen import LoadResult, Send, run_closed_loop

WINDOW_BYTES = 16 * 1024 * 1024


def call_frames(authority: str, path: str, message: bytes) -> tuple[bytes, bytes]:
    """The header block and the DATA payload of one unary call."""
    block = encode_headers(
        [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", path.encode()),
            (b":authority", authority.encode()),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        ]
    )
    return block, struct.pack(">BI", 0, len(message)) + message


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.frames = FrameReader(max_frame_bytes=2**24 - 1)
        self.decoder = HeaderDecoder()
        self.stream_id = 1
        self.received = 0

    @classmethod
    async def open(cls, host: str, port: int) -> _Connection:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(
            PREFACE
            + frame(
                FrameType.SETTINGS,
                0,
                0,
                settings_payload(
                    {Setting.INITIAL_WINDOW_SIZE: WINDOW_BYTES, Setting.ENABLE_PUSH: 0}
                ),
            )
            + window_update(0, WINDOW_BYTES - 65_535)
        )
        return cls(reader, writer)

    async def call(self, block: bytes, data: bytes) -> tuple[int, str]:
        """One call: its grpc-status and grpc-message."""
        sid = self.stream_id
        self.stream_id += 2
        self.writer.write(
            frame(FrameType.HEADERS, Flag.END_HEADERS, sid, block)
            + frame(FrameType.DATA, Flag.END_STREAM, sid, data)
        )
        status, message = -1, ""
        while True:
            chunk = await self.reader.read(65_536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            done = False
            out = []
            for item in self.frames.feed(chunk):
                if item.type == FrameType.HEADERS:
                    headers = dict(self.decoder.decode(item.payload))
                    if b"grpc-status" in headers:
                        status = int(headers[b"grpc-status"])
                        message = headers.get(b"grpc-message", b"").decode()
                    if item.flags & Flag.END_STREAM and item.stream_id == sid:
                        done = True
                elif item.type == FrameType.DATA:
                    self.received += len(item.payload)
                elif item.type == FrameType.SETTINGS and not item.flags & Flag.ACK:
                    out.append(frame(FrameType.SETTINGS, Flag.ACK, 0))
                elif item.type == FrameType.PING and not item.flags & Flag.ACK:
                    out.append(frame(FrameType.PING, Flag.ACK, 0, item.payload))
                elif item.type == FrameType.RST_STREAM and item.stream_id == sid:
                    done = True
                elif item.type == FrameType.GOAWAY:
                    raise ConnectionError("the server sent GOAWAY")
            if self.received >= WINDOW_BYTES // 2:
                out.append(window_update(0, self.received))
                self.received = 0
            if out:
                self.writer.write(b"".join(out))
            if done:
                return status, message

    def close(self) -> None:
        self.writer.close()


@contextlib.asynccontextmanager
async def _connected(address: tuple[str, int], call: tuple[bytes, bytes]) -> AsyncIterator[Send]:
    connection = await _Connection.open(*address)

    async def send() -> tuple[int, str]:
        status, message = await connection.call(*call)
        return (200, "") if status == 0 else (500, f"grpc-status {status} {message[:300]}")

    try:
        yield send
    finally:
        connection.close()


async def closed_loop(
    address: str,
    path: str,
    message: bytes,
    *,
    concurrency: int,
    duration_s: float = 1e9,
    requests: int = 10**9,
    record: bool = True,
) -> LoadResult:
    """bench.loadgen's :func:`~bench.loadgen.run_closed_loop` of one gRPC method at
    ``address`` (host:port), ``message`` (serialized) as every call's request."""
    host, _, port = address.rpartition(":")
    call = call_frames(address, path, message)
    return await run_closed_loop(
        lambda: _connected((host.strip("[]"), int(port)), call),
        concurrency=concurrency,
        duration_s=duration_s,
        requests=requests,
        record=record,
    )

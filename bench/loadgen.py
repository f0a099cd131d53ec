"""A lean HTTP/1.1 load generator (closed loop, keep-alive, asyncio streams).

Generic clients (httpx, aiohttp) spend more CPU per request than the gateway does; on a
2-core machine that would measure the client. This one writes a prepared request and
reads exactly one response per round trip.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np


@dataclass
class LoadResult:
    concurrency: int
    wall_s: float
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    @property
    def errors(self) -> int:
        return sum(n for code, n in self.statuses.items() if code != 200)

    @property
    def throughput_qps(self) -> float:
        return len(self.latencies_ms) / self.wall_s if self.wall_s > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    def summary(self) -> dict[str, float | int]:
        return {
            "concurrency": self.concurrency,
            "requests": len(self.latencies_ms),
            "errors": self.errors,
            "p50_ms": round(self.percentile_ms(50), 3),
            "p99_ms": round(self.percentile_ms(99), 3),
            "throughput_qps": round(self.throughput_qps, 1),
        }


def build_request(
    url: str, path: str, body: bytes, headers: Mapping[str, str] | None = None
) -> bytes:
    host = urlsplit(url).netloc
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"{extra}Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
            break
    body = await reader.readexactly(length) if length else b""
    return status, body


async def _client(
    url: str,
    request: bytes,
    stop_at: float,
    remaining: list[int],
    result: LoadResult,
    record: bool,
) -> None:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        while time.perf_counter() < stop_at and remaining[0] > 0:
            remaining[0] -= 1
            started = time.perf_counter()
            writer.write(request)
            status, body = await _read_response(reader)
            if status != 200 and len(result.error_samples) < 5:
                result.error_samples.append(f"{status} {body[:300]!r}")
            if record:
                result.latencies_ms.append((time.perf_counter() - started) * 1000)
                result.statuses[status] = result.statuses.get(status, 0) + 1
    finally:
        writer.close()


async def closed_loop(
    url: str,
    path: str,
    body: bytes,
    *,
    concurrency: int,
    duration_s: float = 1e9,
    requests: int = 10**9,
    record: bool = True,
    headers: Mapping[str, str] | None = None,
) -> LoadResult:
    """``concurrency`` clients each send the next request as soon as the last answered,
    until ``duration_s`` passed or ``requests`` were sent."""
    request = build_request(url, path, body, headers)
    result = LoadResult(concurrency=concurrency, wall_s=0.0)
    remaining = [requests]
    started = time.perf_counter()
    stop_at = started + duration_s
    await asyncio.gather(
        *(_client(url, request, stop_at, remaining, result, record) for _ in range(concurrency))
    )
    result.wall_s = time.perf_counter() - started
    return result

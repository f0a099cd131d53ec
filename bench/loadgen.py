"""A lean HTTP/1.1 load generator (closed loop, open loop, keep-alive, asyncio streams).

Generic clients (httpx, aiohttp) spend more CPU per request than the gateway does; on a
2-core machine that would measure the client. This one writes a prepared request and
reads exactly one response per round trip.

:func:`closed_loop` keeps N clients busy; :func:`open_loop` sends Poisson arrivals at a
given rate whatever the answers do, latency counted from each request's scheduled time;
:func:`capacity_ramp` raises the rate until p99 or errors give out.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import numpy as np


@dataclass
class LoadResult:
    concurrency: int
    wall_s: float
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)
    # open loop: how late each request left against its schedule (the generator's lag)
    send_lag_ms: list[float] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    @property
    def errors(self) -> int:
        return sum(n for code, n in self.statuses.items() if code != 200)

    @property
    def throughput_qps(self) -> float:
        return len(self.latencies_ms) / self.wall_s if self.wall_s > 0 else 0.0

    def count(self, status: int, started: float, error: str, *, record: bool = True) -> None:
        """One closed-loop request's outcome: sent at ``started`` (perf_counter), answered
        now with ``status``; ``error`` is kept as a sample when the status is not 200."""
        if status != 200 and len(self.error_samples) < 5:
            self.error_samples.append(error)
        if record:
            self.latencies_ms.append((time.perf_counter() - started) * 1000)
            self.statuses[status] = self.statuses.get(status, 0) + 1

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


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
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


Send = Callable[[], Awaitable[tuple[int, str]]]
"""One request on a client's connection: its status (200 when answered) and, for any
other status, an error sample."""
Connect = Callable[[], contextlib.AbstractAsyncContextManager[Send]]


async def run_closed_loop(
    connect: Connect,
    *,
    concurrency: int,
    duration_s: float = 1e9,
    requests: int = 10**9,
    record: bool = True,
) -> LoadResult:
    """``concurrency`` clients, each on a connection of its own (``connect``), send the
    next request as soon as the last answered, until ``duration_s`` passed or
    ``requests`` were sent: every protocol's closed loop (HTTP/1.1 here, gRPC in
    bench/grpc_load.py and bench/oip.py)."""
    result = LoadResult(concurrency=concurrency, wall_s=0.0)
    remaining = [requests]
    started = time.perf_counter()
    stop_at = started + duration_s

    async def client() -> None:
        async with connect() as send:
            while time.perf_counter() < stop_at and remaining[0] > 0:
                remaining[0] -= 1
                sent = time.perf_counter()
                status, error = await send()
                result.count(status, sent, error, record=record)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    result.wall_s = time.perf_counter() - started
    return result


@contextlib.asynccontextmanager
async def _http_connection(url: str, request: bytes) -> AsyncIterator[Send]:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)

    async def send() -> tuple[int, str]:
        writer.write(request)
        status, body = await read_response(reader)
        return status, "" if status == 200 else f"{status} {body[:300]!r}"

    try:
        yield send
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
    """:func:`run_closed_loop` of one prepared HTTP/1.1 request, keep-alive."""
    request = build_request(url, path, body, headers)
    return await run_closed_loop(
        lambda: _http_connection(url, request),
        concurrency=concurrency,
        duration_s=duration_s,
        requests=requests,
        record=record,
    )


# -- open loop: arrivals on a schedule, whatever the answers do


NOT_SENT = 0  # the status counted for a request no connection could send in time
NO_ANSWER = 1  # the status counted for a request whose connection failed


def poisson_schedule(rate_qps: float, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    """Send times (seconds from the start, ascending, below ``duration_s``) of a Poisson
    process of ``rate_qps``: exponential gaps."""
    if rate_qps <= 0 or duration_s <= 0:
        return np.empty(0)
    expected = rate_qps * duration_s
    n = int(expected + 6 * np.sqrt(expected) + 16)  # enough gaps, almost surely
    times = np.cumsum(rng.exponential(1.0 / rate_qps, size=n))
    while times[-1] < duration_s:  # pragma: no cover - 6 sigma short
        more = times[-1] + np.cumsum(rng.exponential(1.0 / rate_qps, size=n))
        times = np.concatenate([times, more])
    return times[times < duration_s]


class _OpenLoop:
    """A pool of keep-alive connections, each with a coroutine that sends the next due
    request; more are opened, up to ``cap``, while requests wait and none is free."""

    def __init__(
        self, url: str, request: bytes, result: LoadResult, cap: int, send_timeout_s: float
    ) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port
        self.request = request
        self.result = result
        self.cap = cap
        self.send_timeout_s = send_timeout_s
        self.due: asyncio.Queue[float | None] = asyncio.Queue()
        self.connections: list[asyncio.Task[None]] = []
        self.idle = 0
        self.opened = 0
        self.t0 = 0.0

    def add_connection(self) -> None:
        self.connections.append(asyncio.ensure_future(self._connection()))

    def count(self, status: int, note: str = "") -> None:
        result = self.result
        result.statuses[status] = result.statuses.get(status, 0) + 1
        if note and len(result.error_samples) < 5:
            result.error_samples.append(note)

    async def _connection(self) -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        latencies = self.result.latencies_ms
        try:
            with contextlib.suppress(OSError):  # if not, opened again for the first request
                reader, writer = await asyncio.open_connection(self.host, self.port)
            self.opened += 1
            while True:
                self.idle += 1
                try:
                    scheduled = await self.due.get()
                finally:
                    self.idle -= 1
                if scheduled is None:
                    self.due.task_done()
                    return
                try:
                    if writer is None:
                        reader, writer = await asyncio.open_connection(self.host, self.port)
                    late = time.perf_counter() - (self.t0 + scheduled)
                    if late > self.send_timeout_s:
                        self.count(NOT_SENT, f"not sent within {self.send_timeout_s:g} s")
                        continue
                    assert reader is not None
                    writer.write(self.request)
                    self.result.send_lag_ms.append(late * 1000)
                    status, body = await read_response(reader)
                    latencies.append((time.perf_counter() - self.t0 - scheduled) * 1000)
                    self.count(status, "" if status == 200 else f"{status} {body[:300]!r}")
                except (OSError, asyncio.IncompleteReadError) as exc:
                    self.count(NO_ANSWER, f"connection: {exc!r}")
                    if writer is not None:
                        writer.close()
                    reader = writer = None
                finally:
                    self.due.task_done()
        finally:
            if writer is not None:
                writer.close()


async def open_loop(
    url: str,
    path: str,
    body: bytes,
    *,
    rate_qps: float,
    duration_s: float,
    connections: int = 32,
    max_connections: int = 512,
    send_timeout_s: float = 1.0,
    seed: int = 0,
    drain_s: float = 10.0,
    headers: Mapping[str, str] | None = None,
) -> LoadResult:
    """Poisson arrivals at ``rate_qps`` for ``duration_s``, each sent at its scheduled
    time on a free keep-alive connection (``connections`` opened first, more up to
    ``max_connections`` while requests wait and none is free). Latency runs from the
    scheduled send time, so a slow server is not excused by a client that waited for
    it (no coordinated omission). A request no connection could send within
    ``send_timeout_s`` of its time counts as an error (status 0); one whose connection
    failed as status 1; what is unanswered ``drain_s`` after the last send as status 1.
    ``concurrency`` of the result is the number of connections opened; ``send_lag_ms``
    how late each request left (the event loop wakes up to a millisecond late, so
    that much of each latency is the generator's)."""
    schedule = poisson_schedule(rate_qps, duration_s, np.random.default_rng(seed))
    result = LoadResult(concurrency=0, wall_s=0.0)
    pool = _OpenLoop(
        url, build_request(url, path, body, headers), result, max_connections, send_timeout_s
    )
    for _ in range(min(connections, max_connections)):
        pool.add_connection()
    opening = time.perf_counter() + 5.0
    while pool.opened < len(pool.connections) and time.perf_counter() < opening:
        await asyncio.sleep(0.005)  # the first connections open before the clock starts
    pool.t0 = t0 = time.perf_counter()
    i, n = 0, len(schedule)
    while i < n:
        now = time.perf_counter() - t0
        while i < n and schedule[i] <= now:
            pool.due.put_nowait(float(schedule[i]))
            i += 1
        opening_now = len(pool.connections) - pool.opened
        waiting = pool.due.qsize() - pool.idle - opening_now
        for _ in range(min(max(waiting, 0), pool.cap - len(pool.connections))):
            pool.add_connection()
        if i < n:
            await asyncio.sleep(max(float(schedule[i]) - (time.perf_counter() - t0), 0.0))
    drained = True
    try:
        await asyncio.wait_for(pool.due.join(), timeout=drain_s + send_timeout_s)
    except TimeoutError:
        drained = False
    result.wall_s = max(time.perf_counter() - t0, duration_s)
    if drained:
        for _ in pool.connections:
            pool.due.put_nowait(None)
        await asyncio.wait(pool.connections, timeout=1.0)
    for task in pool.connections:
        task.cancel()
    await asyncio.gather(*pool.connections, return_exceptions=True)
    missing = n - sum(result.statuses.values())
    if missing > 0:
        result.statuses[NO_ANSWER] = result.statuses.get(NO_ANSWER, 0) + missing
        if len(result.error_samples) < 5:
            result.error_samples.append(f"{missing} unanswered {drain_s:g} s after the last send")
    result.concurrency = len(pool.connections)
    return result


# -- a capacity ramp: ascending rates until one misses


DEFAULT_RATES = (250.0, 500.0, 1000.0, 1500.0, 2000.0, 2500.0, 3000.0, 4000.0)
RAMP_P99_MS = 20.0


def step_passes(p99_ms: float, errors: int, p99_limit_ms: float = RAMP_P99_MS) -> bool:
    """A rate passes with no error and its p99 within the limit (NaN fails)."""
    return errors == 0 and p99_ms <= p99_limit_ms


def ramp_capacity(
    steps: list[tuple[float, float, int]], p99_limit_ms: float = RAMP_P99_MS
) -> tuple[float, float | None]:
    """Given ``(rate, p99_ms, errors)`` per rate in the order run: the capacity (the
    highest rate that passed before the first that did not; 0 if the first failed) and
    the rate that stopped the ramp (None if none did)."""
    capacity = 0.0
    for rate, p99_ms, errors in steps:
        if not step_passes(p99_ms, errors, p99_limit_ms):
            return capacity, rate
        capacity = max(capacity, rate)
    return capacity, None


Measure = Callable[[], Callable[[int], dict[str, Any]]]


async def capacity_ramp(
    url: str,
    path: str,
    body: bytes,
    *,
    rates: Sequence[float] = DEFAULT_RATES,
    step_s: float = 3.0,
    p99_limit_ms: float = RAMP_P99_MS,
    seed: int = 0,
    measure: Measure | None = None,
    **open_kwargs: Any,
) -> dict[str, Any]:
    """:func:`open_loop` at each of ``rates`` (ascending) for ``step_s``, stopping at
    the first whose p99 exceeds ``p99_limit_ms`` or that had any error; the capacity is
    the highest rate that passed. Each step records the load generator's own CPU per
    answered query (``client_cpu_ms_per_query``), and ``measure``'s figures if given
    (called before the step; what it returns is called after it with the number
    answered)."""
    steps: list[dict[str, Any]] = []
    for k, rate in enumerate(rates):
        finish = measure() if measure is not None else None
        cpu_before = _own_cpu_s()
        load = await open_loop(
            url, path, body, rate_qps=rate, duration_s=step_s, seed=seed + k, **open_kwargs
        )
        client_ms = (_own_cpu_s() - cpu_before) * 1000
        step: dict[str, Any] = {"rate_qps": rate, **load.summary()}
        step["connections"] = step.pop("concurrency")
        step["client_cpu_ms_per_query"] = round(client_ms / max(load.ok, 1), 4)
        if load.send_lag_ms:
            step["send_lag_p50_ms"] = round(float(np.percentile(load.send_lag_ms, 50)), 3)
            step["send_lag_p99_ms"] = round(float(np.percentile(load.send_lag_ms, 99)), 3)
        if load.error_samples:
            step["error_samples"] = load.error_samples[:3]
        if finish is not None:
            step["procs"] = finish(load.ok)
        step["passed"] = step_passes(load.percentile_ms(99), load.errors, p99_limit_ms)
        steps.append(step)
        if not step["passed"]:
            break
    capacity, stopped_at = ramp_capacity(
        [(s["rate_qps"], s["p99_ms"], s["errors"]) for s in steps], p99_limit_ms
    )
    return {
        "capacity_qps": capacity,
        "stopped_at_qps": stopped_at,
        "p99_limit_ms": p99_limit_ms,
        "step_s": step_s,
        "steps": steps,
    }


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime

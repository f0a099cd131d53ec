"""Open-loop model-less load for the fault bench, and what became of every query.

Queries leave at a fixed rate whatever the answers do (a fault must not slow the
sender, or it would hide what it breaks), each with a deadline the gateway is told
(``timeout_ms``) and a client time-out five seconds past it: a query with no answer by
then is *lost*. The loop runs on a thread of its own; each query is one HTTP/1.1
request on a connection of its own (:func:`post_json`, with bench/loadgen.py's request
and response helpers).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import multiprocessing
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from bench.loadgen import build_request, read_response

LOST = "lost"  # the code of a query with no answer by its deadline + LOST_AFTER_S
LOST_AFTER_S = 5.0


@dataclass(frozen=True, slots=True)
class Shot:
    """One query: when it left and came back (``time.monotonic()``) and how."""

    sent: float
    done: float
    status: int  # 0: no HTTP answer
    code: str  # "" for an answer; the error code, an httpx error's name, or LOST
    variant: str
    label: int
    row: int
    why: str = ""  # for a lost query, the client's exception (which phase timed out)
    late_ms: float = 0.0  # how far behind its schedule the load sent it

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass
class OpenLoad:
    """``rate_qps`` model-less queries a second to ``url``, one validation row each."""

    url: str
    app: str
    inputs: np.ndarray
    rate_qps: float
    slo_ms: float
    deadline_ms: float
    min_accuracy: float
    shots: list[Shot] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> OpenLoad:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sending and wait until every query sent has its outcome (one still
        unanswered when the loop gives up waiting is counted lost, never left out)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.deadline_ms / 1000 + LOST_AFTER_S + 30)

    def answered_since(self, moment: float) -> int:
        with self._lock:
            return sum(s.ok for s in self.shots if s.sent >= moment)

    def wait_good(self, moment: float, count: int = 20, timeout_s: float = 120) -> float:
        """Wait for ``count`` answers to queries sent after ``moment``."""
        deadline = time.monotonic() + timeout_s
        while self.answered_since(moment) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {count} answers in {timeout_s:.0f} s: {self.codes()}")
            time.sleep(0.1)
        return time.monotonic()

    def codes(self) -> Counter[str]:
        with self._lock:
            return Counter(s.code or "ok" for s in self.shots)

    async def _run(self) -> None:
        wait_s = self.deadline_ms / 1000 + LOST_AFTER_S
        path = f"/v1/apps/{self.app}/infer"
        tasks: set[asyncio.Task[None]] = set()
        period = 1.0 / self.rate_qps
        start = time.monotonic()
        n = 0
        while not self._stop.is_set():
            due = start + n * period
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            late_ms = max(0.0, time.monotonic() - due) * 1000
            one = self._one(path, n % len(self.inputs), late_ms, wait_s)
            task = asyncio.create_task(one)
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            n += 1
        if tasks:
            await asyncio.wait(tasks)  # each ends by its own time-out

    async def _one(self, path: str, row: int, late_ms: float, wait_s: float) -> None:
        body = {
            "inputs": self.inputs[row : row + 1].tolist(),
            "latency_ms": self.slo_ms,
            "min_accuracy": self.min_accuracy,
            "timeout_ms": self.deadline_ms,
        }
        sent = time.monotonic()
        status, code, variant, label, why = 0, LOST, "", -1, ""
        try:
            async with asyncio.timeout(wait_s):
                status, payload = await post_json(self.url, path, body)
            code = ""
            doc: dict[str, Any] = json.loads(payload)
            if status == 200:
                variant, label = str(doc["variant"]), int(doc["labels"][0])
            else:
                code = str(doc.get("error", {}).get("code", f"http_{status}"))
        except TimeoutError:
            code, why = LOST, f"no answer in {wait_s:g} s"
        except ConnectionRefusedError:
            code = "ConnectError"
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            code = "ReadError" if status == 0 else type(exc).__name__
        finally:
            shot = Shot(sent, time.monotonic(), status, code, variant, label, row, why, late_ms)
            with self._lock:
                self.shots.append(shot)


async def post_json(url: str, path: str, body: Any) -> tuple[int, bytes]:
    """One POST on a connection of its own, closed after the answer: the status and the
    body. No pool: in an open loop every query is its own client, and a pool of the
    thousands of connections a stalled server leaves waiting cost the load process more
    CPU per query than the server spent (httpx's pool scans its connections for each
    request), and its per-phase time-outs did not bound a query's time: queries were
    held 20-60 s where each phase's limit was 7 s."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(build_request(url, path, json.dumps(body).encode()))
        await writer.drain()
        return await read_response(reader)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def _load_process(config: dict[str, Any], warm: Any, stop: Any, out: Any) -> None:
    load = OpenLoad(**config).start()
    load.wait_good(time.monotonic(), timeout_s=300)
    warm.set()
    stop.wait()
    load.stop()
    out.send([tuple(dataclasses.astuple(s)) for s in load.shots])
    out.close()


class LoadProcess:
    """An :class:`OpenLoad` in a process of its own: in the bench's process it would
    share the interpreter lock with the moto server and measure that. ``start`` returns
    once 20 queries were answered; ``stop`` returns every query's outcome
    (``time.monotonic()`` is the same clock in both processes)."""

    def __init__(self, **config: Any) -> None:
        context = multiprocessing.get_context("spawn")
        self._warm, self._stop = context.Event(), context.Event()
        self._recv, send = context.Pipe(duplex=False)
        self._process = context.Process(
            target=_load_process, args=(config, self._warm, self._stop, send), daemon=True
        )
        self._timeout_s = float(config["deadline_ms"]) / 1000 + LOST_AFTER_S + 60

    def start(self) -> LoadProcess:
        self._process.start()
        if not self._warm.wait(300):
            self._process.kill()
            raise RuntimeError("the load never got 20 answers in 300 s")
        return self

    def stop(self) -> list[Shot]:
        self._stop.set()
        if not self._recv.poll(self._timeout_s):
            self._process.kill()
            raise RuntimeError("the load process did not report its queries")
        shots = [Shot(*row) for row in self._recv.recv()]
        self._process.join(30)
        return shots


# --------------------------------------------------------------------- the figures


def query_figures(
    shots: Sequence[Shot],
    references: Mapping[str, np.ndarray],
    *,
    fault_end: float,
) -> dict[str, Any]:
    """Sent, answered correctly (the answering variant's own label for that row),
    refused by code, lost, and seconds from the fault's end to the first good answer to
    a query sent after it."""
    correct = sum(
        s.ok and s.variant in references and int(references[s.variant][s.row]) == s.label
        for s in shots
    )
    answered = sum(s.ok for s in shots)
    refused = Counter(s.code for s in shots if not s.ok and s.code != LOST)
    after = [s.done for s in shots if s.ok and s.sent >= fault_end]
    return {
        "sent": len(shots),
        "answered": answered,
        "answered_correctly": correct,
        "refused": dict(sorted(refused.items())),
        "lost": sum(s.code == LOST for s in shots),
        "recovery_s": round(min(after) - fault_end, 2) if after else None,
    }


def job_figures(chunks: Sequence[Any], output_exists: Callable[[Any], bool]) -> dict[str, int]:
    """Items written once, twice (or more) and missing, from each chunk's count of output
    writes (a chunk run again after its worker died writes its output again). A chunk
    done with no write recorded found its output already there, written by a worker
    that died before recording it (workers/jobs.py): once, if the object is there
    (``output_exists``), else missing; ``items_found`` counts those chunks' items."""
    counts = Counter[str]()
    for chunk in chunks:
        writes = int(chunk.output_writes)
        if writes == 0 and output_exists(chunk):
            counts["items_found"] += int(chunk.items)
            writes = 1
        kind = "items_missing" if writes == 0 else "items_once" if writes == 1 else "items_twice"
        counts[kind] += int(chunk.items)
    return {k: counts[k] for k in ("items_once", "items_twice", "items_missing", "items_found")}

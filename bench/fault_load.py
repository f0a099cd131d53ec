"""Open-loop model-less load for the fault bench, and what became of every query.

Queries leave at a fixed rate whatever the answers do (a fault must not slow the
sender, or it would hide what it breaks), each with a deadline the gateway is told
(``timeout_ms``) and a client time-out five seconds past it: a query with no answer by
then is *lost*. The loop runs on a thread of its own with one ``httpx.AsyncClient``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import multiprocessing
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

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
        # room for every query that may be waiting at once, so that the client's own
        # pool never holds one back (at 400 connections, 200 q/s of queries waiting out
        # 2 s deadlines filled it, and queries that never left were counted lost)
        wait_s = self.deadline_ms / 1000 + LOST_AFTER_S
        most = max(64, math.ceil(self.rate_qps * wait_s * 1.5))
        limits = httpx.Limits(max_connections=most, max_keepalive_connections=most)
        timeout = httpx.Timeout(wait_s)
        async with httpx.AsyncClient(base_url=self.url, limits=limits, timeout=timeout) as client:
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
                task = asyncio.create_task(self._one(client, n % len(self.inputs), late_ms))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                n += 1
            if tasks:
                _done, late = await asyncio.wait(tasks, timeout=wait_s + 10)
                for task in late:  # no answer, not even a time-out: lost all the same
                    task.cancel()
                if late:
                    await asyncio.wait(late)

    async def _one(self, client: httpx.AsyncClient, row: int, late_ms: float) -> None:
        body = {
            "inputs": self.inputs[row : row + 1].tolist(),
            "latency_ms": self.slo_ms,
            "min_accuracy": self.min_accuracy,
            "timeout_ms": self.deadline_ms,
        }
        sent = time.monotonic()
        status, code, variant, label, why = 0, LOST, "", -1, "cancelled"
        try:
            response = await client.post(f"/v1/apps/{self.app}/infer", json=body)
            status, code = response.status_code, ""
            doc: dict[str, Any] = response.json()
            if status == 200:
                variant, label = str(doc["variant"]), int(doc["labels"][0])
            else:
                code = str(doc.get("error", {}).get("code", f"http_{status}"))
        except httpx.TimeoutException as exc:
            code, why = LOST, type(exc).__name__
        except (httpx.HTTPError, ValueError) as exc:
            code = type(exc).__name__
        finally:  # cancelled at the end with no answer: lost
            if code != LOST:
                why = ""
            shot = Shot(sent, time.monotonic(), status, code, variant, label, row, why, late_ms)
            with self._lock:
                self.shots.append(shot)


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

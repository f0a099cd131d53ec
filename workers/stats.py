"""Counters of one loaded variant, filled by its replicas, read by the monitor."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class WindowStats:
    """What happened to one variant on this worker during one monitoring window."""

    window_s: float
    arrived: int
    completed: int
    errors: int
    expired: int
    outstanding: int
    batches: int
    busy_ms: float
    mean_batch: float
    p50_ms: float
    p99_ms: float
    model_p50_ms: float

    @property
    def qps(self) -> float:
        return self.arrived / self.window_s if self.window_s > 0 else 0.0


class VariantStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since = time.monotonic()
        self._arrived = 0
        self._completed = 0
        self._errors = 0
        self._expired = 0
        self._outstanding = 0
        self._batch_sizes: list[int] = []
        self._latency_ms: list[float] = []
        self._model_ms: list[float] = []
        self.total_completed = 0

    def arrived(self, count: int) -> None:
        with self._lock:
            self._arrived += count
            self._outstanding += count

    def finished_batch(
        self, size: int, model_ms: float, latencies_ms: list[float], rows: int | None = None
    ) -> None:
        """A batch of ``size`` queries answered, ``rows`` inputs in all (one a query unless
        given). The batch's size is counted in rows, as profiles measure it and as
        ``max_batch`` limits it: four queries of four rows are a batch of 16, and a
        replica running them back to back is saturated, not running batches of 4."""
        with self._lock:
            self._completed += size
            self.total_completed += size
            self._outstanding -= size
            self._batch_sizes.append(size if rows is None else rows)
            self._model_ms.append(model_ms)
            self._latency_ms.extend(latencies_ms)

    def released(self, count: int) -> None:
        """``count`` queries counted in are no longer held and were not answered: the
        connection they came on was lost (the broker delivers them again) or they were
        put back. Without this a lost connection left them held for ever, a backlog
        that paused every batch job on the worker."""
        with self._lock:
            self._outstanding -= count

    def failed(self, count: int, *, expired: bool = False) -> None:
        with self._lock:
            self._outstanding -= count
            if expired:
                self._expired += count
            else:
                self._errors += count

    def collect(self) -> WindowStats:
        """Summarise the window since the last call and start a new one."""
        with self._lock:
            now = time.monotonic()
            window_s = max(now - self._since, 1e-6)
            latency = np.asarray(self._latency_ms) if self._latency_ms else None
            model = np.asarray(self._model_ms) if self._model_ms else None
            stats = WindowStats(
                window_s=window_s,
                arrived=self._arrived,
                completed=self._completed,
                errors=self._errors,
                expired=self._expired,
                outstanding=max(self._outstanding, 0),
                batches=len(self._batch_sizes),
                busy_ms=float(sum(self._model_ms)),
                mean_batch=float(np.mean(self._batch_sizes)) if self._batch_sizes else 0.0,
                p50_ms=float(np.percentile(latency, 50)) if latency is not None else 0.0,
                p99_ms=float(np.percentile(latency, 99)) if latency is not None else 0.0,
                model_p50_ms=float(np.percentile(model, 50)) if model is not None else 0.0,
            )
            self._since = now
            self._arrived = self._completed = self._errors = self._expired = 0
            self._batch_sizes, self._latency_ms, self._model_ms = [], [], []
            return stats

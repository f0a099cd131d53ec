"""Measure one variant: accuracy, latency per batch size, memory, load time.

As in INFaaS, a variant's latency is profiled at a handful of batch sizes and a
straight line ``latency(b) = slope * b + intercept`` is fitted by least squares; the
selector interpolates between measured sizes and extrapolates with the line. All
latencies are in milliseconds, timed with ``time.perf_counter_ns``.

The pure helpers (:func:`fit_latency`, :func:`choose_best_batch`) take plain dicts so
they can be tested without running any model.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from queues.heap import settle_heap
from registry.types import Profile
from workers.runtimes.base import Runtime

Predict = Callable[[np.ndarray], np.ndarray]

_NS_PER_MS = 1_000_000.0


@dataclass(frozen=True)
class LatencyStats:
    p50_ms: float
    p99_ms: float
    runs: int


# timed runs per batch size before the time budget may end the measurement
MIN_RUNS = 20


def measure_latency(
    predict: Predict,
    sample: np.ndarray,
    *,
    min_runs: int = MIN_RUNS,
    max_runs: int = 2000,
    budget_s: float = 0.5,
    warmup: int = 3,
) -> LatencyStats:
    """Call ``predict(sample)`` repeatedly and report the p50 and p99 latency.

    After ``warmup`` untimed calls it runs at least ``min_runs`` timed calls, then keeps
    going while under ``budget_s`` seconds of wall time, up to ``max_runs`` calls.
    """
    if min_runs < 1 or max_runs < min_runs:
        raise ValueError(f"need 1 <= min_runs <= max_runs, got {min_runs}, {max_runs}")
    for _ in range(max(0, warmup)):
        predict(sample)
    budget_ns = budget_s * 1e9
    samples_ns: list[int] = []
    start = time.perf_counter_ns()
    while len(samples_ns) < max_runs:
        if len(samples_ns) >= min_runs and time.perf_counter_ns() - start >= budget_ns:
            break
        t0 = time.perf_counter_ns()
        predict(sample)
        samples_ns.append(time.perf_counter_ns() - t0)
    ms = np.asarray(samples_ns, dtype=np.float64) / _NS_PER_MS
    return LatencyStats(
        p50_ms=float(np.percentile(ms, 50)),
        p99_ms=float(np.percentile(ms, 99)),
        runs=len(samples_ns),
    )


def fit_latency(latency_ms: dict[int, float]) -> tuple[float, float]:
    """Least-squares ``(slope_ms, intercept_ms)`` of latency against batch size.

    With a single measured size the line is flat (slope 0, intercept that latency).
    """
    if not latency_ms:
        raise ValueError("no latencies to fit")
    sizes = np.asarray(sorted(latency_ms), dtype=np.float64)
    values = np.asarray([latency_ms[int(b)] for b in sizes], dtype=np.float64)
    if len(sizes) == 1:
        return 0.0, float(values[0])
    mean_b, mean_l = sizes.mean(), values.mean()
    slope = float(((sizes - mean_b) * (values - mean_l)).sum() / ((sizes - mean_b) ** 2).sum())
    intercept = float(mean_l - slope * mean_b)
    return slope, intercept


def choose_best_batch(latency_ms: dict[int, float], *, tolerance: float = 0.05) -> int:
    """The smallest profiled batch whose throughput ``1000 * b / latency(b)`` is within
    ``tolerance`` (a fraction) of the best throughput of any profiled batch."""
    if not latency_ms:
        raise ValueError("no latencies to choose from")
    if not 0.0 <= tolerance < 1.0:
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance}")
    throughput = {b: 1000.0 * b / max(lat, 1e-9) for b, lat in latency_ms.items()}
    best = max(throughput.values())
    return min(b for b, qps in throughput.items() if qps >= (1.0 - tolerance) * best)


def top1_accuracy(
    predict: Predict, inputs: np.ndarray, labels: np.ndarray, batch: int = 64
) -> float:
    """Fraction of rows whose highest-scoring output column equals the label."""
    if len(inputs) != len(labels):
        raise ValueError(f"{len(inputs)} inputs but {len(labels)} labels")
    if len(inputs) == 0:
        raise ValueError("no validation inputs")
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    correct = 0
    for start in range(0, len(inputs), batch):
        scores = np.asarray(predict(inputs[start : start + batch]))
        predicted = scores.reshape(scores.shape[0], -1).argmax(axis=1)
        correct += int((predicted == np.asarray(labels[start : start + batch])).sum())
    return correct / len(inputs)


def cpu_model_name() -> str:
    """The CPU's marketing name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def usable_cores() -> int:
    """How many cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# loads of a variant whose memory is measured (the median counts); see loaded_bytes
MEMORY_LOADS = 3


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, which hands freed heap pages back to the system; None
    where the C library has none (musl, macOS)."""
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None
    return trim


def _settled_rss_bytes() -> int:
    """Resident memory once garbage is collected and freed heap pages are handed back,
    so that what is measured next cannot hide in memory an earlier load freed."""
    import psutil

    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
    return int(psutil.Process(os.getpid()).memory_info().rss)


def loaded_bytes(
    load: Callable[[], Runtime], sample: np.ndarray, *, loads: int = MEMORY_LOADS
) -> int:
    """The resident memory one loaded copy of a variant holds once it has run ``sample``
    (its weights, the session's buffers and its arena at that batch): the median over
    ``loads`` loads of the growth from a settled state, each copy closed before the next.

    Call it in a process that has loaded a variant before: what the first load of a
    process pays once (thread pools, kernel registries) is no variant's memory."""
    # Each settling runs a full collection. Freezing what exists first keeps those passes
    # to what the loads allocate: in a process holding a large heap (the registration
    # worker's, a test run's) they took 0.2 s each, nearly all of a small variant's
    # profile. A process that had frozen its heap (a serving one) keeps it frozen.
    frozen_before = gc.get_freeze_count()
    settle_heap()
    growth: list[int] = []
    try:
        for _ in range(max(1, loads)):
            before = _settled_rss_bytes()
            runtime = load()
            try:
                runtime.predict(sample)
                growth.append(max(0, _settled_rss_bytes() - before))
            finally:
                runtime.close()
                del runtime
    finally:
        if frozen_before == 0:
            gc.unfreeze()
    return int(np.median(growth))


def _batch_sample(inputs: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` rows drawn from ``inputs`` (repeating rows when there are fewer)."""
    index = rng.choice(len(inputs), size=size, replace=size > len(inputs))
    return np.ascontiguousarray(inputs[index])


def profile_variant(
    load: Callable[[], Runtime],
    artifact_bytes: int,
    inputs: np.ndarray,
    labels: np.ndarray,
    *,
    batch_sizes: Sequence[int] = (1, 4, 8, 16, 32),
    budget_s_per_batch: float = 0.5,
    min_runs_per_batch: int = MIN_RUNS,
    accuracy: float | None = None,
) -> Profile:
    """Load a variant with ``load`` and measure it on the validation set.

    ``accuracy``: the top-1 accuracy already measured for a variant that computes the
    same outputs (the same artifact and runtime options but for the thread count); None
    measures it here.

    ``load_ms`` is the time of ``load()`` plus one warm-up prediction; ``memory_mb`` is the
    resident memory a loaded copy holds after a batch of the largest size
    (:func:`loaded_bytes`, measured after the profiled copy is closed), never less than
    the weights the runtime holds or the artifact's size; ``accuracy`` is top-1 over the
    whole validation set; latency is
    p50/p99 per batch size on rows drawn from the validation inputs, from at least
    ``min_runs_per_batch`` runs and then as many as ``budget_s_per_batch`` allows.
    """
    if len(inputs) == 0:
        raise ValueError("no validation inputs to profile with")
    sizes = sorted({int(b) for b in batch_sizes})
    if not sizes or sizes[0] < 1:
        raise ValueError(f"batch sizes must be positive, got {list(batch_sizes)}")
    rng = np.random.default_rng(0)

    t0 = time.perf_counter_ns()
    runtime = load()
    try:
        runtime.predict(_batch_sample(inputs, 1, rng))
        load_ms = (time.perf_counter_ns() - t0) / _NS_PER_MS
        weights_bytes = int(runtime.memory_bytes())

        if accuracy is None:
            accuracy = top1_accuracy(runtime.predict, inputs, labels)

        p50: dict[int, float] = {}
        p99: dict[int, float] = {}
        for size in sizes:
            stats = measure_latency(
                runtime.predict,
                _batch_sample(inputs, size, rng),
                budget_s=budget_s_per_batch,
                min_runs=min_runs_per_batch,
            )
            p50[size] = stats.p50_ms
            p99[size] = stats.p99_ms
    finally:
        runtime.close()
        del runtime
    # the profiled copy is closed, so a GPU's peak is one copy's; this process has paid
    # its one-time costs with it, so they are not counted
    resident = loaded_bytes(load, _batch_sample(inputs, sizes[-1], rng))
    memory_bytes = max(resident, weights_bytes, int(artifact_bytes))

    slope, intercept = fit_latency(p50)
    saturation_qps = max(1000.0 * b / max(lat, 1e-9) for b, lat in p50.items())
    return Profile(
        accuracy=accuracy,
        metric="top1",
        latency_ms=p50,
        latency_p99_ms=p99,
        latency_slope_ms=slope,
        latency_intercept_ms=intercept,
        memory_mb=memory_bytes / (1024.0 * 1024.0),
        load_ms=load_ms,
        saturation_qps=saturation_qps,
        artifact_bytes=int(artifact_bytes),
        max_batch=max(p50),
        best_batch=choose_best_batch(p50),
        profiled_on=cpu_model_name(),
        cores=usable_cores(),
    )

"""Arrival processes for the simulator: trace files and the paper's synthetic loads.

A trace is either a CSV with a timestamp column (one row per request, e.g. the Azure LLM
traces in ``../shared/traces``; Patel et al., "Splitwise", ISCA 2024, and the Azure
Public Dataset, CC-BY-4.0) or a plain text file of whitespace-separated integers, one per
second, each the number of queries in that second. The format is detected by content.
Everything ends as per-second counts, optionally multiplied (``rate_scale``), compressed
in time (``time_scale``) and cut (``duration_s``); arrival times within a second are drawn
uniformly with a seeded generator, so a run is deterministic for its seed.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from queues.errors import InvalidRequest

WORKLOADS = ("steady-low", "steady-high", "fluctuating")


@dataclass(frozen=True)
class Arrivals:
    """Queries per second, second by second, of the whole mix."""

    name: str
    per_second: np.ndarray  # int64, one entry per simulated second

    @property
    def duration_s(self) -> int:
        return len(self.per_second)

    @property
    def total(self) -> int:
        return int(self.per_second.sum())

    @property
    def peak_qps(self) -> float:
        return float(self.per_second.max()) if len(self.per_second) else 0.0

    def times_s(self, rng: np.random.Generator) -> np.ndarray:
        """Sorted arrival times (seconds), uniform within each second."""
        seconds = np.repeat(np.arange(self.duration_s, dtype=np.float64), self.per_second)
        times: np.ndarray = seconds + _within(self.per_second, rng)
        return times


def _within(per_second: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Offsets inside each second, sorted within the second."""
    parts = [np.sort(rng.random(int(n))) for n in per_second]
    return np.concatenate(parts) if parts else np.zeros(0)


def _parse_timestamp(value: str) -> float:
    value = value.strip()
    try:
        return float(value)
    except ValueError:
        pass
    # "2023-11-16 18:15:46.6805900": Python takes at most 6 fractional digits
    if "." in value:
        head, frac = value.split(".", 1)
        value = f"{head}.{frac[:6]}"
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError as exc:
        raise InvalidRequest(f"cannot read the timestamp {value!r}") from exc


def _csv_counts(path: Path, time_column: str) -> np.ndarray:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or time_column not in reader.fieldnames:
            raise InvalidRequest(
                f"{path} has no column {time_column!r} (columns: {reader.fieldnames}); "
                "name the timestamp column with --time-column"
            )
        stamps = np.array([_parse_timestamp(row[time_column]) for row in reader])
    if not len(stamps):
        raise InvalidRequest(f"{path} holds no requests")
    offsets = np.sort(stamps - stamps.min())
    return np.bincount(offsets.astype(np.int64))


def _integer_counts(path: Path, text: str) -> np.ndarray:
    try:
        values = [int(token) for token in text.split()]
    except ValueError as exc:
        raise InvalidRequest(
            f"{path} is neither a CSV with a header nor whitespace-separated integers"
        ) from exc
    if any(v < 0 for v in values):
        raise InvalidRequest(f"{path} holds a negative count; counts are queries per second")
    return np.asarray(values, dtype=np.int64)


def load_trace(path: Path, *, time_column: str = "TIMESTAMP") -> np.ndarray:
    """Per-second counts of a trace file, format detected by content."""
    if not path.exists():
        raise InvalidRequest(f"trace file {path} does not exist")
    text = path.read_text()
    first = text.lstrip().split("\n", 1)[0]
    if any(ch.isalpha() for ch in first) or "," in first:
        return _csv_counts(path, time_column)
    return _integer_counts(path, text)


def rescale(
    counts: np.ndarray,
    *,
    rate_scale: float = 1.0,
    time_scale: float = 1.0,
    duration_s: float | None = None,
) -> np.ndarray:
    """Multiply each second's count by ``rate_scale``; compress time by ``time_scale``
    (``time_scale`` seconds of the trace become one); keep the first ``duration_s``."""
    if rate_scale <= 0 or time_scale <= 0:
        raise InvalidRequest("rate and time scales must be > 0")
    if time_scale != 1.0:
        edges = np.floor(np.arange(len(counts)) / time_scale).astype(np.int64)
        counts = np.bincount(edges, weights=counts).astype(np.int64)
    scaled = counts.astype(np.float64) * rate_scale
    # carry the fractions from second to second so the total is preserved
    totals = np.floor(np.cumsum(scaled) + 1e-9)
    out = np.diff(np.concatenate([[0.0], totals])).astype(np.int64)
    if duration_s is not None:
        out = out[: max(math.ceil(duration_s), 0)]
    return out


def synthetic(name: str, *, duration_s: int, low_qps: float, high_qps: float,
              seed: int = 0) -> np.ndarray:  # fmt: skip
    """The paper's three loads: steady low, steady high, strongly fluctuating (Poisson
    counts around the rate; the fluctuating rate swings between low and high and back
    four times a run, at most once every 10 minutes, with sharp peaks)."""
    if name not in WORKLOADS:
        raise InvalidRequest(f"workload must be one of {', '.join(WORKLOADS)}, got {name!r}")
    rng = np.random.default_rng(seed)
    t = np.arange(duration_s, dtype=np.float64)
    if name == "steady-low":
        rate = np.full(duration_s, low_qps)
    elif name == "steady-high":
        rate = np.full(duration_s, high_qps)
    else:
        period = max(duration_s / 4.0, 600.0)
        wave = 0.5 * (1 + np.sin(2 * np.pi * t / period))
        rate = low_qps + (high_qps - low_qps) * wave**3
    return rng.poisson(rate).astype(np.int64)

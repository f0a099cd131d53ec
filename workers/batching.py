"""Pure helpers of dynamic batching: how to group waiting queries into model batches."""

from __future__ import annotations

from collections.abc import Callable


def group_rows(sizes: list[int], max_rows: int) -> list[slice]:
    """Split consecutive queries (``sizes`` = rows per query) into groups of at most
    ``max_rows`` rows, keeping order. A query larger than ``max_rows`` forms a group of its
    own rather than being split (the gateway keeps queries within a variant's limit)."""
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    groups: list[slice] = []
    start, rows = 0, 0
    for index, size in enumerate(sizes):
        if rows and rows + size > max_rows:
            groups.append(slice(start, index))
            start, rows = index, 0
        rows += size
    if start < len(sizes):
        groups.append(slice(start, len(sizes)))
    return groups


def consumer_prefetch(max_batch: int, *, bound: int = 256) -> int:
    """Messages a replica may hold unacknowledged: its batch limit, bounded."""
    return max(1, min(max_batch, bound))


def batch_wait_ms(
    *,
    now_ms: float,
    rows: int,
    limit: int,
    slo_deadlines_ms: list[float],
    latency_ms: Callable[[int], float],
    arrival_qps: float,
    max_wait_ms: float,
) -> float:
    """How long to wait for more queries before running the batch in hand.

    Not at all when the batch is full or nothing else is coming. At most ``max_wait_ms``,
    at most the time the arrival rate needs to fill the batch, and never so long that the
    earliest latency objective in hand would be missed if the batch filled up. And only
    when it pays: the inference time saved by running the expected arrivals together with
    the batch in hand (instead of one by one) must exceed the wait — for a model whose
    per-input cost does not fall with the batch (or is negligible) waiting only adds latency.
    """
    if rows >= limit or arrival_qps <= 0 or max_wait_ms <= 0:
        return 0.0
    wait = min(max_wait_ms, 1000.0 * (limit - rows) / arrival_qps)
    objectives = [d for d in slo_deadlines_ms if d > 0]
    if objectives:
        wait = min(wait, min(objectives) - now_ms - latency_ms(limit))
    if wait <= 0:
        return 0.0
    expected = min(int(arrival_qps * wait / 1000.0), limit - rows)
    if expected < 1:
        return 0.0
    saved = latency_ms(rows) + expected * latency_ms(1) - latency_ms(rows + expected)
    return wait if saved >= wait else 0.0

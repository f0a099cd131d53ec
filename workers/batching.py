"""Pure helpers of dynamic batching: how to group waiting queries into model batches."""

from __future__ import annotations


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
    full_batch_latency_ms: float,
    arrival_qps: float,
    max_wait_ms: float,
) -> float:
    """How long to wait for more queries before running the batch in hand.

    Not at all when the batch is full or nothing else is coming; never so long that the
    earliest latency objective in hand would be missed if the batch filled up (its
    predicted latency at the batch limit); at most the time more arrivals need to fill the
    batch at the current rate, and at most ``max_wait_ms``.
    """
    if rows >= limit or arrival_qps <= 0 or max_wait_ms <= 0:
        return 0.0
    fill_ms = 1000.0 * (limit - rows) / arrival_qps
    wait = min(max_wait_ms, fill_ms)
    objectives = [d for d in slo_deadlines_ms if d > 0]
    if objectives:
        wait = min(wait, min(objectives) - now_ms - full_batch_latency_ms)
    return max(wait, 0.0)

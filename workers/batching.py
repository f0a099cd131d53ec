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

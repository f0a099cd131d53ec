"""How a job's items split into chunks, and the priority of their messages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from queues.errors import InvalidRequest


@dataclass(frozen=True, slots=True)
class InputObject:
    """One input object as read at submission: its rows, and its size to notice a change."""

    key: str
    rows: int
    size_bytes: int


@dataclass(frozen=True, slots=True)
class ChunkPlan:
    index: int
    input_key: str
    row_start: int
    row_stop: int
    first_item: int  # the job-wide index of the chunk's first item

    @property
    def items(self) -> int:
        return self.row_stop - self.row_start


def plan_chunks(objects: Sequence[InputObject], chunk_items: int) -> list[ChunkPlan]:
    """Consecutive rows of each object, at most ``chunk_items`` per chunk; items are
    numbered across objects in the given (key) order. A chunk never spans two objects."""
    if chunk_items < 1:
        raise InvalidRequest(f"chunk_items must be at least 1, got {chunk_items}")
    chunks: list[ChunkPlan] = []
    first = 0
    for obj in objects:
        for start in range(0, obj.rows, chunk_items):
            stop = min(start + chunk_items, obj.rows)
            chunks.append(ChunkPlan(len(chunks), obj.key, start, stop, first + start))
        first += obj.rows
    return chunks


def chunk_priority(deadline: datetime | None, now: datetime) -> int:
    """Message priority on the app's batch queue (0-9): the sooner a job is due, the
    higher; jobs without a deadline come last."""
    if deadline is None:
        return 1
    hours_left = max((deadline - now).total_seconds(), 0.0) / 3600.0
    return max(2, 9 - int(hours_left))

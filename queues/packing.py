"""Packing queries at the gateway: which queries go out as one message, and whose part of
the reply is whose. Pure bookkeeping; :class:`queues.amqp_rpc.AmqpQueryClient` publishes.

Queries for the same variant queue, dtype and row shape that reach the gateway together
(in one event-loop turn, or within the edge-batch window) leave as one message of at
most ``max_rows`` rows, or the fewer its variant's batch allows (the caller's
``max_rows`` for that queue: the worker never runs more rows at once than that batch)
(:func:`queues.messages.pack_queries`); a query alone, or one larger than the limit,
leaves as it came.
"""

from __future__ import annotations

from dataclasses import dataclass

from queues.messages import Query

GroupKey = tuple[str, str, tuple[int, ...]]  # queue, dtype, shape of one row


@dataclass(frozen=True, slots=True)
class Waiting:
    queue: str
    query: Query
    correlation_id: str

    @property
    def rows(self) -> int:
        return len(self.query.inputs)


class Outbox:
    """Queries waiting to be published, grouped by what can share a message."""

    def __init__(self, max_rows: int) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, not {max_rows}")
        self.max_rows = max_rows
        self._groups: dict[GroupKey, list[Waiting]] = {}
        self._rows: dict[GroupKey, int] = {}
        self._limits: dict[GroupKey, int] = {}

    def __len__(self) -> int:
        return sum(len(group) for group in self._groups.values())

    def add(self, queue: str, query: Query, correlation_id: str, *, max_rows: int = 0) -> bool:
        """Hold ``query``; True when the outbox was empty (the caller schedules a flush).
        ``max_rows`` (0: the outbox's own) lowers the rows of the messages for ``queue``."""
        first = not self._groups
        inputs = query.inputs
        key = (queue, inputs.dtype.str, tuple(inputs.shape[1:]))
        if key not in self._limits:
            self._limits[key] = min(max_rows or self.max_rows, self.max_rows)
        self._groups.setdefault(key, []).append(Waiting(queue, query, correlation_id))
        self._rows[key] = self._rows.get(key, 0) + len(inputs)
        return first

    def full(self) -> bool:
        """Some group holds a whole message's rows: no reason to wait longer."""
        return any(rows >= self._limits[key] for key, rows in self._rows.items())

    def take(self) -> list[list[Waiting]]:
        """Everything held, as messages: each a run of one group's queries, in arrival
        order, of at most its limit's rows (a larger query goes alone)."""
        groups, limits = self._groups, self._limits
        self._groups, self._rows, self._limits = {}, {}, {}
        messages: list[list[Waiting]] = []
        for key, waiting in groups.items():
            current: list[Waiting] = []
            rows = 0
            for item in waiting:
                if current and rows + item.rows > limits[key]:
                    messages.append(current)
                    current, rows = [], 0
                current.append(item)
                rows += item.rows
            messages.append(current)
        return messages


class Packs:
    """Packed messages in flight: each pack's members (request id, rows) in order."""

    def __init__(self) -> None:
        self._members: dict[str, dict[str, int]] = {}
        self._pack_of: dict[str, str] = {}

    def __contains__(self, pack_id: object) -> bool:
        return pack_id in self._members

    def __len__(self) -> int:
        return len(self._members)

    def open(self, pack_id: str, members: list[tuple[str, int]]) -> None:
        self._members[pack_id] = dict(members)
        for request_id, _ in members:
            self._pack_of[request_id] = pack_id

    def take(self, pack_id: str) -> list[tuple[str, int]] | None:
        """The pack's members, forgetting the pack (it is answered); None: no such pack."""
        members = self._members.pop(pack_id, None)
        if members is None:
            return None
        for request_id in members:
            self._pack_of.pop(request_id, None)
        return list(members.items())

    def forget_member(self, request_id: str) -> None:
        """A member stopped waiting (answered, timed out, cancelled); a pack with no
        member left is forgotten."""
        pack_id = self._pack_of.pop(request_id, None)
        if pack_id is None:
            return
        members = self._members.get(pack_id)
        if members is not None:
            members.pop(request_id, None)
            if not members:
                del self._members[pack_id]

    def clear(self) -> None:
        self._members.clear()
        self._pack_of.clear()

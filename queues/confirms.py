"""Publisher confirms on one channel: which query each confirm (or nack) is about.

A channel in confirm mode numbers its publishes 1, 2, 3, ...; the broker acks or nacks
them by that delivery tag, one at a time or every tag up to one (``multiple``). Pure
bookkeeping, kept per connection: a new channel starts again at 1."""

from __future__ import annotations

import itertools
from collections import deque


class PublishConfirms:
    def __init__(self) -> None:
        self._unconfirmed: deque[tuple[int, str]] = deque()
        self._tags = itertools.count(1)

    def reset(self) -> None:
        """A new channel: its tags start again at 1, nothing is awaiting confirmation."""
        self._tags = itertools.count(1)
        self._unconfirmed.clear()

    def clear(self) -> None:
        self._unconfirmed.clear()

    def published(self, correlation_id: str) -> None:
        """Every publish on the confirm-mode channel takes the next delivery tag."""
        self._unconfirmed.append((next(self._tags), correlation_id))

    def settle(self, tag: int, *, multiple: bool) -> list[str]:
        """The correlation ids a confirm of ``tag`` settles (in publish order)."""
        settled: list[str] = []
        if multiple:
            while self._unconfirmed and self._unconfirmed[0][0] <= tag:
                settled.append(self._unconfirmed.popleft()[1])
        else:
            for index, (seq, cid) in enumerate(self._unconfirmed):
                if seq == tag:
                    del self._unconfirmed[index]
                    settled.append(cid)
                    break
        return settled

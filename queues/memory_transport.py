"""kombu's in-process memory transport, woken by arrivals instead of polled.

kombu's memory transport keeps its queues in one process and has a consumer look at them,
sleep ``polling_interval``, and look again. The embedded default ran it at 1 ms (what a
query waits for its replica and its answer), and every replica and the gateway's reply
drainer polled at that rate: an idle embedded stack with the demo's 18 replicas spent
73 % of a core doing nothing (14.7 s of CPU over 20 s, all of it in those sleeps).

Here a consumer that finds its queues empty registers for them and waits until a message
is put on one of them, or at most ``FALLBACK_WAIT_S`` (what a message put by another
transport's producer, which wakes no one, can wait). Messages and queues are kombu's own
(one store for the whole process, shared with Celery's embedded app)."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable
from queue import Empty
from time import monotonic
from typing import Any

from kombu.transport import memory

# The longest a consumer sleeps without a wake-up: the delay of a message put by a
# producer on kombu's plain memory transport, which does not wake anyone.
FALLBACK_WAIT_S = 0.05


class _Arrivals:
    """Who waits for which queue; a put wakes the waiters of its queue."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: defaultdict[str, set[threading.Event]] = defaultdict(set)

    def register(self, queues: Iterable[str], wake: threading.Event) -> None:
        with self._lock:
            for queue in queues:
                self._waiting[queue].add(wake)

    def unregister(self, queues: Iterable[str], wake: threading.Event) -> None:
        with self._lock:
            for queue in queues:
                waiters = self._waiting.get(queue)
                if waiters is not None:
                    waiters.discard(wake)
                    if not waiters:
                        del self._waiting[queue]

    def put(self, queue: str) -> None:
        with self._lock:
            waiters = tuple(self._waiting.get(queue, ()))
        for wake in waiters:
            wake.set()

    def waiting(self) -> int:
        """How many (queue, waiter) registrations there are now (for tests)."""
        with self._lock:
            return sum(len(w) for w in self._waiting.values())


ARRIVALS = _Arrivals()


class Channel(memory.Channel):  # type: ignore[misc]  # kombu ships no types
    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        super()._put(queue, message, **kwargs)
        ARRIVALS.put(queue)

    def _put_fanout(
        self, exchange: str, message: Any, routing_key: Any = None, **kwargs: Any
    ) -> None:
        for queue in self._lookup(exchange, routing_key):
            self._put(queue, message, **kwargs)


class Transport(memory.Transport):  # type: ignore[misc]
    Channel = Channel

    def drain_events(self, connection: Any, timeout: float | None = None) -> None:  # noqa: ARG002
        """Deliver one message from any queue this connection consumes; wait for one to
        arrive, at most ``timeout`` seconds (then ``TimeoutError``, as kombu's)."""
        started = monotonic()
        wake = threading.Event()
        registered: set[str] = set()
        try:
            while True:
                # a message already there is taken without a lock or a registration
                wake.clear()  # before looking: a put from here on wakes the wait below
                try:
                    self.cycle.get(self._deliver, timeout=timeout)
                    return
                except Empty:
                    pass
                wait_s = FALLBACK_WAIT_S
                if timeout is not None:
                    left_s = timeout - (monotonic() - started)
                    if left_s <= 0:
                        raise TimeoutError()
                    wait_s = min(wait_s, left_s)
                queues = {q for channel in self.channels for q in channel._active_queues}
                if queues != registered:
                    ARRIVALS.register(queues - registered, wake)
                    ARRIVALS.unregister(registered - queues, wake)
                    registered = queues
                    continue  # look again: a put before the registration woke no one
                wake.wait(wait_s)
        finally:
            ARRIVALS.unregister(registered, wake)

"""What both query clients share: the queries waiting for their reply, and the errors a
client answers with when a query finds no queue or no reply."""

from __future__ import annotations

import asyncio

from queues.errors import DeadlineExceeded, NoWorker
from queues.messages import Reply


class PendingReplies:
    """Queries sent and not answered yet, by correlation id; each is answered once (a
    reply, or an error), and a late second answer changes nothing."""

    def __init__(self) -> None:
        self._futures: dict[str, asyncio.Future[Reply]] = {}

    def __contains__(self, correlation_id: object) -> bool:
        return correlation_id in self._futures

    def open(self, correlation_id: str) -> asyncio.Future[Reply]:
        """The future the query's reply will complete, on the running event loop."""
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._futures[correlation_id] = future
        return future

    def discard(self, correlation_id: str) -> None:
        self._futures.pop(correlation_id, None)

    def resolve(self, correlation_id: str, result: Reply | Exception) -> None:
        future = self._futures.get(correlation_id)
        if future is None or future.done():
            return
        if isinstance(result, Exception):
            future.set_exception(result)
        else:
            future.set_result(result)

    def fail_all(self, error: Exception) -> None:
        """Answer every waiting query with ``error`` and forget them."""
        futures, self._futures = self._futures, {}
        for future in futures.values():
            if not future.done():
                future.set_exception(error)


def no_worker(queue: str) -> NoWorker:
    return NoWorker(
        f"no worker serves queue {queue} (it does not exist); start a worker for "
        "this variant or retry once the scaler has loaded it"
    )


def no_answer(queue: str, timeout_s: float) -> DeadlineExceeded:
    return DeadlineExceeded(
        f"no answer from variant queue {queue} within {timeout_s * 1000:.0f} ms; "
        "raise timeout_ms or relax the latency objective"
    )

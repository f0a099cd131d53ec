"""Loading on demand: a worker loads the variants that queries asked for.

When a gateway's selector picks a variant that no live worker runs, the gateway writes a
load request (:mod:`registry.live_docs`) and the query waits. Every worker's loader reads
the requests for its hardware a few times a second, and the one worker that the pure rule
:func:`loads_to_make` designates (the live worker of that hardware with the fewest
variants; ties by id, so every worker computes the same answer from the same snapshot)
loads the variant, publishes its report at once, and clears the request. A load that
fails is published as a load failure: the waiting queries get its error, and the variant
is not asked for again until the failure expires.

Who decides: where a scaler runs (its plan in live state is fresh), the scaler decides
what runs where (the query's demand reaches it within a second) and the loaders stand by;
where none runs (the embedded default, workers started by hand), the loaders act.
The same code runs in both modes: the embedded worker has a loader too.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from queues.errors import InfaasError
from registry import live_docs
from registry.live_docs import LoadFailure, LoadRequest
from registry.livestate import LiveSnapshot, LiveState, now_ms

log = logging.getLogger(__name__)
POLL_S = 0.1


@dataclass(frozen=True, slots=True)
class LoaderView:
    """What one worker's loader sees at one moment."""

    worker_id: str
    hardware: str
    requests: tuple[LoadRequest, ...]
    live: LiveSnapshot
    failed: frozenset[str]  # variants whose last load failed recently
    scaler_running: bool


def designated_worker(live: LiveSnapshot, hardware: str) -> str | None:
    """The worker that takes the next load of this hardware: among those that load on
    demand, the one with the fewest loaded variants (ties by id); none when no such
    worker is live."""
    candidates = [w for w in live.workers.values() if w.hardware == hardware and w.loads_on_demand]
    if not candidates:
        return None
    return min(candidates, key=lambda w: (len(w.variants), w.worker_id)).worker_id


def loads_to_make(view: LoaderView) -> list[LoadRequest]:
    """The requests this worker should act on now, oldest first: none while a scaler
    runs, none for another hardware, for a variant already placed or recently failed,
    or when another worker is designated."""
    if view.scaler_running:
        return []
    if designated_worker(view.live, view.hardware) != view.worker_id:
        return []
    return [
        r
        for r in sorted(view.requests, key=lambda r: (r.requested_ms, r.variant))
        if r.hardware == view.hardware
        and r.variant not in view.failed
        and not view.live.placements(r.variant)
    ]


class Loader:
    """The loop around :func:`loads_to_make`: read, decide, load, report."""

    def __init__(
        self,
        *,
        worker_id: str,
        hardware: str,
        live: LiveState,
        load: Callable[[str], object],
        report_now: Callable[[], None],
        poll_s: float = POLL_S,
    ) -> None:
        self._worker_id = worker_id
        self._hardware = hardware
        self._live = live
        self._load = load
        self._report_now = report_now
        self._poll_s = poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="infaas-loader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _run(self) -> None:
        failing = False  # say an outage once, not ten times a second
        while not self._stop.wait(self._poll_s):
            try:
                self.tick()
            except InfaasError as exc:  # live state unreachable: try again next poll
                if not failing:
                    log.warning("loader: %s (trying again quietly)", exc.message)
                failing = True
            else:
                if failing:
                    log.info("loader: live state is reachable again")
                failing = False

    def view(self) -> LoaderView | None:
        """Reads live state; None when no request is waiting for this hardware."""
        requests = tuple(
            r for r in live_docs.read_load_requests(self._live) if r.hardware == self._hardware
        )
        if not requests:
            return None
        header = live_docs.read_plan_header(self._live)
        return LoaderView(
            worker_id=self._worker_id,
            hardware=self._hardware,
            requests=requests,
            live=self._live.snapshot(),
            failed=frozenset(live_docs.read_load_failures(self._live)),
            scaler_running=header is not None and header.fresh(now_ms()),
        )

    def tick(self) -> list[str]:
        """One look: loads what this worker is designated for; returns what it loaded."""
        view = self.view()
        if view is None:
            return []
        return self.act(loads_to_make(view))

    def act(self, requests: Iterable[LoadRequest]) -> list[str]:
        loaded = []
        for request in requests:
            try:
                self._load(request.variant)
            except Exception as exc:  # any failure is reported to the waiting queries
                self._failed(request, exc)
                continue
            log.info("loaded %s on demand", request.variant)
            loaded.append(request.variant)
            self._report_now()
            live_docs.clear_load_request(self._live, request.variant)
        return loaded

    def _failed(self, request: LoadRequest, exc: Exception) -> None:
        code = exc.code if isinstance(exc, InfaasError) else "worker_error"
        message = exc.message if isinstance(exc, InfaasError) else f"{type(exc).__name__}: {exc}"
        log.error("could not load %s on demand: %s", request.variant, message)
        failure = LoadFailure(request.variant, self._worker_id, code, message, now_ms())
        live_docs.put_load_failure(self._live, failure)
        live_docs.clear_load_request(self._live, request.variant)

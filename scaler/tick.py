"""What one tick of the scaler works on: its inputs, and the next state as the steps of
the tick (:mod:`scaler.load`, :mod:`scaler.fleet`, :mod:`scaler.problem`,
:mod:`scaler.guards`, :mod:`scaler.replan`) build it. The inputs are never changed."""

from __future__ import annotations

from collections.abc import Mapping

from queues.errors import InvalidRequest
from scaler.forecast import Seasonal
from scaler.plan import Action, Key, Pending, ScalerState
from scaler.planner import Assignment, Problem
from scaler.settings import ScalerSettings
from scaler.snapshot import DemandClass, ScalerSnapshot, WorkerView


class Tick:
    """One decision; builds the next state as it goes, never changes its inputs."""

    # set by the steps, in the order of the tick
    pending: dict[Key, Pending]  # fleet.current_replicas
    pending_workers: tuple[tuple[str, float], ...]  # fleet.track_workers
    draining: dict[str, float]
    removing: dict[str, float]
    worker_action_ms: dict[str, float]
    worker_added_ms: dict[str, float]
    low_since: dict[str, float]
    classes: dict[str, DemandClass]  # load.estimate
    estimates: dict[str, float]
    history: dict[str, tuple[tuple[float, float], ...]]
    seen_ms: dict[str, float]
    lapsed: set[str]  # held, but not in the demand for a hold-down
    seasonal: Seasonal  # the fleet load's learnt shape
    unservable: dict[str, bool]  # the run
    solved: tuple[Problem, Assignment]
    solved_ms: float | None
    below_ticks: dict[Key, int]  # guards.replica_actions
    zero_since: dict[Key, float]
    grown_ms: dict[str, float]

    def __init__(
        self, snapshot: ScalerSnapshot, state: ScalerState, settings: ScalerSettings, policy: str
    ) -> None:
        if state.now_ms is not None and snapshot.now_ms < state.now_ms:
            raise InvalidRequest(
                f"scaler snapshot at {snapshot.now_ms} ms is older than the last tick "
                f"({state.now_ms} ms); give snapshots in time order"
            )
        self.snap = snapshot
        self.state = state
        self.s = settings
        self.policy = policy
        self.now = snapshot.now_ms
        self.notes: list[str] = []
        self.deferred: list[str] = []
        self.actions: list[Action] = []
        self.fixed: dict[str, str] = dict(state.fixed)
        self.shares: dict[str, float] = {}  # variant -> share of its cores (light: < 1)
        self.spares: set[str] = set()  # empty workers kept started (spare_*_workers)

    def closed(self, worker: str) -> bool:
        """Being emptied or removed: nothing may stay or be placed there."""
        return worker in self.draining or worker in self.removing

    def count(self, hardware: str) -> int:
        return sum(
            1
            for w in self.snap.workers.values()
            if w.hardware == hardware and not self.closed(w.worker_id)
        )

    def backed_off(self, hardware: str) -> bool:
        last = self.worker_action_ms.get(hardware)
        return last is not None and self.now - last < self.s.worker_backoff_s * 1000

    def since(self, since_ms: float) -> str:
        return f"{(self.now - since_ms) / 1000:g} s"

    def replica_cores(self, vid: str) -> float:
        """Cores one replica of ``vid`` takes: its threads' (a light one's share of them)."""
        info = self.snap.variants.get(vid)
        if info is None:
            return 1.0
        return info.cores * self.shares.get(vid, 1.0)

    def cores_used(self, worker: WorkerView, current: Mapping[Key, int]) -> float:
        return sum(
            n * self.replica_cores(vid)
            for (vid, wid), n in current.items()
            if wid == worker.worker_id
        )

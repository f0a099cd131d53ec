"""The scaling policy: from one frozen snapshot and the state of the last tick, a plan.

:func:`decide` is pure: no clock, no I/O; the same snapshot, state and settings give the
same plan (the ILP with its deterministic work limit set). Each tick it

1. **estimates load** per demand class: a rise is taken at once, a fall is smoothed, and
   the plan uses the highest estimate of the last *hold-down* (about the load time of
   the app's variants, at least 10 ticks on CPU and 20 on GPU, as in the prototype), so
   capacity grows at once and shrinks only after load stayed low that long;
2. **plans** capacity for 1.05 × that load plus queued queries to drain, on the workers
   there are and on workers that could be started (:mod:`scaler.planner`);
3. **guards** the changes: replicas are added at once; a smaller target must hold for a
   few ticks, a variant is unloaded only after its target stayed at zero for its
   hold-down, never while its queue holds queries, never while replacement replicas of
   its app are still loading (make before break), and not right after it grew (back-off);
4. **sizes the fleet**: a worker is added when the plan needs one, when a hardware is
   hot on all its workers, or when most of its workers hold Overloaded or Interfered
   variants; one that stayed idle is drained (its replicas move) and removed, never
   below the minimum nor above the maximum, with a back-off after each worker action.

:func:`decide_replicate_only` is the paper's baseline (SageMaker-like): each app keeps
one fixed variant and only its replica count follows the load, under the same rules.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from queues.errors import InvalidRequest
from registry.livestate import LOADING
from registry.routing import Routes
from scaler.greedy import GreedyPlanner
from scaler.ilp import IlpPlanner
from scaler.planner import (
    CORE_UNITS,
    EPS,
    Assignment,
    ClassLoad,
    Host,
    Option,
    Planner,
    Problem,
    evaluate,
)
from scaler.settings import ScalerSettings
from scaler.snapshot import DemandClass, ScalerSnapshot, VariantInfo, WorkerView

LOAD, SET_REPLICAS, UNLOAD = "load", "set_replicas", "unload"
ADD_WORKER, REMOVE_WORKER = "add_worker", "remove_worker"
ACTION_ORDER = {ADD_WORKER: 0, LOAD: 1, SET_REPLICAS: 2, UNLOAD: 3, REMOVE_WORKER: 4}
QUEUE_CLASS = "queue:"  # the backlog of one variant's queue, only it can drain
PENDING_HOST = "pending-"  # a worker asked for and not yet seen
NEW_HOST = "new-"  # a worker that could be asked for
# a spare worker is offered to the planner as a worker to open, just cheaper than a new
# one: it is used before one is started, and not while the running workers have room
SPARE_PRICE = 0.999

Key = tuple[str, str]  # (variant, worker)


@dataclass(frozen=True, slots=True)
class Action:
    kind: str  # load | set_replicas | unload | add_worker | remove_worker
    worker: str | None = None
    hardware: str | None = None
    variant: str | None = None
    replicas: int | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "worker": self.worker,
            "hardware": self.hardware,
            "variant": self.variant,
            "replicas": self.replicas,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class ClassPlan:
    """One demand class as this tick saw it (queries per second)."""

    key: str
    app: str
    measured_qps: float
    estimate_qps: float
    held_qps: float
    planned_qps: float
    unserved_qps: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "app": self.app,
            "measured_qps": round(self.measured_qps, 3),
            "estimate_qps": round(self.estimate_qps, 3),
            "held_qps": round(self.held_qps, 3),
            "planned_qps": round(self.planned_qps, 3),
            "unserved_qps": round(self.unserved_qps, 3),
        }


@dataclass(frozen=True, slots=True)
class Plan:
    now_ms: float
    tick: int
    policy: str  # infaas | replicate-only
    actions: tuple[Action, ...]
    planner: str  # ilp | greedy | greedy-fallback
    status: str
    objective: float
    cost_per_hour: float
    solve_ms: float
    timings: Mapping[str, float]
    targets: Mapping[Key, int]
    demand: tuple[ClassPlan, ...]
    deferred: tuple[str, ...]  # changes the planner wanted, held back, and why
    notes: tuple[str, ...]
    routes: Routes = field(default_factory=Routes)  # split classes, for the gateway

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``GET /v1/scaler``)."""
        return {
            "now_ms": self.now_ms,
            "tick": self.tick,
            "policy": self.policy,
            "planner": self.planner,
            "status": self.status,
            "objective": round(self.objective, 6),
            "cost_per_hour": round(self.cost_per_hour, 6),
            "solve_ms": round(self.solve_ms, 3),
            "timings": {k: round(v, 3) for k, v in sorted(self.timings.items())},
            "actions": [a.to_dict() for a in self.actions],
            "targets": [
                {"variant": v, "worker": w, "replicas": n}
                for (v, w), n in sorted(self.targets.items())
            ],
            "demand": [c.to_dict() for c in self.demand],
            "deferred": list(self.deferred),
            "notes": list(self.notes),
            "routes": self.routes.to_doc(),
        }


@dataclass(frozen=True, slots=True)
class Pending:
    """A replica count asked of a worker and not yet seen in live state."""

    replicas: int
    since_ms: float
    app: str


@dataclass(frozen=True, slots=True)
class ScalerState:
    """What carries from one tick to the next. Start with ``ScalerState()``."""

    tick: int = 0
    now_ms: float | None = None
    classes: Mapping[str, DemandClass] = field(default_factory=dict)
    estimates: Mapping[str, float] = field(default_factory=dict)
    history: Mapping[str, tuple[tuple[float, float], ...]] = field(default_factory=dict)
    below_ticks: Mapping[Key, int] = field(default_factory=dict)
    zero_since: Mapping[Key, float] = field(default_factory=dict)
    grown_ms: Mapping[str, float] = field(default_factory=dict)
    pending: Mapping[Key, Pending] = field(default_factory=dict)
    pending_workers: tuple[tuple[str, float], ...] = ()  # (hardware, asked at)
    known_workers: frozenset[str] = frozenset()
    low_since: Mapping[str, float] = field(default_factory=dict)
    seen_ms: Mapping[str, float] = field(default_factory=dict)  # class -> last in demand
    draining: Mapping[str, float] = field(default_factory=dict)  # worker -> since
    removing: Mapping[str, float] = field(default_factory=dict)  # worker -> asked at
    worker_action_ms: Mapping[str, float] = field(default_factory=dict)
    fixed: Mapping[str, str] = field(default_factory=dict)  # replicate-only: app -> variant
    # the last capacity problem and its answer: the same problem again is not re-solved
    last_solved: tuple[Problem, Assignment] | None = field(default=None, compare=False)
    solved_ms: float | None = None  # when last_solved was solved (not merely kept)


def make_planner(settings: ScalerSettings) -> Planner:
    if settings.planner == "greedy":
        return GreedyPlanner()
    return IlpPlanner(
        time_limit_s=settings.ilp_time_limit_s,
        deterministic_time=settings.ilp_deterministic_time,
    )


def decide(
    snapshot: ScalerSnapshot, state: ScalerState, settings: ScalerSettings
) -> tuple[Plan, ScalerState]:
    """INFaaS: choose variants and replicas per app, and the workers to run them on."""
    return _Tick(snapshot, state, settings, "infaas").run(make_planner(settings), None)


def decide_replicate_only(
    snapshot: ScalerSnapshot, state: ScalerState, settings: ScalerSettings
) -> tuple[Plan, ScalerState]:
    """The baseline: one fixed variant per app, only its replicas follow the load."""
    tick = _Tick(snapshot, state, settings, "replicate-only")
    return tick.run(GreedyPlanner(), tick.fixed_variants)


class _Tick:
    """One decision; builds the next state as it goes, never changes its inputs."""

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

    # -- 1. load ------------------------------------------------------------------------

    def estimate(self, current: Mapping[Key, int]) -> list[ClassPlan]:
        """Smoothed and held load per class; updates classes, estimates and history."""
        s, now = self.s, self.now
        seen = {c.key: c for c in self.snap.classes}
        classes = dict(self.state.classes)
        classes.update(seen)
        self.classes: dict[str, DemandClass] = {}
        self.estimates: dict[str, float] = {}
        self.history: dict[str, tuple[tuple[float, float], ...]] = {}
        self.seen_ms: dict[str, float] = {}
        self.lapsed: set[str] = set()  # held, but not in the demand for a hold-down
        plans = []
        # per class: measured, estimate, history kept, hold-down window, rise over window
        per_class: dict[str, tuple[float, float, list[tuple[float, float]], float]] = {}
        rises: dict[str, tuple[float, float]] = {}  # key -> (rise in qps, over seconds)
        for key in sorted(classes):
            record = classes[key]
            measured = seen[key].qps if key in seen else 0.0
            prior = self.state.estimates.get(key)
            if prior is None or measured >= prior:
                estimate = measured
            else:
                estimate = prior + s.load_smoothing * (measured - prior)
            window = self._hold_of_app(record.app, current)
            kept = max(window, s.forecast_window_s * 1000) if s.forecast_s > 0 else window
            past = [(t, q) for t, q in self.state.history.get(key, ()) if t > now - kept]
            rise = self._rise(past, now, estimate)
            if rise is not None:
                rises[key] = rise
            self.estimates[key] = estimate
            per_class[key] = (measured, estimate, past, window)
        group_trend = self._group_trends(classes, rises)
        for key, (measured, estimate, past, window) in per_class.items():
            record = classes[key]
            trend = 0.0
            if key in rises:
                rise_qps, span_s = rises[key]
                if self._beyond_noise(rise_qps, estimate):
                    trend = rise_qps / span_s
                trend = max(trend, estimate * group_trend.get(self._group_of(record), 0.0))
            past.append((now, estimate))
            held = max(q for t, q in past if t > now - window)
            if trend > 0:  # at most double: a step looks like a steep trend for a while
                held = max(held, min(estimate + trend * s.forecast_s, 2.0 * estimate))
            if held < 1e-6 and key not in seen:
                del self.estimates[key]
                continue  # gone for a whole hold-down: forget it
            self.classes[key] = record
            self.history[key] = tuple(past)
            self._track_seen(key, key in seen, window)
            backlog = seen[key].backlog if key in seen else 0
            planned = _quantize(held * s.headroom + backlog / s.drain_s, s.load_quantum)
            plans.append(ClassPlan(key, record.app, measured, estimate, held, planned, 0.0))
        return plans

    def _track_seen(self, key: str, seen: bool, window: float) -> None:
        """When the class was last in the demand; lapsed once that is a hold-down ago."""
        last = self.now if seen else self.state.seen_ms.get(key)
        if last is not None:
            self.seen_ms[key] = last
        if last is None or self.now - last >= window:
            self.lapsed.add(key)

    def _rise(
        self, past: list[tuple[float, float]], now: float, estimate: float
    ) -> tuple[float, float] | None:
        """How much load rose over the forecast window, and over how many seconds
        (None without a forecast or with too little history)."""
        s = self.s
        if s.forecast_s <= 0:
            return None
        older = [(t, q) for t, q in past if t <= now - s.forecast_window_s * 1000]
        then_ms, then_qps = older[-1] if older else (past[0] if past else (now, estimate))
        if now - then_ms < 0.5 * s.forecast_window_s * 1000:
            return None  # too little history for a trend
        return estimate - then_qps, (now - then_ms) / 1000.0

    def _beyond_noise(self, rise_qps: float, load_qps: float) -> bool:
        """Two rates measured over a few seconds of Poisson arrivals differ by about 0.63 ×
        the square root of the rate (5 s windows): only a rise beyond ``trend_z`` × that
        root is a trend."""
        return rise_qps > self.s.trend_z * math.sqrt(max(load_qps, 1.0))

    def _group_of(self, record: DemandClass) -> str | None:
        scope = self.s.trend_scope
        return None if scope == "class" else record.app if scope == "app" else ""

    def _group_trends(
        self, classes: Mapping[str, DemandClass], rises: Mapping[str, tuple[float, float]]
    ) -> dict[str | None, float]:
        """Per group of classes (``trend_scope``), how fast its summed load rises as a
        share of that load per second, where the summed rise is beyond its noise: a sum
        of classes has the noise of its total, so a ramp shared by small classes shows in
        their sum before it shows in any one of them."""
        if self.s.trend_scope == "class":
            return {}
        sums: dict[str | None, list[float]] = {}
        for key, (rise_qps, span_s) in rises.items():
            total = sums.setdefault(self._group_of(classes[key]), [0.0, 0.0, 0.0])
            total[0] += rise_qps
            total[1] += rise_qps / span_s
            total[2] += self.estimates[key]
        return {
            group: slope / load
            for group, (rise, slope, load) in sums.items()
            if load > 0 and self._beyond_noise(rise, load)
        }

    def _hold_of_app(self, app: str, current: Mapping[Key, int]) -> float:
        holds = [
            self.s.hold_ms(info.hardware, info.load_ms)
            for (vid, _), n in current.items()
            if n > 0 and (info := self.snap.variants.get(vid)) is not None and info.app == app
        ]
        return max(holds, default=self.s.hold_ms("cpu", 0.0))

    # -- 2. what runs, and what was asked -------------------------------------------------

    def current(self) -> dict[Key, int]:
        """Replicas per (variant, worker): what live state shows, or what was asked of it
        and has not shown yet. Updates ``pending``."""
        live: dict[Key, int] = {}
        for w in self.snap.workers.values():
            for vid, n in w.replicas.items():
                if n > 0:
                    live[vid, w.worker_id] = n
        self.pending: dict[Key, Pending] = {}
        current = dict(live)
        for key, asked in sorted(self.state.pending.items()):
            vid, wid = key
            if wid not in self.snap.workers or live.get(key, 0) == asked.replicas:
                continue
            if self.now - asked.since_ms > self.s.pending_timeout_s * 1000:
                self.notes.append(
                    f"{wid} did not reach {asked.replicas} replicas of {vid} within "
                    f"{self.s.pending_timeout_s:g} s; planning from what it reports"
                )
                continue
            self.pending[key] = asked
            current[key] = asked.replicas
        return {k: n for k, n in current.items() if n > 0}

    def in_flight(self) -> set[str]:
        """Apps with replicas on their way up (make before break)."""
        apps = set()
        for (vid, wid), asked in self.pending.items():
            shown = self.snap.workers[wid].replicas.get(vid, 0)
            if asked.replicas > shown:
                apps.add(asked.app)
        for w in self.snap.workers.values():
            for vid, st in w.states.items():
                if st == LOADING and (info := self.snap.variants.get(vid)) is not None:
                    apps.add(info.app)
        return apps

    # -- workers asked for, idle, draining -------------------------------------------------

    def track_workers(self, current: Mapping[Key, int]) -> None:
        s, now, snap = self.s, self.now, self.snap
        fresh = [w for w in sorted(snap.workers) if w not in self.state.known_workers]
        joined: dict[str, int] = {}
        for wid in fresh:
            hw = snap.workers[wid].hardware
            joined[hw] = joined.get(hw, 0) + 1
        waiting = []
        for hw, since in self.state.pending_workers:
            if joined.get(hw, 0) > 0:
                joined[hw] -= 1
            elif now - since > s.worker_start_timeout_s * 1000:
                self.notes.append(
                    f"a {hw} worker asked for at {since:.0f} ms has not joined within "
                    f"{s.worker_start_timeout_s:g} s; asking again if still needed"
                )
            else:
                waiting.append((hw, since))
        self.pending_workers = tuple(waiting)
        self.draining = {w: t for w, t in self.state.draining.items() if w in snap.workers}
        self.removing = {w: t for w, t in self.state.removing.items() if w in snap.workers}
        self.worker_action_ms = dict(self.state.worker_action_ms)
        self.spares = self.pick_spares(current)
        # a spare is not idle: once it takes replicas it is idle from then on, not before
        self.low_since: dict[str, float] = {}
        for wid, w in snap.workers.items():
            if w.utilisation < s.idle_threshold and not w.troubled and wid not in self.spares:
                self.low_since[wid] = self.state.low_since.get(wid, now)

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

    def pick_spares(self, current: Mapping[Key, int]) -> set[str]:
        """The empty running workers kept as spares: up to ``spare_*_workers`` of each
        hardware, in order of name (the others drain as idle workers do)."""
        used = {wid for _, wid in current}
        spares: set[str] = set()
        for hw in ("cpu", "gpu"):
            empty = sorted(
                wid
                for wid, w in self.snap.workers.items()
                if w.hardware == hw and wid not in used and not self.closed(wid)
            )
            spares.update(empty[: self.s.spare_workers(hw)])
        return spares

    def pick_drain(self, current: Mapping[Key, int]) -> str | None:
        """An idle worker to empty and remove, if its replicas fit on the others."""
        s, now = self.s, self.now
        for hw in ("cpu", "gpu"):
            if any(self.snap.workers[w].hardware == hw for w in self.draining):
                continue  # one at a time
            if self.count(hw) - 1 < s.min_workers(hw) or self.backed_off(hw):
                continue
            idle = [
                w
                for w in self.snap.workers.values()
                if w.hardware == hw
                and not self.closed(w.worker_id)
                and w.worker_id not in self.spares
                and w.worker_id in self.low_since
                and now - self.low_since[w.worker_id] >= s.worker_idle_s * 1000
            ]
            idle.sort(key=lambda w: (self.cores_used(w, current), w.worker_id))
            for w in idle:
                if self._fits_elsewhere(w, current):
                    return w.worker_id
        return None

    def _fits_elsewhere(self, worker: WorkerView, current: Mapping[Key, int]) -> bool:
        others = [
            w
            for w in self.snap.workers.values()
            if w.hardware == worker.hardware
            and w.worker_id != worker.worker_id
            and not self.closed(w.worker_id)
            and w.worker_id not in self.spares  # a drain packs into workers in use
        ]
        if worker.hardware == "cpu":
            need = self.cores_used(worker, current)
            room = sum(w.cores - self.cores_used(w, current) for w in others)
        else:
            need = sum(n for (v, wid), n in current.items() if wid == worker.worker_id)
            room = sum(
                w.max_replicas - sum(n for (v, wid), n in current.items() if wid == w.worker_id)
                for w in others
            )
        return need <= room

    # -- 3. the capacity problem -------------------------------------------------------------

    def demand(
        self, loads: list[ClassPlan], allowed: Callable[[str], bool] | None
    ) -> tuple[list[ClassLoad], dict[str, dict[str, float]], dict[str, float]]:
        """The classes to plan for (queues to drain among them), what one replica of each
        variant serves of each, and each variant's share of its cores (light: < 1)."""
        snap, s = self.snap, self.s
        # a class the gateways stopped naming is still planned for (as held) for one
        # hold-down; past that its replicas may go as the hold-downs allow
        classes = [
            ClassLoad(c.key, c.app, c.planned_qps)
            for c in loads
            if c.planned_qps > 0 and c.key not in self.lapsed
        ]
        capacity: dict[str, dict[str, float]] = {}
        for vid, info in snap.variants.items():
            if allowed is not None and not allowed(vid):
                continue
            # a class held from earlier ticks is not in this tick's demand (nor in the
            # snapshot's capacities) but is served as before while its load is held
            capacity[vid] = {
                c.key: cap
                for c in classes
                if (cap := info.capacity_for(self.classes[c.key], s)) > 0
            }
        for vid, depth in sorted(snap.backlog.items()):
            if vid not in capacity:
                continue  # not ready, or not this policy's variant
            queued = snap.variants[vid]
            key = QUEUE_CLASS + vid
            classes.append(ClassLoad(key, queued.app, depth / s.drain_s))
            capacity[vid][key] = queued.saturation_qps
        qps = {c.key: c.qps for c in classes}
        shares = {
            vid: light_share(snap.variants[vid], caps, qps, s.light_share)
            for vid, caps in capacity.items()
        }
        return classes, capacity, shares

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

    def problem(
        self,
        classes: list[ClassLoad],
        capacity: Mapping[str, Mapping[str, float]],
        current: Mapping[Key, int],
    ) -> Problem:
        """The capacity problem of this tick, from :meth:`demand`'s classes and capacities
        (and the shares of their cores kept from it)."""
        snap, s = self.snap, self.s
        wanted = {vid for vid, caps in capacity.items() if caps}
        wanted |= {vid for vid, _ in current if vid in capacity}
        options = []
        for vid, info in sorted(snap.variants.items()):
            if vid not in wanted:
                continue
            share = self.shares[vid]
            options.append(
                Option(
                    variant=vid,
                    app=info.app,
                    hardware=info.hardware,
                    cores=info.cores * share,
                    memory_mb=info.memory_mb,
                    cost_per_hour=info.cost_per_hour * share,
                    load_ms=info.load_ms,
                    capacity_qps=capacity[vid],
                    # a light replica carries all its classes' load: one is enough, and
                    # the planners' search stays as small as with whole cores
                    max_replicas=1 if share < 1 else s.max_replicas_per_variant,
                )
            )
        names = {o.variant for o in options}
        hosts = [self._host(w, current, names) for w in snap.workers.values()]
        hosts += self._future_hosts()
        return Problem(tuple(classes), tuple(options), tuple(hosts), s.load_penalty_per_s)

    def _host(self, w: WorkerView, current: Mapping[Key, int], names: set[str]) -> Host:
        mine = {vid: n for (vid, wid), n in current.items() if wid == w.worker_id}
        reserved_cores = 0.0
        reserved_memory = 0.0
        for vid, n in mine.items():
            if vid in names:
                continue
            info = self.snap.variants.get(vid)
            cpu = w.hardware == "cpu"
            reserved_cores += n * (self.replica_cores(vid) if info else 1 if cpu else 0)
            reserved_memory += n * (info.memory_mb if info else 0.0)
        spare = w.worker_id in self.spares
        return Host(
            id=w.worker_id,
            hardware=w.hardware,
            cores=w.cores,
            memory_mb=w.memory_mb,
            max_replicas=w.max_replicas,
            current={vid: n for vid, n in mine.items() if vid in names},
            capacity_factor={v: f for v, f in w.capacity_factor.items() if f < 1.0},
            closed=self.closed(w.worker_id),
            reserved_cores=reserved_cores,
            reserved_memory_mb=reserved_memory,
            max_per_variant=1 if w.hardware == "gpu" else None,
            prospective=spare,
            open_cost_per_hour=(
                SPARE_PRICE * self.snap.worker_price_per_hour(w.hardware) if spare else 0.0
            ),
        )

    def _future_hosts(self) -> list[Host]:
        """Workers asked for (free to use) and workers that could be asked for."""
        s, prices = self.s, self.snap.prices
        hosts = []
        for hw in ("cpu", "gpu"):
            shape: dict[str, Any] = {
                "hardware": hw,
                "cores": s.new_cpu_worker_cores(prices) if hw == "cpu" else 1,
                "memory_mb": s.cpu_worker_memory_mb if hw == "cpu" else s.gpu_memory_mb,
                "max_replicas": 1_000_000 if hw == "cpu" else s.gpu_max_replicas,
                "max_per_variant": None if hw == "cpu" else 1,
                "prospective": True,
            }
            waiting = [t for h, t in self.pending_workers if h == hw]
            for k in range(len(waiting)):
                hosts.append(Host(id=f"{PENDING_HOST}{hw}-{k + 1}", **shape))
            room = s.max_workers(hw) - self.count(hw) - len(waiting)
            price = self.snap.worker_price_per_hour(hw)
            # offer the most new workers while the fleet grows (the last plan started some
            # or left load unserved), one when it does not: a quiet tick's problem stays small
            last = self.state.last_solved
            growing = (
                last is None
                or bool(last[1].unserved_qps)
                or any(h.startswith(NEW_HOST + hw) for _, h in last[1].replicas)
            )
            offered = s.max_new_workers_per_tick if growing else 1
            for k in range(max(min(room, offered), 0)):
                hosts.append(Host(id=f"{NEW_HOST}{hw}-{k + 1}", open_cost_per_hour=price, **shape))
        return hosts

    # -- 4. from targets to guarded actions ---------------------------------------------------

    def replica_actions(
        self, targets: Mapping[Key, int], current: Mapping[Key, int], plan: Assignment
    ) -> None:
        """Growth first and at once; then shrinking, each step only when it may go."""
        snap, now = self.snap, self.now
        totals: dict[str, int] = {}
        for (vid, _), n in current.items():
            totals[vid] = totals.get(vid, 0) + n
        self.below_ticks: dict[Key, int] = {}
        self.zero_since: dict[Key, float] = {}
        self.grown_ms = dict(self.state.grown_ms)
        keys = sorted(k for k in set(targets) | set(current) if k[1] in snap.workers)
        for key in keys:
            vid, _ = key
            have, want = current.get(key, 0), targets.get(key, 0)
            if want > have:
                why = self._why_grow(vid, want - have, totals, plan)
                self._act(LOAD if have == 0 else SET_REPLICAS, key, want, why)
                self.grown_ms[vid] = now
        busy = self.in_flight()  # includes what was just asked for
        for key in keys:
            vid, wid = key
            have, want = current.get(key, 0), targets.get(key, 0)
            if want >= have:
                continue
            ticks = self.state.below_ticks.get(key, 0) + 1
            self.below_ticks[key] = ticks
            if want == 0:
                self.zero_since[key] = self.state.zero_since.get(key, now)
            info = snap.variants.get(vid)
            if info is None:
                self._act(UNLOAD, key, 0, f"unload: {vid} is no ready variant of the catalog")
                continue
            hold = self._hold_back(key, want, ticks, info.app, busy)
            if hold:
                self.deferred.append(f"{vid} on {wid}: {have} -> {want} replicas held back: {hold}")
            elif want == 0:
                why = (
                    f"worker {wid} is being drained"
                    if wid in self.draining
                    else f"not needed for {self._since(self.zero_since[key])} (hold-down "
                    f"{self._hold(vid) / 1000:g} s)"
                )
                self._act(UNLOAD, key, 0, f"unload: {why}")
            else:
                self._act(
                    SET_REPLICAS,
                    key,
                    want,
                    f"scale down: {want} replicas carry the held load of {info.app} "
                    f"(smaller target for {ticks} ticks)",
                )

    def _hold_back(self, key: Key, want: int, ticks: int, app: str, busy: set[str]) -> str:
        """Why a decrease must wait; empty when it may go ahead."""
        vid, wid = key
        if app in busy:
            return f"replicas of {app} are still loading (make before break)"
        if want == 0 and self.snap.backlog.get(vid, 0) > 0:
            return f"its queue holds {self.snap.backlog[vid]} queries"
        return "" if self.closed(wid) else self._patience(key, want, ticks)

    def _patience(self, key: Key, want: int, ticks: int) -> str:
        """Back-off after growth, a few ticks of a smaller target, the hold-down to unload."""
        vid, _ = key
        s, now = self.s, self.now
        grown = self.grown_ms.get(vid)
        if grown is not None and now - grown < s.variant_backoff_s * 1000:
            return f"it grew {self._since(grown)} ago (back-off {s.variant_backoff_s:g} s)"
        if ticks < s.down_confirm_ticks:
            return f"smaller target for {ticks} of {s.down_confirm_ticks} ticks"
        since = self.zero_since.get(key)
        if want == 0 and since is not None and now - since < self._hold(vid):
            return (
                f"unneeded for {self._since(since)} of its {self._hold(vid) / 1000:g} s hold-down"
            )
        return ""

    def _hold(self, vid: str) -> float:
        info = self.snap.variants[vid]
        return self.s.hold_ms(info.hardware, info.load_ms)

    def _since(self, since_ms: float) -> str:
        return f"{(self.now - since_ms) / 1000:g} s"

    def _why_grow(self, vid: str, more: int, totals: Mapping[str, int], plan: Assignment) -> str:
        info = self.snap.variants.get(vid)
        routed = sorted((c, q) for (c, v), q in plan.routing.items() if v == vid)
        serves = ", ".join(f"{c} ({q:.1f} qps)" for c, q in routed) or "its queue"
        app_runs = any(
            n > 0
            and (other := self.snap.variants.get(v)) is not None
            and info is not None
            and other.app == info.app
            for v, n in totals.items()
        )
        if not app_runs:
            return f"start: load {vid} for {serves}, the cheapest variant that serves it"
        if totals.get(vid, 0) == 0:
            load_ms = info.load_ms if info else 0.0
            return (
                f"switch: load {vid} for {serves}; cheapest way to keep capacity >= "
                f"{self.s.headroom:g} x load, its {load_ms:.0f} ms load time included"
            )
        return (
            f"replicate: +{more} replica(s) of {vid} for {serves}; cheaper than switching, "
            "load time included"
        )

    def _act(self, kind: str, key: Key, replicas: int, reason: str) -> None:
        vid, wid = key
        info = self.snap.variants.get(vid)
        self.actions.append(
            Action(kind, wid, self.snap.workers[wid].hardware, vid, replicas, reason)
        )
        self.pending[key] = Pending(replicas, self.now, info.app if info else "")
        self.below_ticks.pop(key, None)
        self.zero_since.pop(key, None)

    # -- 5. workers --------------------------------------------------------------------------

    def worker_actions(self, plan: Assignment, current: Mapping[Key, int]) -> None:
        added = {hw for hw in ("cpu", "gpu") if self._add_worker(hw, plan)}
        self._remove_workers(current, added)
        for hw in ("cpu", "gpu"):
            later = sorted({v for v, h in plan.replicas if h.startswith(PENDING_HOST + hw)})
            if later:
                self.notes.append(f"{', '.join(later)} will start on the {hw} worker asked for")
        for key, qps in plan.unserved_qps.items():
            if self.unservable.get(key):
                self.notes.append(
                    f"{key}: {qps:.1f} qps unserved: no ready variant meets its requirements"
                )
            else:
                self.notes.append(f"{key}: {qps:.1f} qps cannot be placed on any worker")

    def _add_worker(self, hw: str, plan: Assignment) -> bool:
        """Ask for a worker of ``hw`` when a rule says so and the limits allow it."""
        s = self.s
        live = [
            w
            for w in self.snap.workers.values()
            if w.hardware == hw and not self.closed(w.worker_id)
        ]
        asked = sum(1 for h, _ in self.pending_workers if h == hw)
        needed = sorted({v for v, h in plan.replicas if h.startswith(NEW_HOST + hw)})
        reasons = []
        if needed:
            reasons.append(
                f"the plan needs room the running {hw} workers lack ({', '.join(needed)})"
            )
        reactive = s.reactive_worker_rules
        if reactive and live and all(w.utilisation > s.hot_threshold for w in live):
            reasons.append(f"all {len(live)} {hw} workers are over {s.hot_threshold:.0%} busy")
        troubled = sum(1 for w in live if w.troubled)
        if reactive and live and troubled > s.overloaded_fraction * len(live):
            reasons.append(
                f"{troubled} of {len(live)} {hw} workers hold Overloaded or Interfered variants"
            )
        below_min = len(live) + asked < s.min_workers(hw)
        if below_min:
            reasons.append(f"below the minimum of {s.min_workers(hw)} {hw} workers")
        # grow by one worker (in a burst, by every one the plan needs) unless one is on its
        # way already; and ask for the spares the plan leaves missing on top
        grow = bool(reasons) and (not asked or below_min or bool(needed))
        spare = self._spare_deficit(hw, plan, asked)
        if spare:
            reasons.append(f"keeping {s.spare_workers(hw)} spare {hw} worker(s) started")
        why = "; ".join(reasons)
        if not grow and not spare:
            return False
        if len(live) + asked >= s.max_workers(hw):
            self.notes.append(
                f"would add a {hw} worker ({why}) but "
                f"INFAAS_SCALER_MAX_{hw.upper()}_WORKERS={s.max_workers(hw)} is reached"
            )
            return False
        burst = s.burst_workers and bool(needed)
        if grow and self.backed_off(hw) and not below_min and not burst:
            self.deferred.append(
                f"add a {hw} worker ({why}): backing off {s.worker_backoff_s:g} s after the "
                f"last {hw} worker action"
            )
            grow = False  # the spares go past the back-off: they are kept, not grown to a load
            if not spare:
                return False
        hosts = len({h for _, h in plan.replicas if h.startswith(NEW_HOST + hw)})
        count = (max(hosts, 1) if burst else 1) if grow else 0
        count = min(count + spare, s.max_workers(hw) - len(live) - asked)
        for _ in range(count):
            self.actions.append(Action(ADD_WORKER, hardware=hw, reason=why))
            self.pending_workers = (*self.pending_workers, (hw, self.now))
        self.worker_action_ms[hw] = self.now
        return True

    def _spare_deficit(self, hw: str, plan: Assignment, asked: int) -> int:
        """How many more ``hw`` workers to ask for so that ``spare_*_workers`` stay empty
        once the plan is carried out: spares it leaves empty and workers asked for that
        it does not use count."""
        want = self.s.spare_workers(hw)
        if not want:
            return 0
        hosts = {h for _, h in plan.replicas}
        mine = [wid for wid in self.spares if self.snap.workers[wid].hardware == hw]
        kept = sum(1 for wid in mine if wid not in hosts)
        used_asked = sum(1 for h in hosts if h.startswith(PENDING_HOST + hw))
        return max(want - kept - max(asked - used_asked, 0), 0)

    def _remove_workers(self, current: Mapping[Key, int], added: set[str]) -> None:
        """Remove drained workers once empty (again if one lingers past its time)."""
        snap, now = self.snap, self.now
        for wid in sorted(self.draining):
            w = snap.workers[wid]
            if w.hardware in added or any(h == wid for _, h in current):
                continue
            since = self.draining.pop(wid)
            self.removing[wid] = now
            self._remove_worker(w, f"idle, drained for {self._since(since)} and now empty")
        for wid, asked_ms in sorted(self.removing.items()):
            if now - asked_ms > self.s.worker_start_timeout_s * 1000:
                self.removing[wid] = now
                self._remove_worker(
                    snap.workers[wid],
                    f"asked to go {self._since(asked_ms)} ago and still reporting; asking again",
                )

    def _remove_worker(self, worker: WorkerView, reason: str) -> None:
        self.actions.append(
            Action(REMOVE_WORKER, worker=worker.worker_id, hardware=worker.hardware, reason=reason)
        )
        self.worker_action_ms[worker.hardware] = self.now

    # -- the whole tick ------------------------------------------------------------------------

    def fixed_variants(self, vid: str) -> bool:
        info = self.snap.variants[vid]
        return self.fixed.get(info.app) == vid

    def _fix_variants(self, loads: list[ClassPlan], current: Mapping[Key, int]) -> None:
        """Replicate-only: pick each app's variant once, the one it runs if any, else
        the one serving the most load, cheapest per query on ties."""
        snap = self.snap
        running = {vid for vid, _ in current if vid in snap.variants}
        apps = {c.app for c in loads} | {snap.variants[vid].app for vid in running}
        for app in sorted(apps):
            if self.fixed.get(app) in snap.variants:
                continue
            mine = [snap.variants[v] for v in snap.by_app.get(app, ())]
            pool = [v for v in mine if v.id in running] or mine
            demand = {c.key: c.planned_qps for c in loads if c.app == app}

            def rank(v: VariantInfo, demand: dict[str, float] = demand) -> tuple[float, float, str]:
                served = sum(q for k, q in demand.items() if k in v.capacity_qps)
                return (-served, v.cost_per_hour / max(v.saturation_qps, EPS), v.id)

            if pool:
                self.fixed[app] = min(pool, key=rank).id

    def run(
        self, planner: Planner, allowed: Callable[[str], bool] | None
    ) -> tuple[Plan, ScalerState]:
        current = self.current()
        self.track_workers(current)
        loads = self.estimate(current)
        if allowed is not None:
            self._fix_variants(loads, current)
        classes, capacity, self.shares = self.demand(loads, allowed)
        drain = self.pick_drain(current)
        if drain is not None:
            self.draining[drain] = self.now
        problem = self.problem(classes, capacity, current)
        self.unservable = {c.key: not problem.serving[c.key] for c in problem.classes}
        last = self.state.last_solved
        self.solved_ms = self.state.solved_ms
        if last is not None and self._still_answers(last[0], last[1], problem):
            plan = replace(last[1], solve_ms=0.0, timings={})  # the same answer holds
            self.solved = last  # later ticks compare with the loads it was solved for
        else:
            plan = self.floor(problem, planner.solve(problem))
            self.solved = (problem, plan)
            self.solved_ms = self.now
        if drain is not None and any(
            h.startswith(NEW_HOST) or h in self.spares for _, h in plan.replicas
        ):
            del self.draining[drain]  # the load needs it after all; the greedy re-plans
            problem = self.problem(classes, capacity, current)  # so the tick stays short
            plan = self.floor(problem, GreedyPlanner().solve(problem))
        elif drain is not None:
            self.notes.append(f"draining idle worker {drain}: its replicas move elsewhere")
        targets = {
            (v, h): n for (v, h), n in plan.replicas.items() if h in self.snap.workers and n > 0
        }
        self.replica_actions(targets, current, plan)
        self.worker_actions(plan, current)
        self.actions.sort(
            key=lambda a: (ACTION_ORDER[a.kind], a.hardware or "", a.worker or "", a.variant or "")
        )
        demand = tuple(replace(c, unserved_qps=plan.unserved_qps.get(c.key, 0.0)) for c in loads)
        result = Plan(
            now_ms=self.now,
            tick=self.state.tick + 1,
            policy=self.policy,
            actions=tuple(self.actions),
            planner=plan.planner,
            status=plan.status,
            objective=plan.objective,
            cost_per_hour=plan.cost_per_hour,
            solve_ms=plan.solve_ms,
            timings=dict(plan.timings),
            targets=dict(sorted(targets.items())),
            demand=demand,
            deferred=tuple(self.deferred),
            notes=tuple(self.notes),
            routes=_routes(plan) if self.s.plan_routing else Routes(),
        )
        state = ScalerState(
            tick=self.state.tick + 1,
            now_ms=self.now,
            classes=self.classes,
            estimates=self.estimates,
            history=self.history,
            seen_ms=self.seen_ms,
            below_ticks=self.below_ticks,
            zero_since=self.zero_since,
            grown_ms={v: t for v, t in self.grown_ms.items() if self.now - t < 3_600_000},
            pending=self.pending,
            pending_workers=self.pending_workers,
            known_workers=frozenset(self.snap.workers),
            low_since=self.low_since,
            draining=self.draining,
            removing=self.removing,
            worker_action_ms=self.worker_action_ms,
            fixed=self.fixed,
            last_solved=self.solved,
            solved_ms=self.solved_ms,
        )
        return result, state

    def floor(self, problem: Problem, plan: Assignment) -> Assignment:
        """Every class with load that some variant serves gets at least one replica.

        A planner's answer that leaves such a class with no replica of any variant serving
        it (however small its load: 0.05 q/s is a person trying the app) gets one replica of
        the cheapest of them, on the first host with room (running workers first); the
        class is routed there. Load no host has room for stays as the planner left it."""
        replicas = dict(plan.replicas)
        routing = dict(plan.routing)
        unserved = dict(plan.unserved_qps)
        changed = False
        for c in problem.classes:
            serving = problem.serving[c.key]
            if c.qps <= 0 or not serving:
                continue
            names = {problem.options[i].variant for i in serving}
            if any(n > 0 and v in names for (v, _), n in replicas.items()):
                continue
            cheapest = sorted(
                serving,
                key=lambda i: (
                    problem.options[i].cost_per_hour
                    + problem.options[i].penalty_per_hour(problem.load_penalty_per_s),
                    problem.options[i].variant,
                ),
            )
            placed = next(
                (
                    (problem.options[i], host)
                    for i in cheapest
                    for host in _fill_order(problem.hosts)
                    if _room_left(problem, host, problem.options[i], replicas) > 0
                ),
                None,
            )
            if placed is None:
                continue
            option, host = placed
            replicas[option.variant, host.id] = 1
            routing[c.key, option.variant] = min(c.qps, option.capacity_qps[c.key])
            left = c.qps - routing[c.key, option.variant]
            if left > EPS:
                unserved[c.key] = left
            else:
                unserved.pop(c.key, None)
            changed = True
            self.notes.append(
                f"{c.key}: {c.qps:.3g} qps had no replica in the {plan.planner} plan; "
                f"one replica of {option.variant}, the cheapest that serves it, on {host.id}"
            )
        if not changed:
            return plan
        cost, objective = evaluate(problem, replicas, unserved)
        return replace(
            plan,
            replicas=dict(sorted(replicas.items())),
            routing=routing,
            unserved_qps=unserved,
            cost_per_hour=cost,
            objective=objective,
        )

    def _still_answers(self, solved: Problem, plan: Assignment, problem: Problem) -> bool:
        """Whether ``plan``, solved for ``solved``, still answers ``problem``: the same
        problem; or, with ``replan_tolerance``, a fresh solve not due, the same workers
        and options (:func:`_same_fleet`), each app's load at least (1 - tolerance) of
        what was solved for (so capacity is not kept long past a fall), no more load left
        unserved, and the plan's replicas enough for every class's new load at the
        capacities measured now (:func:`replicas_suffice`)."""
        if solved == problem:
            return True
        s = self.s
        if (
            s.replan_tolerance <= 0
            or self.solved_ms is None
            or self.now - self.solved_ms >= s.replan_every_s * 1000
            or not _same_fleet(solved, problem)
        ):
            return False
        before = {c.key: c.qps for c in solved.classes}
        if any(
            c.qps > before.get(c.key, 0.0) and plan.unserved_qps.get(c.key, 0.0) > EPS
            for c in problem.classes
        ):
            return False
        app_before, app_now = _app_loads(solved), _app_loads(problem)
        floor = 1.0 - s.replan_tolerance
        if any(app_now.get(app, 0.0) < floor * qps for app, qps in app_before.items()):
            return False
        return replicas_suffice(problem, plan, before)


def _fill_order(hosts: tuple[Host, ...]) -> list[Host]:
    """Hosts a replica may be added to: running workers, then those asked for, then those
    to start (the cheapest first)."""
    return sorted(
        (h for h in hosts if not h.closed),
        key=lambda h: (h.prospective, h.open_cost_per_hour, h.id),
    )


def _room_left(problem: Problem, host: Host, option: Option, replicas: Mapping[Key, int]) -> int:
    """Replicas of ``option`` ``host`` still holds once ``replicas`` are placed."""
    mine = {v: n for (v, h), n in replicas.items() if h == host.id and n > 0}
    room = host.room(option) - mine.get(option.variant, 0)
    if host.max_per_variant is not None:
        room = min(room, host.max_per_variant - mine.get(option.variant, 0))
    placed = [(problem.options[problem.option_index[v]], n) for v, n in mine.items()]
    room = min(room, host.max_replicas - sum(n for _, n in placed))
    if option.cores > 0:
        free = host.cores - host.reserved_cores - sum(o.cores * n for o, n in placed)
        room = min(room, math.floor(free / option.cores + EPS))
    if option.memory_mb > 0:
        free = host.memory_mb - host.reserved_memory_mb - sum(o.memory_mb * n for o, n in placed)
        room = min(room, math.floor(free / option.memory_mb + EPS))
    return max(room, 0)


def _same_fleet(solved: Problem, problem: Problem) -> bool:
    """Same hosts and options, capacities aside (which classes a variant serves, and how
    fast, moves with the load: queueing; how much of an Interfered replica is left is
    measured anew every tick). Which replicas are Interfered is part of the fleet: a new
    one is solved for, to move it."""
    return (
        [_host_shape(h) for h in solved.hosts] == [_host_shape(h) for h in problem.hosts]
        and solved.load_penalty_per_s == problem.load_penalty_per_s
        and [_shape(o) for o in solved.options] == [_shape(o) for o in problem.options]
    )


def _host_shape(host: Host) -> tuple[object, ...]:
    """A host without its measured capacity factors, but with the variants they are for."""
    return (replace(host, capacity_factor={}), sorted(host.capacity_factor))


def _app_loads(problem: Problem) -> dict[str, float]:
    loads: dict[str, float] = {}
    for c in problem.classes:
        loads[c.app] = loads.get(c.app, 0.0) + c.qps
    return loads


def _shape(option: Option) -> tuple[object, ...]:
    """An option without its capacities."""
    o = option
    return (o.variant, o.app, o.hardware, o.cores, o.memory_mb, o.cost_per_hour, o.load_ms,
            o.max_replicas)  # fmt: skip


def replicas_suffice(problem: Problem, plan: Assignment, before: Mapping[str, float]) -> bool:
    """Whether the plan's replicas serve every class's new load: a class the plan routed
    keeps its variants and proportions, scaled to its new load (``before``: the loads
    the plan was solved for); a class it did not route takes what replica time is left."""
    spare, unrouted = _spare_after_routing(problem, plan, before)
    if spare is None or any(time < -EPS for time in spare.values()):
        return False
    for key, qps in unrouted:
        left = qps
        for i in problem.serving.get(key, ()):
            option = problem.options[i]
            capacity = option.capacity_qps[key]
            served = min(left, max(spare.get(option.variant, 0.0), 0.0) * capacity)
            spare[option.variant] = spare.get(option.variant, 0.0) - served / capacity
            left -= served
        if left > EPS:
            return False
    return True


def _routes(plan: Assignment) -> Routes:
    """The plan's split of each demand class (a queue's backlog is its own variant's)."""
    return Routes.from_routing(
        {kv: qps for kv, qps in plan.routing.items() if not kv[0].startswith(QUEUE_CLASS)}
    )


def _spare_after_routing(
    problem: Problem, plan: Assignment, before: Mapping[str, float]
) -> tuple[dict[str, float] | None, list[tuple[str, float]]]:
    """Replica time per variant left once the classes the plan routed take their new
    load (None where a route no longer serves its class), and the classes it did not."""
    hosts = {h.id: h for h in problem.hosts}
    spare: dict[str, float] = {}
    for (vid, hid), n in plan.replicas.items():
        if n > 0:  # 1e-3: the ILP's own rounding slack
            spare[vid] = spare.get(vid, 0.0) + n * hosts[hid].factor(vid) * (1 + 1e-3)
    routed: dict[str, list[tuple[str, float]]] = {}
    for (key, vid), qps in plan.routing.items():
        if qps > EPS:
            routed.setdefault(key, []).append((vid, qps))
    unrouted: list[tuple[str, float]] = []
    for c in problem.classes:
        routes = routed.get(c.key)
        if not routes or before.get(c.key, 0.0) <= EPS:
            unrouted.append((c.key, c.qps))
            continue
        scale = c.qps / before[c.key]
        for vid, qps in routes:
            capacity = problem.options[problem.option_index[vid]].capacity_qps.get(c.key, 0.0)
            if capacity <= EPS:
                return None, unrouted
            spare[vid] = spare.get(vid, 0.0) - qps * scale / capacity
    return spare, unrouted


def _quantize(qps: float, quantum: float) -> float:
    """Round a load up to the next step of a geometric ladder (ratio 1 + quantum), so
    loads that differ by noise make the same problem; 0 leaves it as it is."""
    if quantum <= 0 or qps <= 0:
        return qps
    steps = math.ceil(math.log(qps) / math.log1p(quantum) - 1e-9)
    return float(math.exp(steps * math.log1p(quantum)))


def light_share(
    info: VariantInfo, capacity_qps: Mapping[str, float], qps: Mapping[str, float], share: float
) -> float:
    """The share of its cores (and of its price) one replica of a CPU variant takes: all of
    them, unless every class it serves together would keep it busy at most ``share`` of
    the time; then ``share`` (to the planners' 1/1,000 core), and light replicas share
    cores as their little work interleaves (0 turns this off)."""
    if share <= 0 or info.hardware != "cpu" or info.cores <= 0:
        return 1.0
    busy = sum(qps.get(key, 0.0) / cap for key, cap in capacity_qps.items() if cap > 0)
    if busy > share:
        return 1.0
    return math.ceil(info.cores * share * CORE_UNITS - 1e-6) / CORE_UNITS / info.cores

"""What a tick of the scaler returns and carries to the next: the plan and its actions,
what each demand class looked like, and the state of the policy between ticks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from registry.routing import Routes
from scaler.forecast import Seasonal
from scaler.planner import Assignment, Problem
from scaler.snapshot import DemandClass

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
    worker_added_ms: Mapping[str, float] = field(default_factory=dict)  # hardware -> last add
    fixed: Mapping[str, str] = field(default_factory=dict)  # replicate-only: app -> variant
    # the last capacity problem and its answer: the same problem again is not re-solved
    last_solved: tuple[Problem, Assignment] | None = field(default=None, compare=False)
    solved_ms: float | None = None  # when last_solved was solved (not merely kept)
    seasonal: Seasonal = field(default_factory=Seasonal)  # the fleet load's learnt shape

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
   its app are still loading (make before break), never as the last running replica of
   an app with demand, and not right after it grew (back-off);
4. **sizes the fleet**: a worker is added when the plan needs one, when a hardware is
   hot on all its workers, or when most of its workers hold Overloaded or Interfered
   variants; one that stayed idle is drained (its replicas move) and removed, never
   below the minimum nor above the maximum, with a back-off after each worker action.

:func:`decide_replicate_only` is the paper's baseline (SageMaker-like): each app keeps
one fixed variant and only its replica count follows the load, under the same rules.

The steps live in their own modules, on one :class:`scaler.tick.Tick`: :mod:`scaler.load`
(1), :mod:`scaler.problem` (2), :mod:`scaler.guards` (3), :mod:`scaler.fleet` (4) and
:mod:`scaler.replan` (keeping the last answer); the plan and the state between ticks are
in :mod:`scaler.plan`, re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

from registry.routing import Routes
from scaler.fleet import current_replicas, pick_drain, track_workers, worker_actions
from scaler.greedy import GreedyPlanner
from scaler.guards import replica_actions
from scaler.ilp import IlpPlanner
from scaler.load import estimate
from scaler.plan import (
    ACTION_ORDER,
    ADD_WORKER,
    LOAD,
    NEW_HOST,
    PENDING_HOST,
    QUEUE_CLASS,
    REMOVE_WORKER,
    SET_REPLICAS,
    SPARE_PRICE,
    UNLOAD,
    Action,
    ClassPlan,
    Key,
    Pending,
    Plan,
    ScalerState,
)
from scaler.planner import EPS, ClassLoad, Planner, Problem
from scaler.problem import capacity_problem, demand_classes, light_share
from scaler.replan import _routes, _same_fleet, floor, replicas_suffice, still_answers
from scaler.settings import ScalerSettings
from scaler.snapshot import ScalerSnapshot, VariantInfo
from scaler.tick import Tick

__all__ = [
    "ACTION_ORDER",
    "ADD_WORKER",
    "LOAD",
    "NEW_HOST",
    "PENDING_HOST",
    "QUEUE_CLASS",
    "REMOVE_WORKER",
    "SET_REPLICAS",
    "SPARE_PRICE",
    "UNLOAD",
    "Action",
    "ClassPlan",
    "Key",
    "Pending",
    "Plan",
    "ScalerState",
    "_same_fleet",
    "decide",
    "decide_replicate_only",
    "light_share",
    "make_planner",
    "replicas_suffice",
]


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


class _Tick(Tick):
    """One decision: the steps of :class:`Tick` in order (tests call them one by one)."""

    def current(self) -> dict[Key, int]:
        return current_replicas(self)

    def track_workers(self, current: Mapping[Key, int]) -> None:
        track_workers(self, current)

    def estimate(self, current: Mapping[Key, int]) -> list[ClassPlan]:
        return estimate(self, current)

    def demand(
        self, loads: list[ClassPlan], allowed: Callable[[str], bool] | None
    ) -> tuple[list[ClassLoad], dict[str, dict[str, float]], dict[str, float]]:
        return demand_classes(self, loads, allowed)

    def problem(
        self,
        classes: list[ClassLoad],
        capacity: Mapping[str, Mapping[str, float]],
        current: Mapping[Key, int],
    ) -> Problem:
        return capacity_problem(self, classes, capacity, current)

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
        drain = pick_drain(self, current)
        if drain is not None:
            self.draining[drain] = self.now
        problem = self.problem(classes, capacity, current)
        self.unservable = {c.key: not problem.serving[c.key] for c in problem.classes}
        last = self.state.last_solved
        self.solved_ms = self.state.solved_ms
        if last is not None and still_answers(self, last[0], last[1], problem):
            plan = replace(last[1], solve_ms=0.0, timings={})  # the same answer holds
            self.solved = last  # later ticks compare with the loads it was solved for
        else:
            plan = floor(self, problem, planner.solve(problem))
            self.solved = (problem, plan)
            self.solved_ms = self.now
        if drain is not None and any(
            h.startswith(NEW_HOST) or h in self.spares for _, h in plan.replicas
        ):
            del self.draining[drain]  # the load needs it after all; the greedy re-plans
            problem = self.problem(classes, capacity, current)  # so the tick stays short
            plan = floor(self, problem, GreedyPlanner().solve(problem))
        elif drain is not None:
            self.notes.append(f"draining idle worker {drain}: its replicas move elsewhere")
        targets = {
            (v, h): n for (v, h), n in plan.replicas.items() if h in self.snap.workers and n > 0
        }
        replica_actions(self, targets, current, plan)
        worker_actions(self, plan, current)
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
            worker_added_ms=self.worker_added_ms,
            fixed=self.fixed,
            last_solved=self.solved,
            solved_ms=self.solved_ms,
            seasonal=self.seasonal,
        )
        return result, state

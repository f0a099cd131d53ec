"""A discrete-event simulation of the serving system, driving the real decision code.

Simulated: the fleet (:mod:`bench.sim.fleet`: workers that take time to start, variants
that take their profiled load time to load), the service (:mod:`bench.sim.serving`: a
queue per variant, batches, service times from the profiles, deadlines, queue limits)
and what the workers report (:mod:`bench.sim.observation`).

Real: the selector (:mod:`registry.selector`, on an index rebuilt from simulated live
state at the gateway's refresh interval), the per-variant state machine
(:mod:`workers.states`, every monitoring second) and the scaler policy
(:mod:`scaler.policy`, every scaler tick). Deterministic for a seed.

This module keeps the event loop, the gateway and what the scaler reads and does.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable

import numpy as np

from bench.sim.fleet import Fleet, ReplicaLoaded, SimWorker, WorkerReady
from bench.sim.observation import MONITOR_S, Timeline, demands, observe
from bench.sim.profiles import World
from bench.sim.serving import BatchDone, BatchStart, Outcome, Query, Serving
from bench.sim.settings import SimSettings
from queues.errors import InfaasError
from registry.livestate import LiveSnapshot
from registry.pricing import PriceTable
from registry.routing import Routes
from registry.selector import Requirements, SelectorIndex, select
from scaler.policy import ADD_WORKER, LOAD, REMOVE_WORKER, SET_REPLICAS, UNLOAD, Action
from scaler.snapshot import Demand
from workers.states import StateSettings

__all__ = ["Decide", "Event", "SimSettings", "Simulation"]

GATEWAY_REFRESH_S = 0.5

Event = BatchDone | ReplicaLoaded | BatchStart | WorkerReady
Decide = Callable[["Simulation", float], list[Action]]


class Simulation:
    def __init__(
        self,
        world: World,
        arrival_times_s: np.ndarray,
        class_of: np.ndarray,
        classes: list[tuple[str, Requirements]],
        *,
        prices: PriceTable,
        settings: SimSettings,
        states: StateSettings,
        seed: int,
        scaler_interval_s: float = 1.0,
    ) -> None:
        self.world = world
        self.catalog = world.catalog
        self.times = arrival_times_s
        self.class_of = class_of
        self.classes = classes
        self.prices = prices
        self.s = settings
        self.states = states
        self.scaler_interval_s = scaler_interval_s
        self.now = 0.0
        self.events: list[tuple[float, int, Event]] = []  # (when, sequence, event)
        self.seq = 0
        self.fleet = Fleet(self.catalog, prices, settings, self._push)
        self.serving = Serving(world, self.fleet, settings, np.random.default_rng(seed), self._push)
        self.timeline = Timeline()
        self.actions = 0
        self.action_log: list[tuple[float, Action]] = []
        self.plan_ms: list[float] = []
        self.index = SelectorIndex(self.catalog, LiveSnapshot.empty())
        self.live = LiveSnapshot.empty()
        self.routes = Routes()  # the scaler's last split of each class, for the gateway
        self._memo: dict[int, tuple[str | None, str]] = {}
        # arrivals per class: second -> queries
        self.class_arrivals: dict[int, dict[int, int]] = {i: {} for i in range(len(classes))}

    @property
    def workers(self) -> dict[str, SimWorker]:
        return self.fleet.workers

    @property
    def outcome(self) -> Outcome:
        return self.serving.outcome

    @property
    def cost_usd(self) -> float:
        return self.fleet.cost_usd

    def _push(self, when: float, event: Event) -> None:
        self.seq += 1
        heapq.heappush(self.events, (when, self.seq, event))

    # -- the gateway ----------------------------------------------------------------------

    def _choose(self, cls: int) -> tuple[str | None, str]:
        memo = self._memo.get(cls)
        if memo is None:
            try:
                decision = select(self.index, self.classes[cls][1])
            except InfaasError as exc:
                memo = (None, exc.code)
            else:
                vid = decision.variant.id
                running = bool(self.live.placements(vid))
                memo = (vid, "") if running else (None, "no_worker")
                if decision.dealt:
                    return memo  # dealt by the plan: the next query may go elsewhere
            self._memo[cls] = memo
        return memo

    def _arrive(self, t: float, cls: int) -> None:
        outcome = self.serving.outcome
        outcome.arrivals += 1
        second = int(t)
        counts = self.class_arrivals[cls]
        counts[second] = counts.get(second, 0) + 1
        vid, code = self._choose(cls)
        if vid is None:
            outcome.fail(code)
            return
        req = self.classes[cls][1]
        slo = req.latency_ms if req.latency_ms is not None else math.inf
        timeout_s = max(self.s.timeout_factor * slo, 1000.0) / 1000.0 if slo != math.inf else 10
        self.serving.enqueue(vid, Query(t, slo, t + timeout_s, cls), self.now)

    def _refresh_index(self) -> None:
        self.index = SelectorIndex(self.catalog, self.live, previous=self.index, routes=self.routes)
        self._memo.clear()

    # -- what the scaler reads and does -----------------------------------------------------

    def demands(self) -> list[Demand]:
        return demands(self.now, self.class_arrivals, self.classes)

    def queue_depths(self) -> dict[str, int]:
        return {vid: len(q) for vid, q in self.serving.queues.items() if q}

    def apply(self, actions: Iterable[Action]) -> None:
        fleet, now = self.fleet, self.now
        for action in actions:
            self.actions += 1
            self.action_log.append((now, action))
            worker = fleet.workers.get(action.worker or "")
            if action.kind == ADD_WORKER:
                fleet.add_worker(action.hardware or "cpu", now)
            elif action.kind == REMOVE_WORKER and worker is not None:
                fleet.remove_worker(worker, now)
            elif action.kind in (LOAD, SET_REPLICAS) and worker is not None and action.variant:
                fleet.set_replicas(
                    worker, action.variant, action.replicas or 1, now, cold=action.kind == LOAD
                )
                self.serving.dispatch(action.variant, now)
            elif action.kind == UNLOAD and worker is not None and action.variant:
                fleet.set_replicas(worker, action.variant, 0, now, cold=False)

    def start_worker(self, hardware: str, replicas: dict[str, int]) -> SimWorker:
        """A worker running from time 0 with ``replicas`` already loaded (static fleets,
        and the starting point of the autoscaled ones)."""
        worker = self.fleet.add_worker(hardware, self.now, ready_now=True)
        for vid, count in replicas.items():
            self.fleet.set_replicas(worker, vid, count, self.now, cold=False)
        return worker

    # -- the run ------------------------------------------------------------------------

    def _monitor(self) -> None:
        self.live = observe(self.now, self.catalog, self.states, self.fleet, self.serving)

    def _reset_metrics(self) -> None:
        """End of the warm-up: what happened so far is not counted."""
        self.fleet.charge_all(self.now)
        self.fleet.cost_usd = 0.0
        self.actions = 0
        self.action_log = []
        self.serving.outcome = Outcome()
        self.timeline = Timeline()
        self.plan_ms = []

    def _handle(self, event: Event) -> None:
        now, serving = self.now, self.serving
        if isinstance(event, BatchDone):
            serving.batch_done(event, now)
        elif isinstance(event, ReplicaLoaded):
            serving.dispatch(event.replica.variant.id, now)
        elif isinstance(event, BatchStart):
            serving.held_batch_starts(event, now)
        elif event.worker_id in self.fleet.workers:  # a worker is ready
            for vid in list(self.fleet.workers[event.worker_id].replicas):
                serving.dispatch(vid, now)

    def run(self, duration_s: float, decide: Decide | None, *, measure_from_s: float = 0.0) -> None:
        """Play the arrivals; monitor every second, refresh the gateway, tick the scaler.
        Nothing before ``measure_from_s`` (a warm-up) is counted."""
        times, classes = self.times, self.class_of
        n, i = len(times), 0
        next_monitor = MONITOR_S
        next_refresh = GATEWAY_REFRESH_S
        next_scaler = self.scaler_interval_s if decide is not None else math.inf
        self._monitor()  # the gateway starts with what runs at time 0
        self._refresh_index()
        while True:
            t_event = self.events[0][0] if self.events else math.inf
            t_arrival = times[i] if i < n else math.inf
            t_tick = min(next_monitor, next_refresh, next_scaler)
            t = min(t_event, t_arrival, t_tick)
            if t > duration_s:
                break
            if measure_from_s and self.now < measure_from_s <= t:
                self.now = measure_from_s
                self._reset_metrics()
            self.now = t
            if t == t_arrival:
                self._arrive(float(t_arrival), int(classes[i]))
                i += 1
            elif t == t_event:
                self._handle(heapq.heappop(self.events)[2])
            elif t == next_monitor:
                self._monitor()
                self.timeline.sample(self.now, self.class_arrivals, self.fleet)
                next_monitor += MONITOR_S
            elif t == next_refresh:
                self._refresh_index()
                next_refresh += GATEWAY_REFRESH_S
            else:
                assert decide is not None
                self.apply(decide(self, t))
                next_scaler += self.scaler_interval_s
        self.now = duration_s
        self.fleet.charge_all(duration_s)
        # Queries still queued or running at the end: those already past their objective
        # count as violations; the rest could still make it and are not counted at all.
        left = [query for q in self.serving.queues.values() for query in q]
        left += list(self._in_service())
        overdue = sum(1 for q in left if (duration_s - q.arrived_s) * 1000.0 > q.slo_ms)
        outcome = self.serving.outcome
        if overdue:
            outcome.fail("unfinished_past_objective", overdue)
        outcome.arrivals -= len(left) - overdue
        outcome.in_flight_at_end = len(left) - overdue

    def _in_service(self) -> Iterable[Query]:
        for when, _seq, event in self.events:
            if isinstance(event, BatchDone) and when > self.now:
                yield from event.batch

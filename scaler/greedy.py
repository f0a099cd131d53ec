"""The paper's greedy planner: replicate or switch, whichever is cheaper, then trim.

Per app, starting from what runs now:

1. **Route** each class (the most constrained first) onto the replicas that serve it,
   cheapest per query first.
2. **Cover** what is left: for every variant that serves the class, the cost of the
   replicas that would cover the shortfall (the price, plus the load-time penalty for
   replicas that must be loaded, plus a new worker when no running one has room); the
   cheapest wins, a variant already loaded on ties. Adding replicas of a loaded variant
   is the paper's *replicate*, loading a faster one (a bigger batch, a GPU) its *switch*.
3. **Trim** replicas the routing does not need.
4. **Improve**: try taking each variant away entirely and covering its load again with the
   others (and placing an Interfered one anew); keep the change when the plan's objective
   drops. This finishes a switch (the old variant goes once the new one carries the
   load) and scales down by switching to a cheaper variant (GPU → CPU) when load falls.
   Tries that surely cannot gain (the load would cost at least as much elsewhere) are
   skipped.

Apps compete for cores and GPUs. When one kind of hardware runs short (the plan needs a
new worker of it, or leaves load unserved), the plan is made a second time with a price
on that hardware's capacity: the per-unit saving of the class that can no longer get it,
so that capacity goes to the classes that save most by it. The cheaper of the two
plans, by the true objective, is the answer.

Hosts are filled fullest first, so load gathers on few workers and idle ones can go
(``scaler.greedy_capacity`` keeps the books of free capacity and prices it when short).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from scaler.greedy_capacity import Capacity, Placements, SavedCapacity, unit_prices
from scaler.planner import EPS, Assignment, Problem, evaluate


@dataclass(slots=True)
class _Saved:
    """What trying a change to one app may touch."""

    capacity: SavedCapacity
    routed_qps: dict[tuple[int, int], float]
    unserved_qps: dict[int, float]


class _AppIndex(NamedTuple):
    """One app's classes (the most constrained first) and options, as indexes."""

    classes: list[int]
    options: list[int]


class _Build:
    """The plan under construction; indexes stand for classes (``ci``), options (``i``)
    and hosts (``j``).

    ``unit_price`` prices hardware capacity while planning (per core on CPU, per replica
    slot on GPU); it steers choices only, the answer is judged without it.
    """

    def __init__(self, problem: Problem, unit_price: Mapping[str, float]) -> None:
        self.problem = problem
        options = problem.options
        penalty = problem.load_penalty_per_s
        self.penalty_usd_per_hour = [o.penalty_per_hour(penalty) for o in options]
        self.priced_usd_per_hour = [
            o.cost_per_hour
            + unit_price.get(o.hardware, 0.0) * (o.cores if o.hardware == "cpu" else 1)
            for o in options
        ]
        self.capacity = Capacity(problem)
        self.routed_qps: dict[tuple[int, int], float] = {}  # (class, option) -> qps
        self.unserved_qps: dict[int, float] = {}  # class -> qps
        self.apps: dict[str, _AppIndex] = {}
        for ci, c in enumerate(problem.classes):
            self.apps.setdefault(c.app, _AppIndex([], []))[0].append(ci)
        for i, o in enumerate(options):
            self.apps.setdefault(o.app, _AppIndex([], []))[1].append(i)
        # per class, the options that serve it, cheapest per query first
        self.prefer: dict[int, list[int]] = {}
        for ci, c in enumerate(problem.classes):
            self.prefer[ci] = sorted(
                problem.serving[c.key],
                key=lambda i, key=c.key: (  # type: ignore[misc]
                    self.priced_usd_per_hour[i] / options[i].capacity_qps[key],
                    options[i].load_ms,
                    options[i].variant,
                ),
            )
        for classes, _ in self.apps.values():
            classes.sort(
                key=lambda ci: (
                    len(problem.serving[problem.classes[ci].key]),
                    -problem.classes[ci].qps,
                    problem.classes[ci].key,
                )
            )

    # -- covering a shortfall -----------------------------------------------------------

    def _placements(self, i: int, capacity_qps: float, need_qps: float) -> Placements:
        prices = self.priced_usd_per_hour[i], self.penalty_usd_per_hour[i]
        return self.capacity.placements(i, capacity_qps, need_qps, *prices)

    def _best(self, ci: int, need: float, exclude: int) -> tuple[int, list[tuple[int, int]], float]:
        """The cheapest way to cover ``need``: option, placements, priced cost (option -1
        when nothing can be placed)."""
        p, capacity = self.problem, self.capacity
        priced, penalty = self.priced_usd_per_hour, self.penalty_usd_per_hour
        key = p.classes[ci].key
        estimates = []
        for i in p.serving[key]:
            o = p.options[i]
            if i == exclude or capacity.replica_count[i] >= o.max_replicas:
                continue
            count = math.ceil(need / o.capacity_qps[key] - EPS)
            lower = priced[i] * count + penalty[i] * max(count - capacity.returning(i), 0)
            estimates.append((lower, capacity.replica_count[i] == 0, o.load_ms, o.variant, i))
        estimates.sort()
        best: tuple[float, bool, float, str] | None = None
        best_partial: tuple[float, float, str] | None = None
        chosen, chosen_places, chosen_cost = -1, [], math.inf
        partial, partial_places = -1, []
        for lower, fresh, load_ms, variant, i in estimates:
            if best is not None and (lower, fresh, load_ms, variant) >= best:
                break
            places, covered, cost = self._placements(i, p.options[i].capacity_qps[key], need)
            if not places:
                continue
            if covered >= need - EPS:
                rank = (cost, fresh, load_ms, variant)
                if best is None or rank < best:
                    best, chosen, chosen_places, chosen_cost = rank, i, places, cost
            else:
                partial_rank = (-covered / cost if cost > 0 else -math.inf, cost, variant)
                if best_partial is None or partial_rank < best_partial:
                    best_partial, partial, partial_places = partial_rank, i, places
        if chosen >= 0:
            return chosen, chosen_places, chosen_cost
        return partial, partial_places, math.inf  # a partial cover is no price to beat

    def _place(self, i: int, places: list[tuple[int, int]], residual: dict[int, float]) -> None:
        for j, count in places:
            self.capacity.add(i, j, count)
            residual[i] = residual.get(i, 0.0) + self.capacity.factor(i, j) * count

    def cover(self, app: str, exclude: int = -1) -> None:
        """Route the app's classes onto its replicas, adding replicas where short."""
        p = self.problem
        classes, options = self.apps[app]
        residual = {i: self.capacity.replica_units[i] for i in options}
        for ci in classes:
            for i in p.serving[p.classes[ci].key]:
                self.routed_qps.pop((ci, i), None)
            self.unserved_qps.pop(ci, None)
        for ci in classes:
            key = p.classes[ci].key
            need = p.classes[ci].qps
            for i in self.prefer[ci]:
                if need <= EPS:
                    break
                need = self._take(ci, i, key, need, residual)
            first = True
            while need > EPS:
                i, places, cost = self._best(ci, need, exclude)
                if first and self._switch(ci, key, cost if i >= 0 else math.inf, residual, exclude):
                    break
                first = False
                if i < 0:
                    self.unserved_qps[ci] = need
                    break
                self._place(i, places, residual)
                need = self._take(ci, i, key, need, residual)

    def _switch(
        self, ci: int, key: str, replicate_cost: float, residual: dict[int, float], exclude: int
    ) -> bool:
        """The paper's switch: serve the whole class with one faster or cheaper variant
        when that costs less than covering the shortfall, counting the replica time it
        frees on the others. Done (and True) when it wins."""
        p, priced = self.problem, self.priced_usd_per_hour
        qps = p.classes[ci].qps
        routed = {
            i: self.routed_qps[ci, i]
            for i in p.serving[key]
            if self.routed_qps.get((ci, i), 0.0) > EPS
        }
        if not routed:
            return False
        worst = max(priced[i] / p.options[i].capacity_qps[key] for i in routed)
        freed = {i: q / p.options[i].capacity_qps[key] * priced[i] for i, q in routed.items()}
        all_freed = sum(freed.values())
        # candidates by a lower bound of their net cost: their replicas' price alone
        ranked = []
        for i in p.serving[key]:
            cap = p.options[i].capacity_qps[key]
            if i == exclude or priced[i] / cap >= worst:
                continue
            extra = qps - routed.get(i, 0.0) - residual.get(i, 0.0) * cap
            if extra > EPS:
                gain = all_freed - freed.get(i, 0.0)
                lower = priced[i] * math.ceil(extra / cap - EPS) - gain
                ranked.append((lower, i, cap, extra, gain))
        ranked.sort()
        best: tuple[float, int, list[tuple[int, int]]] | None = None
        for lower, i, cap, extra, gain in ranked:
            if lower >= min(replicate_cost, best[0] if best else math.inf) - 1e-9:
                break
            places, covered, cost = self._placements(i, cap, extra)
            if not places or covered < extra - EPS:
                continue
            net = cost - gain
            if net < replicate_cost - 1e-9 and (best is None or net < best[0]):
                best = (net, i, places)
        if best is None:
            return False
        _, chosen, places = best
        for o, q in routed.items():
            if o != chosen:
                residual[o] += q / p.options[o].capacity_qps[key]
                del self.routed_qps[ci, o]
        self._place(chosen, places, residual)
        cap = p.options[chosen].capacity_qps[key]
        take = qps - routed.get(chosen, 0.0)
        self.routed_qps[ci, chosen] = qps
        residual[chosen] -= take / cap
        return True

    def _take(self, ci: int, i: int, key: str, need: float, residual: dict[int, float]) -> float:
        cap = self.problem.options[i].capacity_qps[key]
        take = min(need, residual.get(i, 0.0) * cap)
        if take <= EPS:
            return need
        self.routed_qps[ci, i] = self.routed_qps.get((ci, i), 0.0) + take
        residual[i] -= take / cap
        return need - take

    def trim(self, app: str) -> None:
        """Drop replicas the routing does not need: new ones and prospective hosts first."""
        p, capacity = self.problem, self.capacity
        used = self.used(app)
        for i in self.apps[app].options:
            if not capacity.replica_count[i]:
                continue
            placed = capacity.replicas[i]
            smallest = (
                min(capacity.factor(i, j) for j in placed) if capacity.capacity_factor else 1.0
            )
            if not _carries(capacity.replica_units[i] - smallest, used[i]):
                continue  # every replica is needed
            while capacity.replica_count[i] > 0:
                spots = sorted(
                    placed,
                    key=lambda j: (
                        not p.hosts[j].prospective,
                        placed[j] <= capacity.running[i].get(j, 0),
                        capacity.factor(i, j),
                        capacity.fullness(j),
                        p.hosts[j].id,
                    ),
                )
                for j in spots:
                    if _carries(capacity.replica_units[i] - capacity.factor(i, j), used[i]):
                        capacity.add(i, j, -1)
                        break
                else:
                    break

    # -- trying a change ----------------------------------------------------------------

    def save(self, app: str) -> _Saved:
        classes, options = self.apps[app]
        mine = set(classes)
        return _Saved(
            self.capacity.save(options),
            {k: q for k, q in self.routed_qps.items() if k[0] in mine},
            {ci: self.unserved_qps[ci] for ci in classes if ci in self.unserved_qps},
        )

    def restore(self, app: str, saved: _Saved) -> None:
        classes, options = self.apps[app]
        self.capacity.restore(options, saved.capacity)
        mine = set(classes)
        for key in [k for k in self.routed_qps if k[0] in mine]:
            del self.routed_qps[key]
        self.routed_qps.update(saved.routed_qps)
        for ci in classes:
            self.unserved_qps.pop(ci, None)
        self.unserved_qps.update(saved.unserved_qps)

    def used(self, app: str) -> dict[int, float]:
        """Replica time each option of the app spends on the routed load."""
        p = self.problem
        classes, options = self.apps[app]
        used = dict.fromkeys(options, 0.0)
        for ci in classes:
            key = p.classes[ci].key
            for o in p.serving[key]:
                routed = self.routed_qps.get((ci, o))
                if routed:
                    used[o] += routed / p.options[o].capacity_qps[key]
        return used

    def demand_qps(self, app: str) -> float:
        return sum(self.problem.classes[ci].qps for ci in self.apps[app].classes)

    # -- the answer ---------------------------------------------------------------------

    def short_of(self) -> list[str]:
        """Hardware this plan ran short of: it starts workers of it, or leaves load."""
        capacity = self.capacity
        short = {
            hardware
            for hardware, hosts in capacity.hosts_by_hardware.items()
            if any(capacity.opened(j) for j in hosts if self.problem.hosts[j].prospective)
        }
        if self.unserved_qps:
            short.update(o.hardware for o in self.problem.options)
        return sorted(short)

    def replicas(self) -> dict[tuple[str, str], int]:
        p = self.problem
        return {
            (p.options[i].variant, p.hosts[j].id): c
            for i, placed in enumerate(self.capacity.replicas)
            for j, c in placed.items()
            if c > 0
        }

    def unserved_by_key(self) -> dict[str, float]:
        return {self.problem.classes[ci].key: q for ci, q in self.unserved_qps.items()}


def _run(build: _Build, improve_passes: int) -> None:
    """Cover every app (the busiest first), trim, then improve while it pays."""
    apps = sorted(build.apps, key=lambda a: (-build.demand_qps(a), a))
    for app in apps:
        build.cover(app)
    for app in apps:
        build.trim(app)
    for _ in range(improve_passes):
        # after the first pass, only apps that just changed are worth another look
        apps = [app for app in apps if _improve(build, app)]
        if not apps:
            break


def _app_objective(build: _Build, app: str) -> float:
    """The app's share of the priced objective, plus every started worker."""
    p, capacity = build.problem, build.capacity
    classes, options = build.apps[app]
    total = 0.0
    for i in options:
        if capacity.replica_count[i]:
            total += build.priced_usd_per_hour[i] * capacity.replica_count[i]
            if build.penalty_usd_per_hour[i]:
                total += build.penalty_usd_per_hour[i] * capacity.loaded(i)
    for ci in classes:
        missing = build.unserved_qps.get(ci, 0.0)
        c = p.classes[ci]
        if missing > EPS and c.qps > 0:
            total += p.unserved_per_percent[c.key] * 100.0 * missing / c.qps
    for j in capacity.prospective_hosts:
        if capacity.opened(j):
            total += p.hosts[j].open_cost_per_hour
    return total


def _improve(build: _Build, app: str) -> bool:
    """Try each variant of the app away (and, where it is Interfered somewhere, placed
    anew); keep what lowers the objective."""
    capacity = build.capacity
    classes, options = build.apps[app]
    improved = False
    ranked = sorted(
        (i for i in options if capacity.replica_count[i] > 0),
        key=lambda i: (
            -build.priced_usd_per_hour[i] * capacity.replica_count[i],
            build.problem.options[i].variant,
        ),
    )
    used = build.used(app)
    prunable = not any(ci in build.unserved_qps for ci in classes)
    for i in ranked:
        slowed = i in capacity.interfered
        if prunable and not slowed and _cannot_gain(build, app, i, used):
            continue
        for exclude in (i, -1) if slowed else (i,):
            if capacity.replica_count[i] > 0 and _try_without(build, app, i, exclude):
                improved = True
                used = build.used(app)
                prunable = not any(ci in build.unserved_qps for ci in classes)
    return improved


def _cannot_gain(build: _Build, app: str, i: int, used: Mapping[int, float]) -> bool:
    """True when carrying ``i``'s load elsewhere surely costs at least what ``i`` does:
    its load, less the spare time of replicas already placed, at the cheapest price
    per query on offer. Skipping such tries loses nothing (a try also re-covers the
    whole app, so apps with load left unserved are always tried)."""
    p, capacity, priced = build.problem, build.capacity, build.priced_usd_per_hour
    hosts = p.hosts
    saving = priced[i] * capacity.replica_count[i]
    for j, c in capacity.replicas[i].items():
        saving += build.penalty_usd_per_hour[i] * max(c - capacity.running[i].get(j, 0), 0)
        if hosts[j].prospective and capacity.free_slots[j] + c == hosts[j].max_replicas:
            saving += hosts[j].open_cost_per_hour  # i alone opened it
    least = 0.0
    for ci in build.apps[app].classes:
        moved = build.routed_qps.get((ci, i), 0.0)
        if moved <= EPS:
            continue
        key = p.classes[ci].key
        spare = 0.0
        price = math.inf
        for o in p.serving[key]:
            if o != i:
                cap = p.options[o].capacity_qps[key]
                spare += max(capacity.replica_units[o] - used[o], 0.0) * cap
                price = min(price, priced[o] / cap)
        least += max(moved - spare, 0.0) * price
        if least >= saving:
            return True
    return least >= saving - 1e-9


def _try_without(build: _Build, app: str, i: int, exclude: int) -> bool:
    before = _app_objective(build, app)
    saved = build.save(app)
    for j, count in sorted(build.capacity.replicas[i].items()):
        build.capacity.add(i, j, -count)
    build.cover(app, exclude=exclude)
    build.trim(app)
    if _app_objective(build, app) < before - 1e-9:
        return True
    build.restore(app, saved)
    return False


def _carries(units: float, used: float) -> bool:
    """Whether ``units`` of replica time carry the ``used`` time routed onto them, up to
    rounding relative to ``used``: an absolute allowance (it was 1e-6 of a replica) let
    trimming take the last replica of a small load on a fast variant (1 q/s on a replica
    of 10^6 q/s uses 10^-6 of it), leaving the load routed onto nothing."""
    return units >= used * (1.0 - 1e-9) and (units > 0 or used <= 0)


class GreedyPlanner:
    """Fast and good: the paper's heuristic with a local improvement pass."""

    name = "greedy"

    def __init__(self, *, improve_passes: int = 2) -> None:
        self.improve_passes = improve_passes

    def solve(self, problem: Problem) -> Assignment:
        started = time.perf_counter()
        build = _Build(problem, {})
        _run(build, self.improve_passes)
        best = build
        best_objective = evaluate(problem, build.replicas(), build.unserved_by_key())[1]
        prices = {hw: unit_prices(problem, hw) for hw in build.short_of()}
        if any(prices.values()):
            again = _Build(problem, prices)
            _run(again, 1)  # a second opinion; one pass keeps it quick
            objective = evaluate(problem, again.replicas(), again.unserved_by_key())[1]
            if objective < best_objective - 1e-9:
                best = again
        return _finish(problem, best, started)


def _finish(problem: Problem, build: _Build, started: float) -> Assignment:
    replicas = build.replicas()
    unserved = build.unserved_by_key()
    cost, objective = evaluate(problem, replicas, unserved)
    routing = {
        (problem.classes[ci].key, problem.options[i].variant): q
        for (ci, i), q in sorted(build.routed_qps.items())
        if q > EPS
    }
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    return Assignment(
        replicas=dict(sorted(replicas.items())),
        routing=routing,
        unserved_qps=unserved,
        cost_per_hour=cost,
        objective=objective,
        planner="greedy",
        status="heuristic",
        solve_ms=elapsed_ms,
        timings={"greedy_ms": elapsed_ms},
    )

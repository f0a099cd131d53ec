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

Hosts are filled fullest first, so load gathers on few workers and idle ones can go.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

from scaler.planner import EPS, Assignment, Problem, evaluate


@dataclass(slots=True)
class _Saved:
    """What trying a change to one app may touch."""

    n: dict[int, dict[int, int]]
    free_cores: list[float]
    free_memory: list[float]
    free_slots: list[int]
    units: dict[int, float]
    total: dict[int, int]
    routing: dict[tuple[int, int], float]
    unserved: dict[int, float]


class _Build:
    """The plan under construction; indexes stand for classes, options and hosts.

    ``unit_price`` prices hardware capacity while planning (per core on CPU, per replica
    slot on GPU); it steers choices only, the answer is judged without it.
    """

    def __init__(self, problem: Problem, unit_price: Mapping[str, float]) -> None:
        self.p = problem
        options, hosts = problem.options, problem.hosts
        penalty = problem.load_penalty_per_s
        self.cost = [o.cost_per_hour for o in options]
        self.pen = [o.penalty_per_hour(penalty) for o in options]
        self.priced = [
            o.cost_per_hour
            + unit_price.get(o.hardware, 0.0) * (o.cores if o.hardware == "cpu" else 1)
            for o in options
        ]
        self.free_cores = [h.cores - h.reserved_cores for h in hosts]
        self.free_memory = [h.memory_mb - h.reserved_memory_mb for h in hosts]
        self.free_slots = [h.max_replicas for h in hosts]
        self.n: list[dict[int, int]] = [{} for _ in options]
        self.units = dict.fromkeys(range(len(options)), 0.0)
        self.total = dict.fromkeys(range(len(options)), 0)
        self.routing: dict[tuple[int, int], float] = {}
        self.unserved: dict[int, float] = {}
        self.open_of: dict[str, list[int]] = {}  # hosts with room, per hardware
        self.cpu_host = [h.hardware == "cpu" for h in hosts]
        self.open_dirty: dict[str, bool] = {}
        self.cur: list[dict[int, int]] = [{} for _ in options]
        self.factor: dict[tuple[int, int], float] = {}
        for j, h in enumerate(hosts):
            for vid, f in h.capacity_factor.items():
                if vid in problem.option_index:
                    self.factor[problem.option_index[vid], j] = f
        self.slowed = {i for i, _ in self.factor}
        for j, h in enumerate(hosts):
            for vid, count in sorted(h.current.items()):
                i = problem.option_index[vid]
                self.cur[i][j] = count
                if not h.closed and count > 0 and options[i].hardware == h.hardware:
                    # what no longer fits (the host shrank) has to go
                    kept = min(count, self._room(i, j))
                    if kept > 0:
                        self._add(i, j, kept)
        order = sorted(
            (j for j, h in enumerate(hosts) if not h.closed),
            # running workers, then those asked for (free), then those to open, the
            # cheapest first (a spare before a new worker)
            key=lambda j: (
                hosts[j].prospective,
                hosts[j].open_cost_per_hour,
                -self.fullness(j),
                hosts[j].id,
            ),
        )
        self.hosts_of: dict[str, list[int]] = {}
        for j in order:
            self.hosts_of.setdefault(hosts[j].hardware, []).append(j)
        self.prospective = [j for j in order if hosts[j].prospective]
        self.apps: dict[str, tuple[list[int], list[int]]] = {}
        for ci, c in enumerate(problem.classes):
            self.apps.setdefault(c.app, ([], []))[0].append(ci)
        for i, o in enumerate(options):
            self.apps.setdefault(o.app, ([], []))[1].append(i)
        self.prefer: dict[int, list[int]] = {}
        for ci, c in enumerate(problem.classes):
            self.prefer[ci] = sorted(
                problem.serving[c.key],
                key=lambda i, key=c.key: (  # type: ignore[misc]
                    self.priced[i] / options[i].capacity_qps[key],
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

    def fullness(self, j: int) -> float:
        host = self.p.hosts[j]
        used = 0.0
        if host.cores:
            used = (host.cores - self.free_cores[j]) / host.cores
        if host.memory_mb:
            used = max(used, (host.memory_mb - self.free_memory[j]) / host.memory_mb)
        if host.max_replicas:
            used = max(used, (host.max_replicas - self.free_slots[j]) / host.max_replicas)
        return used

    # -- replicas -------------------------------------------------------------------

    def _f(self, i: int, j: int) -> float:
        return self.factor.get((i, j), 1.0)

    def _room(self, i: int, j: int) -> int:
        o = self.p.options[i]
        fits = min(self.free_slots[j], o.max_replicas - self.total[i])
        limit = self.p.hosts[j].max_per_variant
        if limit is not None:
            fits = min(fits, limit - self.n[i].get(j, 0))
        if o.cores > 0:
            fits = min(fits, math.floor(self.free_cores[j] / o.cores + EPS))
        if o.memory_mb > 0:
            fits = min(fits, int(self.free_memory[j] / o.memory_mb + EPS))
        return max(fits, 0)

    def _open_hosts(self, hardware: str) -> list[int]:
        """Hosts of ``hardware`` with room left (in fill order), rebuilt when one filled
        up or emptied: full hosts are most hosts when capacity is short."""
        if self.open_dirty.get(hardware, True):
            self.open_of[hardware] = [
                j for j in self.hosts_of.get(hardware, []) if self._has_room(j)
            ]
            self.open_dirty[hardware] = False
        return self.open_of[hardware]

    def _has_room(self, j: int) -> bool:
        return self.free_slots[j] > 0 and (self.free_cores[j] > EPS or not self.cpu_host[j])

    def _add(self, i: int, j: int, count: int) -> None:
        o = self.p.options[i]
        was_open = self._has_room(j)
        placed = self.n[i]
        now = placed.get(j, 0) + count
        if now:
            placed[j] = now
        else:
            del placed[j]
        self.free_cores[j] -= o.cores * count
        self.free_memory[j] -= o.memory_mb * count
        self.free_slots[j] -= count
        if was_open != self._has_room(j):
            self.open_dirty[o.hardware] = True
        self.units[i] += self.factor.get((i, j), 1.0) * count
        self.total[i] += count

    # -- covering a shortfall -----------------------------------------------------------

    def _dry_run(  # noqa: PLR0912 - the hot path: host checks are inlined for speed
        self, i: int, cap: float, need: float
    ) -> tuple[list[tuple[int, int]], float, float]:
        """Where replicas of option ``i`` (``cap`` qps each) covering ``need`` would go:
        (placements, qps covered, priced cost of the change)."""
        p = self.p
        o = p.options[i]
        hosts = p.hosts
        cur, placed = self.cur[i], self.n[i]
        order = self._open_hosts(o.hardware)
        # hosts it was just taken off first: no load penalty there
        back = [j for j, c in cur.items() if c > placed.get(j, 0) and not hosts[j].closed]
        if back:
            order = back + [j for j in order if j not in back]
        if i in self.slowed:  # full-speed hosts before those where it is Interfered
            order = sorted(order, key=lambda j: -self.factor.get((i, j), 1.0))
        cores, memory = o.cores, o.memory_mb
        free_cores, free_memory, free_slots = self.free_cores, self.free_memory, self.free_slots
        spare = o.max_replicas - self.total[i]
        placements: list[tuple[int, int]] = []
        covered = cost = 0.0
        for j in order:
            if spare <= 0:
                break
            room = free_slots[j]
            if room <= 0:
                continue
            limit = hosts[j].max_per_variant
            if limit is not None:
                room = min(room, limit - placed.get(j, 0))
                if room <= 0:
                    continue
            if cores:
                fits = int(free_cores[j] / cores + EPS)
                if fits <= 0:
                    continue
                room = fits if fits < room else room
            if memory:
                fits = int(free_memory[j] / memory + EPS)
                if fits <= 0:
                    continue
                room = fits if fits < room else room
            per = cap * self.factor.get((i, j), 1.0)
            count = min(room, spare, math.ceil((need - covered) / per - EPS))
            if count <= 0:
                continue
            host = hosts[j]
            if host.prospective and self.free_slots[j] == host.max_replicas:
                cost += host.open_cost_per_hour
            free_back = max(cur.get(j, 0) - placed.get(j, 0), 0)
            cost += self.priced[i] * count + self.pen[i] * max(count - free_back, 0)
            covered += per * count
            spare -= count
            placements.append((j, count))
            if covered >= need - EPS:
                break
        return placements, min(covered, need), cost

    def _best(self, ci: int, need: float, exclude: int) -> tuple[int, list[tuple[int, int]], float]:
        """The cheapest way to cover ``need``: option, placements, priced cost (option -1
        when nothing can be placed)."""
        p = self.p
        key = p.classes[ci].key
        estimates = []
        for i in p.serving[key]:
            o = p.options[i]
            if i == exclude or self.total[i] >= o.max_replicas:
                continue
            count = math.ceil(need / o.capacity_qps[key] - EPS)
            cur = self.cur[i]
            back = sum(max(c - self.n[i].get(j, 0), 0) for j, c in cur.items()) if cur else 0
            lower = self.priced[i] * count + self.pen[i] * max(count - back, 0)
            estimates.append((lower, self.total[i] == 0, o.load_ms, o.variant, i))
        estimates.sort()
        best: tuple[float, bool, float, str] | None = None
        best_partial: tuple[float, float, str] | None = None
        chosen, chosen_places, chosen_cost = -1, [], math.inf
        partial, partial_places = -1, []
        for lower, fresh, load_ms, variant, i in estimates:
            if best is not None and (lower, fresh, load_ms, variant) >= best:
                break
            places, covered, cost = self._dry_run(i, p.options[i].capacity_qps[key], need)
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

    def cover(self, app: str, exclude: int = -1) -> None:
        """Route the app's classes onto its replicas, adding replicas where short."""
        p = self.p
        classes, options = self.apps[app]
        residual = {i: self.units[i] for i in options}
        for ci in classes:
            for i in p.serving[p.classes[ci].key]:
                self.routing.pop((ci, i), None)
            self.unserved.pop(ci, None)
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
                    self.unserved[ci] = need
                    break
                for j, count in places:
                    self._add(i, j, count)
                    residual[i] = residual.get(i, 0.0) + self._f(i, j) * count
                need = self._take(ci, i, key, need, residual)

    def _switch(
        self, ci: int, key: str, replicate_cost: float, residual: dict[int, float], exclude: int
    ) -> bool:
        """The paper's switch: serve the whole class with one faster or cheaper variant
        when that costs less than covering the shortfall, counting the replica time it
        frees on the others. Done (and True) when it wins."""
        p = self.p
        qps = p.classes[ci].qps
        routed = {
            i: self.routing[ci, i] for i in p.serving[key] if self.routing.get((ci, i), 0.0) > EPS
        }
        if not routed:
            return False
        worst = max(self.priced[i] / p.options[i].capacity_qps[key] for i in routed)
        freed = {i: q / p.options[i].capacity_qps[key] * self.priced[i] for i, q in routed.items()}
        all_freed = sum(freed.values())
        # candidates by a lower bound of their net cost: their replicas' price alone
        ranked = []
        for i in p.serving[key]:
            cap = p.options[i].capacity_qps[key]
            if i == exclude or self.priced[i] / cap >= worst:
                continue
            extra = qps - routed.get(i, 0.0) - residual.get(i, 0.0) * cap
            if extra > EPS:
                gain = all_freed - freed.get(i, 0.0)
                lower = self.priced[i] * math.ceil(extra / cap - EPS) - gain
                ranked.append((lower, i, cap, extra, gain))
        ranked.sort()
        best: tuple[float, int, list[tuple[int, int]]] | None = None
        for lower, i, cap, extra, gain in ranked:
            if lower >= min(replicate_cost, best[0] if best else math.inf) - 1e-9:
                break
            places, covered, cost = self._dry_run(i, cap, extra)
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
                del self.routing[ci, o]
        for j, count in places:
            self._add(chosen, j, count)
            residual[chosen] = residual.get(chosen, 0.0) + self._f(chosen, j) * count
        cap = p.options[chosen].capacity_qps[key]
        take = qps - routed.get(chosen, 0.0)
        self.routing[ci, chosen] = qps
        residual[chosen] -= take / cap
        return True

    def _take(self, ci: int, i: int, key: str, need: float, residual: dict[int, float]) -> float:
        cap = self.p.options[i].capacity_qps[key]
        take = min(need, residual.get(i, 0.0) * cap)
        if take <= EPS:
            return need
        self.routing[ci, i] = self.routing.get((ci, i), 0.0) + take
        residual[i] -= take / cap
        return need - take

    def trim(self, app: str) -> None:
        """Drop replicas the routing does not need: new ones and prospective hosts first."""
        p = self.p
        classes, options = self.apps[app]
        used = dict.fromkeys(options, 0.0)
        for ci in classes:
            key = p.classes[ci].key
            for i in p.serving[key]:
                routed = self.routing.get((ci, i))
                if routed:
                    used[i] += routed / p.options[i].capacity_qps[key]
        for i in options:
            if not self.total[i]:
                continue
            smallest = min(self._f(i, j) for j in self.n[i]) if self.factor else 1.0
            if not _carries(self.units[i] - smallest, used[i]):
                continue  # every replica is needed
            while self.total[i] > 0:
                spots = sorted(
                    self.n[i],
                    key=lambda j: (
                        not p.hosts[j].prospective,
                        self.n[i][j] <= self.cur[i].get(j, 0),
                        self._f(i, j),
                        self.fullness(j),
                        p.hosts[j].id,
                    ),
                )
                for j in spots:
                    if _carries(self.units[i] - self._f(i, j), used[i]):
                        self._add(i, j, -1)
                        break
                else:
                    break

    # -- improving ----------------------------------------------------------------------

    def app_objective(self, app: str) -> float:
        """The app's share of the priced objective, plus every started worker."""
        p = self.p
        classes, options = self.apps[app]
        total = 0.0
        for i in options:
            if self.total[i]:
                total += self.priced[i] * self.total[i]
                if self.pen[i]:
                    cur = self.cur[i]
                    added = sum(max(c - cur.get(j, 0), 0) for j, c in self.n[i].items())
                    total += self.pen[i] * added
        for ci in classes:
            missing = self.unserved.get(ci, 0.0)
            c = p.classes[ci]
            if missing > EPS and c.qps > 0:
                total += p.unserved_per_percent[c.key] * 100.0 * missing / c.qps
        for j in self.prospective:
            if self.free_slots[j] < p.hosts[j].max_replicas:
                total += p.hosts[j].open_cost_per_hour
        return total

    def _save(self, app: str) -> _Saved:
        classes, options = self.apps[app]
        mine = set(classes)
        return _Saved(
            {i: dict(self.n[i]) for i in options},
            list(self.free_cores),
            list(self.free_memory),
            list(self.free_slots),
            {i: self.units[i] for i in options},
            {i: self.total[i] for i in options},
            {k: q for k, q in self.routing.items() if k[0] in mine},
            {ci: self.unserved[ci] for ci in classes if ci in self.unserved},
        )

    def _restore(self, app: str, saved: _Saved) -> None:
        classes, options = self.apps[app]
        for i in options:
            self.n[i] = saved.n[i]
            self.units[i] = saved.units[i]
            self.total[i] = saved.total[i]
        self.free_cores, self.free_memory = saved.free_cores, saved.free_memory
        self.free_slots = saved.free_slots
        self.open_dirty.clear()
        mine = set(classes)
        for key in [k for k in self.routing if k[0] in mine]:
            del self.routing[key]
        self.routing.update(saved.routing)
        for ci in classes:
            self.unserved.pop(ci, None)
        self.unserved.update(saved.unserved)

    def improve(self, app: str) -> bool:
        """Try each variant of the app away (and, where it is Interfered somewhere, placed
        anew); keep what lowers the objective."""
        p = self.p
        classes, options = self.apps[app]
        improved = False
        ranked = sorted(
            (i for i in options if self.total[i] > 0),
            key=lambda i: (-self.priced[i] * self.total[i], p.options[i].variant),
        )
        used = self._used(app)
        prunable = not any(ci in self.unserved for ci in classes)
        for i in ranked:
            if prunable and i not in self.slowed and self._cannot_gain(app, i, used):
                continue
            for exclude in (i, -1) if i in self.slowed else (i,):
                if self.total[i] > 0 and self._try_without(app, i, exclude):
                    improved = True
                    used = self._used(app)
                    prunable = not any(ci in self.unserved for ci in classes)
        return improved

    def _used(self, app: str) -> dict[int, float]:
        """Replica time each option of the app spends on the routed load."""
        p = self.p
        classes, options = self.apps[app]
        used = dict.fromkeys(options, 0.0)
        for ci in classes:
            key = p.classes[ci].key
            for o in p.serving[key]:
                routed = self.routing.get((ci, o))
                if routed:
                    used[o] += routed / p.options[o].capacity_qps[key]
        return used

    def _cannot_gain(self, app: str, i: int, used: Mapping[int, float]) -> bool:
        """True when carrying ``i``'s load elsewhere surely costs at least what ``i`` does:
        its load, less the spare time of replicas already placed, at the cheapest price
        per query on offer. Skipping such tries loses nothing (a try also re-covers the
        whole app, so apps with load left unserved are always tried)."""
        p = self.p
        hosts = p.hosts
        saving = self.priced[i] * self.total[i]
        for j, c in self.n[i].items():
            saving += self.pen[i] * max(c - self.cur[i].get(j, 0), 0)
            if hosts[j].prospective and self.free_slots[j] + c == hosts[j].max_replicas:
                saving += hosts[j].open_cost_per_hour  # i alone opened it
        least = 0.0
        for ci in self.apps[app][0]:
            moved = self.routing.get((ci, i), 0.0)
            if moved <= EPS:
                continue
            key = p.classes[ci].key
            spare = 0.0
            price = math.inf
            for o in p.serving[key]:
                if o != i:
                    cap = p.options[o].capacity_qps[key]
                    spare += max(self.units[o] - used[o], 0.0) * cap
                    price = min(price, self.priced[o] / cap)
            least += max(moved - spare, 0.0) * price
            if least >= saving:
                return True
        return least >= saving - 1e-9

    def _try_without(self, app: str, i: int, exclude: int) -> bool:
        before = self.app_objective(app)
        saved = self._save(app)
        for j, count in sorted(self.n[i].items()):
            self._add(i, j, -count)
        self.cover(app, exclude=exclude)
        self.trim(app)
        if self.app_objective(app) < before - 1e-9:
            return True
        self._restore(app, saved)
        return False

    def run(self, improve_passes: int) -> None:
        apps = sorted(self.apps, key=lambda a: (-self._demand(a), a))
        for app in apps:
            self.cover(app)
        for app in apps:
            self.trim(app)
        for _ in range(improve_passes):
            # after the first pass, only apps that just changed are worth another look
            apps = [app for app in apps if self.improve(app)]
            if not apps:
                break

    def _demand(self, app: str) -> float:
        return sum(self.p.classes[ci].qps for ci in self.apps[app][0])

    def short_of(self) -> list[str]:
        """Hardware this plan ran short of: it starts workers of it, or leaves load."""
        p = self.p
        short = {
            hardware
            for hardware, hosts in self.hosts_of.items()
            if any(
                self.free_slots[j] < p.hosts[j].max_replicas
                for j in hosts
                if p.hosts[j].prospective
            )
        }
        if self.unserved:
            short.update(o.hardware for o in p.options)
        return sorted(short)

    def replicas(self) -> dict[tuple[str, str], int]:
        p = self.p
        return {
            (p.options[i].variant, p.hosts[j].id): c
            for i, placed in enumerate(self.n)
            for j, c in placed.items()
            if c > 0
        }

    def unserved_by_key(self) -> dict[str, float]:
        return {self.p.classes[ci].key: q for ci, q in self.unserved.items()}


def _carries(units: float, used: float) -> bool:
    """Whether ``units`` of replica time carry the ``used`` time routed onto them, up to
    rounding relative to ``used``: an absolute allowance (it was 1e-6 of a replica) let
    trimming take the last replica of a small load on a fast variant (1 q/s on a replica
    of 10^6 q/s uses 10^-6 of it), leaving the load routed onto nothing."""
    return units >= used * (1.0 - 1e-9) and (units > 0 or used <= 0)


def unit_prices(problem: Problem, hardware: str) -> float:
    """What a unit of ``hardware`` capacity is worth when it is short.

    Each class is costed served wholly on ``hardware`` and wholly elsewhere (or not at all,
    when nothing else serves it); classes that save by ``hardware`` get its capacity in
    order of their saving per unit, and the saving of the first class that no longer fits
    is the price.
    """
    hosts = [h for h in problem.hosts if h.hardware == hardware and not h.closed]
    if hardware == "cpu":
        supply = float(sum(max(h.cores - h.reserved_cores, 0.0) for h in hosts))
    else:
        supply = float(sum(h.max_replicas for h in hosts))
    wants: list[tuple[float, float]] = []
    for c in problem.classes:
        if c.qps <= 0:
            continue
        here: tuple[float, float] | None = None
        there: float | None = None
        for i in problem.serving[c.key]:
            o = problem.options[i]
            count = math.ceil(c.qps / o.capacity_qps[c.key] - EPS)
            cost = count * (o.cost_per_hour + o.penalty_per_hour(problem.load_penalty_per_s))
            if o.hardware == hardware:
                taken = count * (o.cores if hardware == "cpu" else 1)
                if here is None or cost < here[0]:
                    here = (cost, float(taken))
            elif there is None or cost < there:
                there = cost
        if there is None:  # nothing else serves it: going without costs the unserved price
            there = problem.unserved_per_percent[c.key] * 100.0
        if here is not None and there > here[0] and here[1] > 0:
            wants.append(((there - here[0]) / here[1], here[1]))
    wants.sort(reverse=True)
    for saving, units in wants:
        supply -= units
        if supply < 0:
            return saving
    return 0.0


class GreedyPlanner:
    """Fast and good: the paper's heuristic with a local improvement pass."""

    name = "greedy"

    def __init__(self, *, improve_passes: int = 2) -> None:
        self.improve_passes = improve_passes

    def solve(self, problem: Problem) -> Assignment:
        started = time.perf_counter()
        build = _Build(problem, {})
        build.run(self.improve_passes)
        best = build
        best_objective = evaluate(problem, build.replicas(), build.unserved_by_key())[1]
        prices = {hw: unit_prices(problem, hw) for hw in build.short_of()}
        if any(prices.values()):
            again = _Build(problem, prices)
            again.run(1)  # a second opinion; one pass keeps it quick
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
        for (ci, i), q in sorted(build.routing.items())
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

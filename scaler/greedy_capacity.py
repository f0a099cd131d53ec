"""The greedy planner's books of capacity: what each host has left, and where each option's
replicas sit while a plan is built.

Indexes stand for the problem's options (``option``) and hosts (``host``). The planner
routes load and judges costs; this module only answers "how many replicas of this option
fit on that host" and "where would the replicas covering this load go", and keeps the
free cores, memory and replica slots right as replicas come and go.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from scaler.planner import EPS, Problem


class Placements(NamedTuple):
    """Where replicas covering some load would go, without placing them."""

    hosts: list[tuple[int, int]]  # (host, replicas)
    covered_qps: float
    cost_usd_per_hour: float


@dataclass(slots=True)
class SavedCapacity:
    """The books as they were before a try, for the options it may touch."""

    replicas: dict[int, dict[int, int]]
    free_cores: list[float]
    free_memory_mb: list[float]
    free_slots: list[int]
    replica_units: dict[int, float]
    replica_count: dict[int, int]


class Capacity:
    """Free capacity per host and the replicas of each option per host.

    ``replica_units`` counts an option's replicas weighted by their capacity factor (a
    replica where the option is Interfered counts for less than one), ``replica_count``
    counts them plainly. Hosts are filled fullest first (``hosts_by_hardware`` is the fill
    order), so load gathers on few workers and idle ones can go.
    """

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        options, hosts = problem.options, problem.hosts
        self.free_cores = [h.cores - h.reserved_cores for h in hosts]
        self.free_memory_mb = [h.memory_mb - h.reserved_memory_mb for h in hosts]
        self.free_slots = [h.max_replicas for h in hosts]
        self.replicas: list[dict[int, int]] = [{} for _ in options]  # option -> host -> n
        self.replica_units = dict.fromkeys(range(len(options)), 0.0)
        self.replica_count = dict.fromkeys(range(len(options)), 0)
        self.running: list[dict[int, int]] = [{} for _ in options]  # what runs now
        self.capacity_factor: dict[tuple[int, int], float] = {}  # (option, host), below 1
        self._cpu_host = [h.hardware == "cpu" for h in hosts]
        self._open_hosts: dict[str, list[int]] = {}  # hosts with room, per hardware
        self._open_stale: dict[str, bool] = {}
        for host, h in enumerate(hosts):
            for vid, f in h.capacity_factor.items():
                if vid in problem.option_index:
                    self.capacity_factor[problem.option_index[vid], host] = f
        self.interfered = {option for option, _ in self.capacity_factor}
        for host, h in enumerate(hosts):
            for vid, count in sorted(h.current.items()):
                option = problem.option_index[vid]
                self.running[option][host] = count
                if not h.closed and count > 0 and options[option].hardware == h.hardware:
                    # what no longer fits (the host shrank) has to go
                    kept = min(count, self.room(option, host))
                    if kept > 0:
                        self.add(option, host, kept)
        order = sorted(
            (host for host, h in enumerate(hosts) if not h.closed),
            # running workers, then those asked for (free), then those to open, the
            # cheapest first (a spare before a new worker)
            key=lambda host: (
                hosts[host].prospective,
                hosts[host].open_cost_per_hour,
                -self.fullness(host),
                hosts[host].id,
            ),
        )
        self.hosts_by_hardware: dict[str, list[int]] = {}
        for host in order:
            self.hosts_by_hardware.setdefault(hosts[host].hardware, []).append(host)
        self.prospective_hosts = [host for host in order if hosts[host].prospective]

    def factor(self, option: int, host: int) -> float:
        return self.capacity_factor.get((option, host), 1.0)

    def fullness(self, host: int) -> float:
        """The largest used share of the host's cores, memory and replica slots."""
        h = self.problem.hosts[host]
        used = 0.0
        if h.cores:
            used = (h.cores - self.free_cores[host]) / h.cores
        if h.memory_mb:
            used = max(used, (h.memory_mb - self.free_memory_mb[host]) / h.memory_mb)
        if h.max_replicas:
            used = max(used, (h.max_replicas - self.free_slots[host]) / h.max_replicas)
        return used

    def opened(self, host: int) -> bool:
        """Whether any replica sits on the host (for a prospective one: it is started)."""
        return self.free_slots[host] < self.problem.hosts[host].max_replicas

    def room(self, option: int, host: int) -> int:
        """How many more replicas of ``option`` fit on ``host``."""
        o = self.problem.options[option]
        fits = min(self.free_slots[host], o.max_replicas - self.replica_count[option])
        limit = self.problem.hosts[host].max_per_variant
        if limit is not None:
            fits = min(fits, limit - self.replicas[option].get(host, 0))
        if o.cores > 0:
            fits = min(fits, math.floor(self.free_cores[host] / o.cores + EPS))
        if o.memory_mb > 0:
            fits = min(fits, int(self.free_memory_mb[host] / o.memory_mb + EPS))
        return max(fits, 0)

    def returning(self, option: int) -> int:
        """Replicas of ``option`` that run now and the plan has taken off (free to put
        back: no load penalty)."""
        running = self.running[option]
        if not running:
            return 0
        placed = self.replicas[option]
        return sum(max(c - placed.get(host, 0), 0) for host, c in running.items())

    def loaded(self, option: int) -> int:
        """Replicas of ``option`` the plan adds to what runs now (each pays the load)."""
        running = self.running[option]
        return sum(max(c - running.get(host, 0), 0) for host, c in self.replicas[option].items())

    def open_hosts(self, hardware: str) -> list[int]:
        """Hosts of ``hardware`` with room left (in fill order), rebuilt when one filled
        up or emptied: full hosts are most hosts when capacity is short."""
        if self._open_stale.get(hardware, True):
            self._open_hosts[hardware] = [
                host for host in self.hosts_by_hardware.get(hardware, []) if self._has_room(host)
            ]
            self._open_stale[hardware] = False
        return self._open_hosts[hardware]

    def _has_room(self, host: int) -> bool:
        return self.free_slots[host] > 0 and (
            self.free_cores[host] > EPS or not self._cpu_host[host]
        )

    def add(self, option: int, host: int, count: int) -> None:
        """Place ``count`` replicas of ``option`` on ``host`` (take them off when < 0)."""
        o = self.problem.options[option]
        was_open = self._has_room(host)
        placed = self.replicas[option]
        now = placed.get(host, 0) + count
        if now:
            placed[host] = now
        else:
            del placed[host]
        self.free_cores[host] -= o.cores * count
        self.free_memory_mb[host] -= o.memory_mb * count
        self.free_slots[host] -= count
        if was_open != self._has_room(host):
            self._open_stale[o.hardware] = True
        self.replica_units[option] += self.capacity_factor.get((option, host), 1.0) * count
        self.replica_count[option] += count

    def placements(  # noqa: PLR0912 - the hot path: host checks are inlined for speed
        self,
        option: int,
        capacity_qps: float,
        need_qps: float,
        price_usd_per_hour: float,
        penalty_usd_per_hour: float,
    ) -> Placements:
        """Where replicas of ``option`` (``capacity_qps`` each) covering ``need_qps`` would
        go, without placing them: (host, count) pairs, the qps covered, and the cost of the
        change in $/h (replicas at ``price_usd_per_hour``, the load penalty for those not
        running now, and the workers they start)."""
        problem = self.problem
        o = problem.options[option]
        hosts = problem.hosts
        running, placed = self.running[option], self.replicas[option]
        order = self.open_hosts(o.hardware)
        # hosts it was just taken off first: no load penalty there
        back = [j for j, c in running.items() if c > placed.get(j, 0) and not hosts[j].closed]
        if back:
            order = back + [j for j in order if j not in back]
        if option in self.interfered:  # full-speed hosts before those where it is Interfered
            order = sorted(order, key=lambda j: -self.capacity_factor.get((option, j), 1.0))
        cores, memory_mb = o.cores, o.memory_mb
        free_cores, free_memory_mb, free_slots = (
            self.free_cores,
            self.free_memory_mb,
            self.free_slots,
        )
        spare = o.max_replicas - self.replica_count[option]
        chosen: list[tuple[int, int]] = []
        covered_qps = cost_usd_per_hour = 0.0
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
            if memory_mb:
                fits = int(free_memory_mb[j] / memory_mb + EPS)
                if fits <= 0:
                    continue
                room = fits if fits < room else room
            per_qps = capacity_qps * self.capacity_factor.get((option, j), 1.0)
            count = min(room, spare, math.ceil((need_qps - covered_qps) / per_qps - EPS))
            if count <= 0:
                continue
            host = hosts[j]
            if host.prospective and free_slots[j] == host.max_replicas:
                cost_usd_per_hour += host.open_cost_per_hour
            free_back = max(running.get(j, 0) - placed.get(j, 0), 0)
            cost_usd_per_hour += price_usd_per_hour * count + penalty_usd_per_hour * max(
                count - free_back, 0
            )
            covered_qps += per_qps * count
            spare -= count
            chosen.append((j, count))
            if covered_qps >= need_qps - EPS:
                break
        return Placements(chosen, min(covered_qps, need_qps), cost_usd_per_hour)

    def save(self, options: Iterable[int]) -> SavedCapacity:
        """The books of ``options`` and every host's free capacity."""
        mine = list(options)
        return SavedCapacity(
            {i: dict(self.replicas[i]) for i in mine},
            list(self.free_cores),
            list(self.free_memory_mb),
            list(self.free_slots),
            {i: self.replica_units[i] for i in mine},
            {i: self.replica_count[i] for i in mine},
        )

    def restore(self, options: Iterable[int], saved: SavedCapacity) -> None:
        for i in options:
            self.replicas[i] = saved.replicas[i]
            self.replica_units[i] = saved.replica_units[i]
            self.replica_count[i] = saved.replica_count[i]
        self.free_cores, self.free_memory_mb = saved.free_cores, saved.free_memory_mb
        self.free_slots = saved.free_slots
        self._open_stale.clear()


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

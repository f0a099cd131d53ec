"""The capacity problem of one tick, its answer, and the interface both planners share.

The problem (INFAAS.md, model-level autoscaling): choose integer replicas n_ij of option
(variant) i on host (worker) j, and a routing of each demand class's load to the
variants that serve it, so that

- every class gets its load (the headroom and queue backlog are already in it),
- a replica of i serves class c at ``capacity_qps[c]`` (less where it is Interfered),
  shared between the classes it serves in proportion of time,
- each host's cores, memory and replica slots hold what is placed on it,

minimising Σ cost_i · n_ij + Σ cost_i · λ · load_s_i · max(0, n_ij − current_ij) (the
paper's load-time penalty: replicas already loaded are cheap to keep) + the full price
of every worker that must be started. Load that cannot be placed is allowed but costs far
more than any placement, so the answer always exists and says what is missing.

:func:`evaluate` is the one objective both planners and the policy compare plans by.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from queues.errors import InvalidRequest

# unserved load is allowed (the answer always exists) at this many times the most any
# placement of the same load could cost
UNSERVED_WEIGHT = 2.0
EPS = 1e-9
CORE_UNITS = 1000  # a light replica's share of a core is counted in 1/1,000 of one


@dataclass(frozen=True, slots=True)
class ClassLoad:
    """Capacity a demand class needs, in queries per second."""

    key: str
    app: str
    qps: float


@dataclass(frozen=True, slots=True)
class Option:
    """A variant the planner may run: what one replica takes, costs and serves."""

    variant: str
    app: str
    hardware: str
    cores: float  # a light replica takes a share of its threads' cores (ScalerSettings)
    memory_mb: float
    cost_per_hour: float
    load_ms: float
    capacity_qps: Mapping[str, float]  # class key -> qps one replica serves of it
    max_replicas: int = 64

    def penalty_per_hour(self, load_penalty_per_s: float) -> float:
        """The extra a replica costs when it must be loaded: λ × load time × price."""
        return self.cost_per_hour * load_penalty_per_s * self.load_ms / 1000.0


@dataclass(frozen=True, slots=True)
class Host:
    """A worker (or one that could be started) and what runs on it now."""

    id: str
    hardware: str
    cores: int
    memory_mb: float
    max_replicas: int
    current: Mapping[str, int] = field(default_factory=dict)
    capacity_factor: Mapping[str, float] = field(default_factory=dict)
    open_cost_per_hour: float = 0.0  # paid once anything is placed on a prospective host
    prospective: bool = False  # not started yet: placing here means starting a worker
    closed: bool = False  # draining: nothing may stay or be placed here
    reserved_cores: float = 0.0  # taken by replicas the planner does not manage
    reserved_memory_mb: float = 0.0
    max_per_variant: int | None = None  # a GPU runs one replica of a variant: more would
    # only contend for the same device

    def factor(self, variant: str) -> float:
        return self.capacity_factor.get(variant, 1.0)

    def room(self, option: Option) -> int:
        """Most replicas of ``option`` this host can hold on its own."""
        if self.closed or option.hardware != self.hardware:
            return 0
        fits = min(self.max_replicas, option.max_replicas)
        if self.max_per_variant is not None:
            fits = min(fits, self.max_per_variant)
        if option.cores > 0:
            free_cores = max(self.cores - self.reserved_cores, 0.0)
            fits = min(fits, math.floor(free_cores / option.cores + EPS))
        if option.memory_mb > 0:
            free = max(self.memory_mb - self.reserved_memory_mb, 0.0)
            fits = min(fits, math.floor(free / option.memory_mb + EPS))
        return max(fits, 0)


@dataclass(frozen=True, slots=True)
class Problem:
    classes: tuple[ClassLoad, ...]
    options: tuple[Option, ...]
    hosts: tuple[Host, ...]
    load_penalty_per_s: float = 0.0
    serving: Mapping[str, tuple[int, ...]] = field(init=False)  # class -> option indexes
    option_index: Mapping[str, int] = field(init=False)
    unserved_per_percent: Mapping[str, float] = field(init=False)  # class -> $/h per 1 %

    def __post_init__(self) -> None:
        _check_problem(self)
        object.__setattr__(self, "option_index", {o.variant: i for i, o in enumerate(self.options)})
        serving = {
            c.key: tuple(i for i, o in enumerate(self.options) if o.capacity_qps.get(c.key, 0) > 0)
            for c in self.classes
        }
        object.__setattr__(self, "serving", serving)
        opening = sum(h.open_cost_per_hour for h in self.hosts if h.prospective)
        penalties: dict[str, float] = {}
        for c in self.classes:
            worst = 0.0
            for i in serving[c.key]:
                o = self.options[i]
                replicas = math.ceil(0.01 * c.qps / o.capacity_qps[c.key] - EPS) + 1
                per_replica = o.cost_per_hour + o.penalty_per_hour(self.load_penalty_per_s)
                worst = max(worst, replicas * per_replica)
            penalties[c.key] = UNSERVED_WEIGHT * (worst + opening) + 1.0
        object.__setattr__(self, "unserved_per_percent", penalties)


def _bad(message: str) -> InvalidRequest:
    return InvalidRequest(f"planner problem: {message}")


def _check_problem(problem: Problem) -> None:
    keys = {c.key: c.app for c in problem.classes}
    if len(keys) != len(problem.classes):
        raise _bad("two classes share a key; merge them first")
    for c in problem.classes:
        if not math.isfinite(c.qps) or c.qps < 0:
            raise _bad(f"class {c.key} needs {c.qps} qps; give a finite number >= 0")
    variants = {o.variant for o in problem.options}
    if len(variants) != len(problem.options):
        raise _bad("two options share a variant id")
    for o in problem.options:
        _check_option(o, keys)
    if len({h.id for h in problem.hosts}) != len(problem.hosts):
        raise _bad("two hosts share an id")
    for h in problem.hosts:
        _check_host(h, variants)
    if not math.isfinite(problem.load_penalty_per_s) or problem.load_penalty_per_s < 0:
        raise _bad(f"load penalty {problem.load_penalty_per_s} must be >= 0")


def _check_option(o: Option, classes: Mapping[str, str]) -> None:
    numbers = (o.cost_per_hour, o.load_ms, o.memory_mb, o.cores, o.max_replicas)
    if any(not math.isfinite(x) or x < 0 for x in numbers):
        raise _bad(f"option {o.variant} has a negative or non-finite size, cost or time")
    for key, qps in o.capacity_qps.items():
        if key not in classes:
            raise _bad(f"option {o.variant} serves class {key!r}, which is not in the problem")
        if classes[key] != o.app:
            raise _bad(f"option {o.variant} of app {o.app} serves {key} of app {classes[key]}")
        if not math.isfinite(qps) or qps < 0:
            raise _bad(f"option {o.variant} serves {key} at {qps} qps; give >= 0")


def _check_host(h: Host, variants: set[str]) -> None:
    sizes = (h.cores, h.memory_mb, h.max_replicas, h.open_cost_per_hour, h.max_per_variant or 0)
    if any(not math.isfinite(x) or x < 0 for x in sizes):
        raise _bad(f"host {h.id} has a negative or non-finite size or cost")
    for vid, n in h.current.items():
        if vid not in variants:
            raise _bad(
                f"host {h.id} runs {vid}, which is no option; count it in reserved_cores "
                "and reserved_memory_mb instead"
            )
        if n < 0:
            raise _bad(f"host {h.id} runs {n} replicas of {vid}")


@dataclass(frozen=True, slots=True)
class Assignment:
    """A planner's answer: replicas per (variant, host), and the routing it relies on."""

    replicas: Mapping[tuple[str, str], int]
    routing: Mapping[tuple[str, str], float]  # (class, variant) -> qps
    unserved_qps: Mapping[str, float]
    cost_per_hour: float  # hardware: replica prices and started workers
    objective: float  # cost + load-time penalties + unserved load
    planner: str
    status: str  # optimal | feasible | heuristic
    solve_ms: float = 0.0
    timings: Mapping[str, float] = field(default_factory=dict)
    bound: float | None = None  # a proven lower bound of the objective (ILP only)


class Planner(Protocol):
    """Solves one tick's capacity problem; pure apart from timing itself."""

    name: str

    def solve(self, problem: Problem) -> Assignment: ...


def evaluate(
    problem: Problem,
    replicas: Mapping[tuple[str, str], int],
    unserved_qps: Mapping[str, float],
) -> tuple[float, float]:
    """(hardware cost per hour, objective) of a plan: the one yardstick of all planners."""
    hosts = {h.id: h for h in problem.hosts}
    cost = 0.0
    penalty = 0.0
    opened: set[str] = set()
    for (vid, hid), n in replicas.items():
        if n <= 0:
            continue
        option = problem.options[problem.option_index[vid]]
        host = hosts[hid]
        cost += option.cost_per_hour * n
        added = n - host.current.get(vid, 0)
        if added > 0:
            penalty += option.penalty_per_hour(problem.load_penalty_per_s) * added
        if host.prospective:
            opened.add(hid)
    cost += sum(hosts[h].open_cost_per_hour for h in opened)
    short = 0.0
    for c in problem.classes:
        missing = unserved_qps.get(c.key, 0.0)
        if missing > EPS and c.qps > 0:
            short += problem.unserved_per_percent[c.key] * 100.0 * missing / c.qps
    return cost, cost + penalty + short

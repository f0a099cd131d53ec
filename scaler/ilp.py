"""The exact planner: the capacity problem as an integer program, solved by CP-SAT.

Variables: n_ij replicas of option i on host j; new_ij ≥ n_ij − current_ij (replicas to
load); open_j for hosts not started yet; r_ci, the share of option i's replica time that
serves class c (in 1/10,000 of a replica); s_c, the percent of class c left unserved.

    minimise  Σ price_i·n_ij + Σ price_i·λ·load_s_i·new_ij + Σ worker_price_j·open_j
              + Σ unserved_c·s_c
    s.t.      Σ_c r_ci ≤ Σ_j factor_ij·n_ij                  (replica time of i)
              Σ_i capacity_ci·r_ci ≥ (1 − s_c/100)·load_c   (every class served)
              Σ_i cores_i·n_ij ≤ cores_j,  Σ_i memory_i·n_ij ≤ memory_j,
              Σ_i n_ij ≤ slots_j,  Σ_j n_ij ≤ max_replicas_i

Cores are counted in 1/1,000 of a core where a light replica takes a share of one.
Money is counted in micro-dollars per hour (a replica to load costs one more, so ties
keep replicas where they run) and rates in integer units, so everything is an integer;
rates are rounded down and a replica's time gets about 2e-4 of slack, so that the greedy
plan, routed in real numbers, is a solution of the model too. The search is
warm-started from the greedy plan, runs on one worker with a fixed seed and a time limit
(and, for exact replays, a deterministic work limit), and when it finds nothing in time
the greedy plan is the answer ("greedy-fallback").
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any

from ortools.sat.python import cp_model

from scaler.greedy import GreedyPlanner
from scaler.planner import CORE_UNITS, EPS, Assignment, Host, Planner, Problem, evaluate

MICRO = 1_000_000  # objective unit: micro-dollars per hour
REPLICA_UNITS = 10_000  # r_ci counts 1/10,000 of a replica
MIN_RATE_UNITS = 10_000  # the smallest capacity coefficient, for 1e-4 relative rounding
MAX_COEFFICIENT = 2**53


def _money(value: float) -> int:
    return round(value * MICRO)


class _Model:
    """The CP-SAT model of one problem, with the maps back to its names."""

    def __init__(self, problem: Problem) -> None:
        self.p = problem
        self.m = cp_model.CpModel()
        self.n: dict[tuple[int, int], Any] = {}
        self.ub: dict[tuple[int, int], int] = {}  # room of each n_ij
        self.new: dict[tuple[int, int], Any] = {}
        self.open: dict[int, Any] = {}
        self.r: dict[tuple[int, int], Any] = {}
        self.r_ub: dict[tuple[int, int], int] = {}
        self.rate: dict[tuple[int, int], int] = {}  # qps × rate_scale per unit of r
        self.s: dict[int, Any] = {}
        self.rate_scale = self._rate_scale()
        # whole cores stay whole: the model (and a seed's replay) is as it was without
        # light replicas
        fractional = any(o.cores != math.floor(o.cores) for o in problem.options)
        self.core_units = CORE_UNITS if fractional else 1
        self.build()

    def _rate_scale(self) -> int:
        """Queries per second are counted in 1/scale: fine enough that the slowest rate is
        10,000 units (1e-4 rounding), coarse enough that no sum overflows 64 bits."""
        p = self.p
        rates = [p.options[i].capacity_qps[c.key] for c in p.classes for i in p.serving[c.key]]
        if not rates:
            return 1
        scale = math.ceil(MIN_RATE_UNITS * REPLICA_UNITS / min(rates))
        biggest = max((c.qps for c in p.classes), default=0.0) * 100.0 + 1.0
        # the largest term of a class's constraint: 100 × rate × replicas it may have
        largest = 1.0
        for o in p.options:
            if o.capacity_qps:
                room = min(sum(h.room(o) for h in p.hosts), o.max_replicas)
                largest = max(largest, 100.0 * max(o.capacity_qps.values()) * room)
        terms = max(len(p.serving[c.key]) for c in p.classes) or 1
        limit = MAX_COEFFICIENT / (largest * terms)
        return max(1, min(scale, int(MAX_COEFFICIENT / biggest), int(limit)))

    def build(self) -> None:
        objective: list[tuple[Any, int]] = []
        for j, host in enumerate(self.p.hosts):
            if not host.closed:
                self._host(j, host, objective)
        self._routing(objective)
        self.m.minimize(_weighted(objective))

    def _host(self, j: int, host: Host, objective: list[tuple[Any, int]]) -> None:
        """The replicas one host may take, and what they cost."""
        p, m = self.p, self.m
        cores: list[tuple[Any, int]] = []
        memory: list[tuple[Any, int]] = []
        placed: list[Any] = []
        slots = 0
        for i, option in enumerate(p.options):
            room = host.room(option)
            if room <= 0:
                continue
            n = m.new_int_var(0, room, f"n[{option.variant}@{host.id}]")
            self.n[i, j] = n
            self.ub[i, j] = room
            placed.append(n)
            slots += room
            if price := _money(option.cost_per_hour):
                objective.append((n, price))
            if option.cores:
                cores.append((n, math.ceil(option.cores * self.core_units - 1e-6)))
            if option.memory_mb:
                memory.append((n, round(option.memory_mb * 1000)))
            current = host.current.get(option.variant, 0)
            # one micro-dollar more per replica to load: ties keep what runs where it runs
            penalty = _money(option.penalty_per_hour(p.load_penalty_per_s)) + 1
            if room > current:
                new = m.new_int_var(0, room - current, f"new[{option.variant}@{host.id}]")
                m.add(new >= n - current)
                self.new[i, j] = new
                objective.append((new, penalty))
        if not placed:
            return
        if cores:
            free = max(host.cores - host.reserved_cores, 0.0)
            m.add(_weighted(cores) <= math.floor(free * self.core_units + 1e-6))
        if memory:
            m.add(_weighted(memory) <= round((host.memory_mb - host.reserved_memory_mb) * 1000))
        if host.max_replicas < slots:
            m.add(cp_model.LinearExpr.sum(placed) <= host.max_replicas)
        if host.prospective:
            opened = m.new_bool_var(f"open[{host.id}]")
            self.open[j] = opened
            m.add(cp_model.LinearExpr.sum(placed) <= min(slots, host.max_replicas) * opened)
            if host.open_cost_per_hour:
                objective.append((opened, _money(host.open_cost_per_hour)))

    def _routing(self, objective: list[tuple[Any, int]]) -> None:
        p, m = self.p, self.m
        by_option: dict[int, list[tuple[int, Any]]] = {}
        bounds: dict[int, int] = {}
        for (i, j), n in self.n.items():
            by_option.setdefault(i, []).append((j, n))
            bounds[i] = bounds.get(i, 0) + self.ub[i, j]
        shares: dict[int, list[Any]] = {}
        for ci, c in enumerate(p.classes):
            if c.qps <= 0:
                continue
            served: list[tuple[Any, int]] = []
            for i in p.serving[c.key]:
                if i not in by_option:
                    continue
                bound = REPLICA_UNITS * min(bounds[i], p.options[i].max_replicas)
                r = m.new_int_var(0, bound, f"r[{c.key}>{p.options[i].variant}]")
                self.r_ub[ci, i] = bound
                self.r[ci, i] = r
                shares.setdefault(i, []).append(r)
                rate = math.floor(
                    p.options[i].capacity_qps[c.key] * self.rate_scale / REPLICA_UNITS
                )
                self.rate[ci, i] = rate
                served.append((r, rate))
            need = math.ceil(c.qps * self.rate_scale)
            short = m.new_int_var(0, 100, f"s[{c.key}]")
            self.s[ci] = short
            objective.append((short, _money(p.unserved_per_percent[c.key])))
            m.add(100 * _weighted(served) + need * short >= 100 * need)
        for i, rs in shares.items():
            # rates are rounded down, so a replica may carry a hair (2e-4) more than its
            # units say: a plan routed in real numbers is then a solution here too
            slack = math.ceil(2e-4 * REPLICA_UNITS) + len(rs)
            supply = [
                (n, math.ceil(REPLICA_UNITS * p.hosts[j].factor(p.options[i].variant)) + slack)
                for j, n in by_option[i]
            ]
            m.add(cp_model.LinearExpr.sum(rs) <= _weighted(supply))
        for i, placed in by_option.items():
            if p.options[i].max_replicas < bounds[i]:
                ns = [n for _, n in placed]
                m.add(cp_model.LinearExpr.sum(ns) <= p.options[i].max_replicas)

    def hint(self, plan: Assignment) -> None:
        p = self.p
        for (i, j), n in self.n.items():
            count = plan.replicas.get((p.options[i].variant, p.hosts[j].id), 0)
            count = min(count, self.ub[i, j])
            self.m.add_hint(n, count)
            if (i, j) in self.new:
                current = p.hosts[j].current.get(p.options[i].variant, 0)
                self.m.add_hint(self.new[i, j], max(count - current, 0))
        for j, opened in self.open.items():
            used = any(
                plan.replicas.get((p.options[i].variant, p.hosts[j].id), 0) > 0
                for (i, hj) in self.n
                if hj == j
            )
            self.m.add_hint(opened, int(used))
        for (ci, i), r in self.r.items():
            qps = plan.routing.get((p.classes[ci].key, p.options[i].variant), 0.0)
            units = math.floor(qps * self.rate_scale / self.rate[ci, i]) + 1 if qps > 0 else 0
            self.m.add_hint(r, min(units, self.r_ub[ci, i]))
        for ci, short in self.s.items():
            c = p.classes[ci]
            missing = plan.unserved_qps.get(c.key, 0.0)
            self.m.add_hint(short, min(100, math.ceil(100 * missing / c.qps - EPS)) if c.qps else 0)

    def read(
        self, solver: cp_model.CpSolver
    ) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], float], dict[str, float]]:
        p = self.p
        replicas = {
            (p.options[i].variant, p.hosts[j].id): int(solver.value(n))
            for (i, j), n in sorted(self.n.items())
            if solver.value(n) > 0
        }
        routed: dict[int, list[tuple[str, float]]] = {}
        for (ci, i), r in sorted(self.r.items()):
            units = solver.value(r)
            if units > 0:
                qps = units * self.rate[ci, i] / self.rate_scale
                routed.setdefault(ci, []).append((p.options[i].variant, qps))
        routing: dict[tuple[str, str], float] = {}
        unserved: dict[str, float] = {}
        for ci, c in enumerate(p.classes):
            parts = routed.get(ci, [])
            total = sum(q for _, q in parts)
            trim = c.qps / total if total > c.qps else 1.0  # rounded up by a hair
            for vid, qps in parts:
                routing[c.key, vid] = qps * trim
            if ci in self.s and solver.value(self.s[ci]) > 0 and total < c.qps:
                unserved[c.key] = c.qps - total
        return replicas, routing, unserved


def _weighted(terms: list[tuple[Any, int]]) -> Any:
    return cp_model.LinearExpr.weighted_sum([v for v, _ in terms], [w for _, w in terms])


class IlpPlanner:
    """CP-SAT on the exact problem, warm-started from and backed by another planner."""

    name = "ilp"

    def __init__(
        self,
        *,
        time_limit_s: float,
        deterministic_time: float | None = None,
        fallback: Planner | None = None,
        workers: int = 1,
    ) -> None:
        self.time_limit_s = time_limit_s
        self.deterministic_time = deterministic_time
        self.fallback: Planner = fallback or GreedyPlanner()
        self.workers = workers  # more is stronger but not reproducible: for references

    def solve(self, problem: Problem) -> Assignment:
        started = time.perf_counter()
        greedy = self.fallback.solve(problem)
        ilp_started = time.perf_counter()
        model = _Model(problem)
        model.hint(greedy)
        solver = cp_model.CpSolver()
        params = solver.parameters
        params.num_workers = self.workers
        params.random_seed = 0
        params.log_search_progress = False
        built_s = time.perf_counter() - ilp_started
        params.max_time_in_seconds = max(self.time_limit_s - built_s, 0.01)
        if self.deterministic_time is not None:
            params.max_deterministic_time = self.deterministic_time
        status = solver.solve(model.m)
        ilp_ms = (time.perf_counter() - ilp_started) * 1000.0
        timings = {"greedy_ms": greedy.solve_ms, "ilp_ms": ilp_ms, "ilp_build_ms": built_s * 1000}
        bound: float | None = None
        if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            bound = solver.best_objective_bound / MICRO
            replicas, routing, unserved = model.read(solver)
            cost, objective = evaluate(problem, replicas, unserved)
            if objective <= greedy.objective + 1e-6:
                return Assignment(
                    replicas=replicas,
                    routing=routing,
                    unserved_qps=unserved,
                    cost_per_hour=cost,
                    objective=objective,
                    planner="ilp",
                    status="optimal" if status == cp_model.OPTIMAL else "feasible",
                    solve_ms=(time.perf_counter() - started) * 1000.0,
                    timings=timings,
                    bound=bound,
                )
        return replace(
            greedy,
            planner="greedy-fallback",
            solve_ms=(time.perf_counter() - started) * 1000.0,
            timings=timings,
            bound=bound,
        )

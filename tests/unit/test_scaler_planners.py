"""The two planners on hand-built capacity problems: what they must respect, what they
choose, and that the ILP finds the optimum a brute force finds."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable

import pytest
from scipy.optimize import linprog

from bench.planner_instances import random_problem
from queues.errors import InvalidRequest
from scaler.greedy import GreedyPlanner
from scaler.ilp import IlpPlanner
from scaler.planner import Assignment, ClassLoad, Host, Option, Planner, Problem, evaluate

ILP = IlpPlanner(time_limit_s=5.0)
PLANNERS = [GreedyPlanner(), ILP]
IDS = ["greedy", "ilp"]


def cpu(variant: str, qps: float, *, cost: float = 0.048, cores: float = 1, **kw: object) -> Option:
    return Option(
        variant=variant,
        app=str(kw.pop("app", "a")),
        hardware="cpu",
        cores=cores,
        memory_mb=float(kw.pop("memory_mb", 100.0)),  # type: ignore[arg-type]
        cost_per_hour=cost,
        load_ms=float(kw.pop("load_ms", 500.0)),  # type: ignore[arg-type]
        capacity_qps=kw.pop("capacity", None) or {"a": qps},  # type: ignore[arg-type]
    )


def gpu(variant: str, qps: float, *, cost: float = 3.06, load_ms: float = 3000.0) -> Option:
    return Option(variant, "a", "gpu", 0, 2000.0, cost, load_ms, {"a": qps})


def host(hid: str, cores: int = 4, hardware: str = "cpu", **kw: object) -> Host:
    return Host(
        id=hid,
        hardware=hardware,
        cores=cores,
        memory_mb=float(kw.pop("memory_mb", 16384.0)),  # type: ignore[arg-type]
        max_replicas=int(kw.pop("max_replicas", 1000)),  # type: ignore[call-overload]
        max_per_variant=1 if hardware == "gpu" else None,
        **kw,  # type: ignore[arg-type]
    )


def check(problem: Problem, plan: Assignment) -> None:
    """The plan respects every constraint and serves every class it says it serves."""
    options = {o.variant: o for o in problem.options}
    hosts = {h.id: h for h in problem.hosts}
    for hid, h in hosts.items():
        mine = {v: n for (v, where), n in plan.replicas.items() if where == hid}
        if h.closed:
            assert not mine
        cores = sum(options[v].cores * n for v, n in mine.items())
        assert cores <= h.cores - h.reserved_cores + 1e-9
        assert sum(options[v].memory_mb * n for v, n in mine.items()) <= h.memory_mb + 1e-6
        assert sum(mine.values()) <= h.max_replicas
        assert all(options[v].hardware == h.hardware for v in mine)
        if h.max_per_variant is not None:
            assert all(n <= h.max_per_variant for n in mine.values())
    for c in problem.classes:
        routed = sum(q for (k, _), q in plan.routing.items() if k == c.key)
        missing = plan.unserved_qps.get(c.key, 0.0)
        assert routed + missing == pytest.approx(c.qps, rel=1e-3, abs=1e-6)
    for o in problem.options:
        time_used = sum(
            q / o.capacity_qps[k] for (k, v), q in plan.routing.items() if v == o.variant
        )
        supply = sum(
            n * hosts[h].factor(v) for (v, h), n in plan.replicas.items() if v == o.variant
        )
        assert time_used <= supply * (1 + 1e-3) + 1e-6
    cost, objective = evaluate(problem, plan.replicas, plan.unserved_qps)
    assert plan.cost_per_hour == pytest.approx(cost)
    assert plan.objective == pytest.approx(objective)


def per_variant(plan: Assignment) -> dict[str, int]:
    out: dict[str, int] = {}
    for (v, _), n in plan.replicas.items():
        out[v] = out.get(v, 0) + n
    return out


@pytest.mark.parametrize("planner", PLANNERS, ids=IDS)
def test_rising_load_is_met_by_replicating_the_cheap_variant(planner: Planner) -> None:
    options = (cpu("small", 100.0), gpu("big", 2000.0))
    hosts = (host("w1", 4), host("g1", hardware="gpu", max_replicas=4))
    for qps, replicas in ((50.0, 1), (150.0, 2), (390.0, 4)):
        problem = Problem((ClassLoad("a", "a", qps),), options, hosts, 0.1)
        plan = planner.solve(problem)
        check(problem, plan)
        assert per_variant(plan) == {"small": replicas}


@pytest.mark.parametrize("planner", PLANNERS, ids=IDS)
def test_when_cores_run_out_the_plan_switches_to_the_faster_variant(planner: Planner) -> None:
    options = (cpu("small", 100.0), gpu("big", 2000.0))
    hosts = (host("w1", 4, current={"small": 4}), host("g1", hardware="gpu", max_replicas=4))
    problem = Problem((ClassLoad("a", "a", 500.0),), options, hosts, 0.1)
    plan = planner.solve(problem)
    check(problem, plan)
    assert per_variant(plan) == {"big": 1}  # one GPU carries it all; the CPU replicas go


@pytest.mark.parametrize("planner", PLANNERS, ids=IDS)
def test_when_memory_runs_out_the_plan_switches_too(planner: Planner) -> None:
    options = (cpu("small", 100.0, memory_mb=3000.0), cpu("wide", 400.0, cost=0.192, cores=4))
    hosts = (host("w1", 8, memory_mb=7000.0),)
    problem = Problem((ClassLoad("a", "a", 250.0),), options, hosts, 0.1)
    plan = planner.solve(problem)
    check(problem, plan)
    assert per_variant(plan) == {"wide": 1}  # 3 small replicas would need 9 GB


@pytest.mark.parametrize("planner", PLANNERS, ids=IDS)
def test_the_load_penalty_keeps_what_is_loaded(planner: Planner) -> None:
    options = (cpu("loaded", 100.0, load_ms=500.0), cpu("twin", 100.0, load_ms=500.0))
    hosts = (host("w1", 4, current={"loaded": 2}),)
    problem = Problem((ClassLoad("a", "a", 150.0),), options, hosts, 0.1)
    plan = planner.solve(problem)
    assert per_variant(plan) == {"loaded": 2}
    # without a penalty the twins are equal; with it, loading anything new costs more
    assert plan.objective == pytest.approx(2 * 0.048)


@pytest.mark.parametrize("planner", PLANNERS, ids=IDS)
def test_a_cheaper_variant_is_worth_its_load_time(planner: Planner) -> None:
    options = (cpu("old", 100.0, cost=0.096, cores=2), cpu("new", 100.0, cost=0.048))
    hosts = (host("w1", 8, current={"old": 3}),)
    problem = Problem((ClassLoad("a", "a", 250.0),), options, hosts, 0.1)
    plan = planner.solve(problem)
    check(problem, plan)
    assert per_variant(plan) == {"new": 3}
    assert plan.objective == pytest.approx(3 * 0.048 * (1 + 0.1 * 0.5))


@pytest.mark.parametrize("planner", PLANNERS, ids=IDS)
def test_a_new_worker_is_planned_when_the_running_ones_are_full(planner: Planner) -> None:
    options = (cpu("small", 100.0),)
    hosts = (
        host("w1", 2, current={"small": 2}),
        host("new-cpu-1", 8, prospective=True, open_cost_per_hour=0.384),
    )
    problem = Problem((ClassLoad("a", "a", 280.0),), options, hosts, 0.1)
    plan = planner.solve(problem)
    check(problem, plan)
    assert plan.replicas == {("small", "w1"): 2, ("small", "new-cpu-1"): 1}
    assert plan.cost_per_hour == pytest.approx(3 * 0.048 + 0.384)


@pytest.mark.parametrize("planner", PLANNERS, ids=IDS)
def test_load_that_fits_nowhere_is_reported_unserved(planner: Planner) -> None:
    options = (cpu("small", 100.0),)
    problem = Problem(
        (ClassLoad("a", "a", 500.0), ClassLoad("b", "b", 10.0)), options, (host("w1", 2),), 0.1
    )
    plan = planner.solve(problem)
    check(problem, plan)
    assert plan.unserved_qps["a"] == pytest.approx(300.0, rel=0.02)
    assert plan.unserved_qps["b"] == pytest.approx(10.0)  # nothing serves class b
    assert per_variant(plan) == {"small": 2}


@pytest.mark.parametrize("planner", PLANNERS, ids=IDS)
def test_classes_share_replica_time_and_the_strict_one_gets_the_fast_variant(
    planner: Planner,
) -> None:
    fast = cpu("fast", 0.0, cost=0.096, cores=2, capacity={"strict": 200.0, "loose": 300.0})
    slow = cpu("slow", 0.0, capacity={"loose": 100.0})
    classes = (ClassLoad("strict", "a", 100.0), ClassLoad("loose", "a", 150.0))
    problem = Problem(classes, (fast, slow), (host("w1", 8),), 0.0)
    plan = planner.solve(problem)
    check(problem, plan)
    # strict needs half a fast replica; loose fills the other half (150 qps) of it
    assert per_variant(plan) == {"fast": 1}


@pytest.mark.parametrize("planner", PLANNERS, ids=IDS)
def test_an_interfered_replica_counts_for_less(planner: Planner) -> None:
    options = (cpu("small", 100.0),)
    hosts = (host("w1", 4, current={"small": 2}, capacity_factor={"small": 0.5}), host("w2", 4))
    problem = Problem((ClassLoad("a", "a", 190.0),), options, hosts, 0.0)
    plan = planner.solve(problem)
    check(problem, plan)
    assert per_variant(plan) == {"small": 2}
    assert plan.replicas.get(("small", "w2"), 0) >= 1  # the full-speed host is used


@pytest.mark.parametrize("planner", PLANNERS, ids=IDS)
def test_a_closed_host_is_emptied(planner: Planner) -> None:
    options = (cpu("small", 100.0),)
    hosts = (host("w1", 4, current={"small": 2}, closed=True), host("w2", 4))
    problem = Problem((ClassLoad("a", "a", 150.0),), options, hosts, 0.1)
    plan = planner.solve(problem)
    check(problem, plan)
    assert plan.replicas == {("small", "w2"): 2}


@pytest.mark.parametrize("planner", PLANNERS, ids=IDS)
def test_a_gpu_runs_one_replica_of_a_variant(planner: Planner) -> None:
    options = (gpu("big", 1000.0),)
    hosts = (host("g1", hardware="gpu", max_replicas=4), host("g2", hardware="gpu", max_replicas=4))
    problem = Problem((ClassLoad("a", "a", 1500.0),), options, hosts, 0.0)
    plan = planner.solve(problem)
    check(problem, plan)
    assert plan.replicas == {("big", "g1"): 1, ("big", "g2"): 1}


def routable(problem: Problem, replicas: dict[tuple[str, str], int]) -> bool:
    """Whether some routing serves every class on these replicas (an exact LP)."""
    factors = {h.id: h for h in problem.hosts}
    pairs = [(c, i) for c in problem.classes for i in problem.serving[c.key]]
    if not pairs:
        return not any(c.qps > 0 for c in problem.classes)
    a_eq = [[1.0 if c.key == k.key else 0.0 for k, _ in pairs] for c in problem.classes]
    b_eq = [c.qps for c in problem.classes]
    a_ub, b_ub = [], []
    for i, o in enumerate(problem.options):
        a_ub.append([1.0 / o.capacity_qps[c.key] if j == i else 0.0 for c, j in pairs])
        b_ub.append(
            sum(n * factors[h].factor(v) for (v, h), n in replicas.items() if v == o.variant)
        )
    result = linprog([0.0] * len(pairs), A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=b_eq)
    return bool(result.status == 0)


def brute_force(problem: Problem) -> float:
    """The best objective over every replica count up to 3 per (option, host)."""
    pairs = [(o.variant, h.id) for o in problem.options for h in problem.hosts if h.room(o) > 0]
    best = math.inf
    for counts in itertools.product(range(4), repeat=len(pairs)):
        replicas = {p: n for p, n in zip(pairs, counts, strict=True) if n}
        if not fits(problem, replicas):
            continue
        objective = evaluate(problem, replicas, {})[1]
        if objective < best and routable(problem, replicas):
            best = objective
    return best


def fits(problem: Problem, replicas: dict[tuple[str, str], int]) -> bool:
    options = {o.variant: o for o in problem.options}
    for h in problem.hosts:
        mine = {v: n for (v, hid), n in replicas.items() if hid == h.id}
        if sum(options[v].cores * n for v, n in mine.items()) > h.cores:
            return False
        if sum(n for n in mine.values()) > h.max_replicas:
            return False
        if any(n > h.room(options[v]) for v, n in mine.items()):
            return False
    return True


@pytest.mark.parametrize("planner", PLANNERS, ids=IDS)
def test_light_replicas_taking_shares_of_a_core_are_packed_by_their_shares(
    planner: Planner,
) -> None:
    # five apps, each a little load on a replica that takes a quarter core (or 0.3)
    def problem(share: float, reserved: float = 0.0) -> Problem:
        apps = [f"app{k}" for k in range(5)]
        options = tuple(
            cpu(f"v{k}", 0.0, cost=0.048 * share, cores=share, app=a, capacity={a: 100.0})
            for k, a in enumerate(apps)
        )
        classes = tuple(ClassLoad(a, a, 10.0) for a in apps)
        return Problem(classes, options, (host("w1", 1, reserved_cores=reserved),), 0.1)

    # four quarters fill the core: the fifth app is left unserved
    quarters = problem(0.25)
    plan = planner.solve(quarters)
    check(quarters, plan)
    assert sum(plan.replicas.values()) == 4
    assert len(plan.unserved_qps) == 1
    # three shares of 0.3 fit beside nothing else, and two beside 0.25 cores reserved
    for reserved, placed in ((0.0, 3), (0.25, 2)):
        tenths = problem(0.3, reserved)
        plan = planner.solve(tenths)
        check(tenths, plan)
        assert sum(plan.replicas.values()) == placed
        assert plan.cost_per_hour == pytest.approx(placed * 0.048 * 0.3)
    assert host("w1", 1, reserved_cores=0.25).room(cpu("v", 1.0, cores=0.25)) == 3


def test_the_ilp_finds_the_brute_force_optimum() -> None:
    options = (
        cpu("a1", 0.0, capacity={"x": 90.0, "y": 60.0}, load_ms=800.0),
        cpu("a2", 0.0, cost=0.096, cores=2, capacity={"x": 250.0}),
        Option("g", "a", "gpu", 0, 2000.0, 1.2, 3000.0, {"x": 900.0, "y": 700.0}),
    )
    hosts = (
        host("w1", 3, current={"a1": 1}),
        host("g1", hardware="gpu", max_replicas=2),
    )
    for loads in ((120.0, 30.0), (300.0, 100.0), (700.0, 400.0)):
        classes = (ClassLoad("x", "a", loads[0]), ClassLoad("y", "a", loads[1]))
        problem = Problem(classes, options, hosts, 0.1)
        plan = ILP.solve(problem)
        assert plan.status == "optimal"
        check(problem, plan)
        assert plan.objective == pytest.approx(brute_force(problem), rel=1e-3)


@pytest.mark.parametrize("seed", range(4))
def test_both_planners_are_feasible_on_random_instances_and_the_ilp_is_no_worse(seed: int) -> None:
    problem = random_problem(random.Random(seed), 30, 6)
    greedy = GreedyPlanner().solve(problem)
    ilp = IlpPlanner(time_limit_s=0.5).solve(problem)
    check(problem, greedy)
    check(problem, ilp)
    assert ilp.objective <= greedy.objective + 1e-6
    assert ilp.planner in ("ilp", "greedy-fallback")


def test_the_ilp_falls_back_to_the_greedy_plan_when_out_of_time() -> None:
    problem = random_problem(random.Random(7), 50, 10)
    plan = IlpPlanner(time_limit_s=0.5, deterministic_time=1e-9).solve(problem)
    greedy = GreedyPlanner().solve(problem)
    assert plan.planner == "greedy-fallback"
    assert plan.replicas == greedy.replicas
    assert set(plan.timings) >= {"greedy_ms", "ilp_ms"}


def test_the_ilp_is_deterministic_under_a_work_limit() -> None:
    problem = random_problem(random.Random(3), 50, 10)
    planner = IlpPlanner(time_limit_s=30.0, deterministic_time=0.05)
    first, second = planner.solve(problem), planner.solve(problem)
    assert (first.replicas, first.routing) == (second.replicas, second.routing)


BAD = [
    (lambda: Problem((ClassLoad("a", "a", -1.0),), (), ()), "needs -1.0 qps"),
    (lambda: Problem((ClassLoad("a", "a", 1.0),) * 2, (), ()), "share a key"),
    (lambda: Problem((), (cpu("x", 1.0),), ()), "serves class 'a', which is not in the problem"),
    (
        lambda: Problem((ClassLoad("a", "b", 1.0),), (cpu("x", 1.0),), ()),
        "of app a serves a of app b",
    ),
    (lambda: Problem((ClassLoad("a", "a", 1.0),), (cpu("x", 1.0, cost=-1.0),), ()), "negative"),
    (lambda: Problem((), (), (host("h", current={"ghost": 1}),)), "runs ghost, which is no option"),
    (lambda: Problem((), (), (host("h", -1),)), "negative or non-finite size"),
    (lambda: Problem((), (), (host("h"), host("h"))), "two hosts share an id"),
    (lambda: Problem((), (), (), -0.5), "load penalty -0.5"),
]


@pytest.mark.parametrize(("build", "message"), BAD)
def test_a_problem_that_makes_no_sense_is_refused(
    build: Callable[[], Problem], message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        build()


@pytest.mark.parametrize("planner", PLANNERS, ids=IDS)
def test_without_a_load_penalty_replicas_still_stay_where_they_run(planner: Planner) -> None:
    options = (cpu("small", 100.0),)
    hosts = (host("w1", 4), host("w2", 4, current={"small": 2}), host("w3", 4))
    problem = Problem((ClassLoad("a", "a", 150.0),), options, hosts, 0.0)
    assert planner.solve(problem).replicas == {("small", "w2"): 2}


def test_the_ilp_copes_with_rates_far_apart() -> None:
    options = (
        cpu("crawl", 0.0, capacity={"slow": 0.05}),
        gpu("blaze", 90_000.0),
    )
    classes = (ClassLoad("slow", "a", 0.12), ClassLoad("a", "a", 150_000.0))
    hosts = (host("w1", 8), host("g1", hardware="gpu"), host("g2", hardware="gpu"))
    problem = Problem(classes, options, hosts, 0.1)
    plan = ILP.solve(problem)
    assert plan.planner == "ilp"
    check(problem, plan)
    assert per_variant(plan) == {"crawl": 3, "blaze": 2}

"""Keeping a plan: a floor of one replica for every class with load, and whether the last
tick's answer still answers this tick's problem (so a quiet tick is not re-solved)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace

from registry.routing import Routes
from scaler.plan import QUEUE_CLASS, Key
from scaler.planner import EPS, Assignment, Host, Option, Problem, evaluate
from scaler.tick import Tick


def floor(t: Tick, problem: Problem, plan: Assignment) -> Assignment:
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
        t.notes.append(
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


def still_answers(t: Tick, solved: Problem, plan: Assignment, problem: Problem) -> bool:
    """Whether ``plan``, solved for ``solved``, still answers ``problem``: the same
    problem; or, with ``replan_tolerance``, a fresh solve not due, the same workers
    and options (:func:`_same_fleet`), each app's load at least (1 - tolerance) of
    what was solved for (so capacity is not kept long past a fall), no more load left
    unserved, and the plan's replicas enough for every class's new load at the
    capacities measured now (:func:`replicas_suffice`)."""
    if solved == problem:
        return True
    s = t.s
    if (
        s.replan_tolerance <= 0
        or t.solved_ms is None
        or t.now - t.solved_ms >= s.replan_every_s * 1000
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

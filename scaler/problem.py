"""Step 2 of a tick: the capacity problem. The classes to plan for (queues to drain among
them), what one replica of each variant serves, and the hosts: running workers, spares,
workers asked for and workers that could be started."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from scaler.plan import NEW_HOST, PENDING_HOST, QUEUE_CLASS, SPARE_PRICE, ClassPlan, Key
from scaler.planner import CORE_UNITS, ClassLoad, Host, Option, Problem
from scaler.snapshot import VariantInfo, WorkerView
from scaler.tick import Tick


def demand_classes(
    t: Tick, loads: list[ClassPlan], allowed: Callable[[str], bool] | None
) -> tuple[list[ClassLoad], dict[str, dict[str, float]], dict[str, float]]:
    """The classes to plan for (queues to drain among them), what one replica of each
    variant serves of each, and each variant's share of its cores (light: < 1)."""
    snap, s = t.snap, t.s
    # a class the gateways stopped naming is still planned for (as held) for one
    # hold-down; past that its replicas may go as the hold-downs allow
    classes = [
        ClassLoad(c.key, c.app, c.planned_qps)
        for c in loads
        if c.planned_qps > 0 and c.key not in t.lapsed
    ]
    capacity: dict[str, dict[str, float]] = {}
    for vid, info in snap.variants.items():
        if allowed is not None and not allowed(vid):
            continue
        # a class held from earlier ticks is not in this tick's demand (nor in the
        # snapshot's capacities) but is served as before while its load is held
        capacity[vid] = {
            c.key: cap for c in classes if (cap := info.capacity_for(t.classes[c.key], s)) > 0
        }
    for vid, depth in sorted(snap.backlog.items()):
        if vid not in capacity:
            continue  # not ready, or not this policy's variant
        queued = snap.variants[vid]
        key = QUEUE_CLASS + vid
        classes.append(ClassLoad(key, queued.app, depth / s.drain_s))
        capacity[vid][key] = queued.saturation_qps
    qps = {c.key: c.qps for c in classes}
    shares = {
        vid: light_share(snap.variants[vid], caps, qps, s.light_share)
        for vid, caps in capacity.items()
    }
    return classes, capacity, shares


def capacity_problem(
    t: Tick,
    classes: list[ClassLoad],
    capacity: Mapping[str, Mapping[str, float]],
    current: Mapping[Key, int],
) -> Problem:
    """The capacity problem of this tick, from :func:`demand_classes`'s classes and capacities
    (and the shares of their cores kept from it)."""
    snap, s = t.snap, t.s
    wanted = {vid for vid, caps in capacity.items() if caps}
    wanted |= {vid for vid, _ in current if vid in capacity}
    options = []
    for vid, info in sorted(snap.variants.items()):
        if vid not in wanted:
            continue
        share = t.shares[vid]
        options.append(
            Option(
                variant=vid,
                app=info.app,
                hardware=info.hardware,
                cores=info.cores * share,
                memory_mb=info.memory_mb,
                cost_per_hour=info.cost_per_hour * share,
                load_ms=info.load_ms,
                capacity_qps=capacity[vid],
                # a light replica carries all its classes' load: one is enough, and
                # the planners' search stays as small as with whole cores
                max_replicas=1 if share < 1 else s.max_replicas_per_variant,
            )
        )
    names = {o.variant for o in options}
    hosts = [_host(t, w, current, names) for w in snap.workers.values()]
    hosts += _future_hosts(t)
    return Problem(tuple(classes), tuple(options), tuple(hosts), s.load_penalty_per_s)


def _host(t: Tick, w: WorkerView, current: Mapping[Key, int], names: set[str]) -> Host:
    mine = {vid: n for (vid, wid), n in current.items() if wid == w.worker_id}
    reserved_cores = 0.0
    reserved_memory = 0.0
    for vid, n in mine.items():
        if vid in names:
            continue
        info = t.snap.variants.get(vid)
        cpu = w.hardware == "cpu"
        reserved_cores += n * (t.replica_cores(vid) if info else 1 if cpu else 0)
        reserved_memory += n * (info.memory_mb if info else 0.0)
    spare = w.worker_id in t.spares
    return Host(
        id=w.worker_id,
        hardware=w.hardware,
        cores=w.cores,
        memory_mb=w.memory_mb,
        max_replicas=w.max_replicas,
        current={vid: n for vid, n in mine.items() if vid in names},
        capacity_factor={v: f for v, f in w.capacity_factor.items() if f < 1.0},
        closed=t.closed(w.worker_id),
        reserved_cores=reserved_cores,
        reserved_memory_mb=reserved_memory,
        max_per_variant=1 if w.hardware == "gpu" else None,
        prospective=spare,
        open_cost_per_hour=(
            SPARE_PRICE * t.snap.worker_price_per_hour(w.hardware) if spare else 0.0
        ),
    )


def _future_hosts(t: Tick) -> list[Host]:
    """Workers asked for (free to use) and workers that could be asked for."""
    s, prices = t.s, t.snap.prices
    hosts = []
    for hw in ("cpu", "gpu"):
        shape: dict[str, Any] = {
            "hardware": hw,
            "cores": s.new_cpu_worker_cores(prices) if hw == "cpu" else 1,
            "memory_mb": s.cpu_worker_memory_mb if hw == "cpu" else s.gpu_memory_mb,
            "max_replicas": 1_000_000 if hw == "cpu" else s.gpu_max_replicas,
            "max_per_variant": None if hw == "cpu" else 1,
            "prospective": True,
        }
        waiting = [t for h, t in t.pending_workers if h == hw]
        for k in range(len(waiting)):
            hosts.append(Host(id=f"{PENDING_HOST}{hw}-{k + 1}", **shape))
        room = s.max_workers(hw) - t.count(hw) - len(waiting)
        price = t.snap.worker_price_per_hour(hw)
        # offer the most new workers while the fleet grows (the last plan started some
        # or left load unserved), one when it does not: a quiet tick's problem stays small
        last = t.state.last_solved
        growing = (
            last is None
            or bool(last[1].unserved_qps)
            or any(h.startswith(NEW_HOST + hw) for _, h in last[1].replicas)
        )
        offered = s.max_new_workers_per_tick if growing else 1
        for k in range(max(min(room, offered), 0)):
            hosts.append(Host(id=f"{NEW_HOST}{hw}-{k + 1}", open_cost_per_hour=price, **shape))
    return hosts


def light_share(
    info: VariantInfo, capacity_qps: Mapping[str, float], qps: Mapping[str, float], share: float
) -> float:
    """The share of its cores (and of its price) one replica of a CPU variant takes: all of
    them, unless every class it serves together would keep it busy at most ``share`` of
    the time; then ``share`` (to the planners' 1/1,000 core), and light replicas share
    cores as their little work interleaves (0 turns this off)."""
    if share <= 0 or info.hardware != "cpu" or info.cores <= 0:
        return 1.0
    busy = sum(qps.get(key, 0.0) / cap for key, cap in capacity_qps.items() if cap > 0)
    if busy > share:
        return 1.0
    return math.ceil(info.cores * share * CORE_UNITS - 1e-6) / CORE_UNITS / info.cores

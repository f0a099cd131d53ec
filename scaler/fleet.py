"""What runs and the workers: replicas live or asked for, workers asked for, spares kept
started, an idle worker to drain, and the workers to add or remove after the plan."""

from __future__ import annotations

from collections.abc import Mapping

from registry.livestate import LOADING
from scaler.plan import ADD_WORKER, NEW_HOST, PENDING_HOST, REMOVE_WORKER, Action, Key
from scaler.planner import Assignment
from scaler.snapshot import WorkerView
from scaler.tick import Tick


def current_replicas(t: Tick) -> dict[Key, int]:
    """Replicas per (variant, worker): what live state shows, or what was asked of it
    and has not shown yet. Updates ``pending``."""
    live: dict[Key, int] = {}
    for w in t.snap.workers.values():
        for vid, n in w.replicas.items():
            if n > 0:
                live[vid, w.worker_id] = n
    t.pending = {}
    current = dict(live)
    for key, asked in sorted(t.state.pending.items()):
        vid, wid = key
        if wid not in t.snap.workers or live.get(key, 0) == asked.replicas:
            continue
        if t.now - asked.since_ms > t.s.pending_timeout_s * 1000:
            t.notes.append(
                f"{wid} did not reach {asked.replicas} replicas of {vid} within "
                f"{t.s.pending_timeout_s:g} s; planning from what it reports"
            )
            continue
        t.pending[key] = asked
        current[key] = asked.replicas
    return {k: n for k, n in current.items() if n > 0}


def in_flight(t: Tick) -> set[str]:
    """Apps with replicas on their way up (make before break)."""
    apps = set()
    for (vid, wid), asked in t.pending.items():
        shown = t.snap.workers[wid].replicas.get(vid, 0)
        if asked.replicas > shown:
            apps.add(asked.app)
    for w in t.snap.workers.values():
        for vid, st in w.states.items():
            if st == LOADING and (info := t.snap.variants.get(vid)) is not None:
                apps.add(info.app)
    return apps


def track_workers(t: Tick, current: Mapping[Key, int]) -> None:
    s, now, snap = t.s, t.now, t.snap
    fresh = [w for w in sorted(snap.workers) if w not in t.state.known_workers]
    joined: dict[str, int] = {}
    for wid in fresh:
        hw = snap.workers[wid].hardware
        joined[hw] = joined.get(hw, 0) + 1
    waiting = []
    for hw, since in t.state.pending_workers:
        if joined.get(hw, 0) > 0:
            joined[hw] -= 1
        elif now - since > s.worker_start_timeout_s * 1000:
            t.notes.append(
                f"a {hw} worker asked for at {since:.0f} ms has not joined within "
                f"{s.worker_start_timeout_s:g} s; asking again if still needed"
            )
        else:
            waiting.append((hw, since))
    t.pending_workers = tuple(waiting)
    t.draining = {w: t for w, t in t.state.draining.items() if w in snap.workers}
    t.removing = {w: t for w, t in t.state.removing.items() if w in snap.workers}
    t.worker_action_ms = dict(t.state.worker_action_ms)
    t.worker_added_ms = dict(t.state.worker_added_ms)
    t.spares = pick_spares(t, current)
    # a spare is not idle: once it takes replicas it is idle from then on, not before
    t.low_since = {}
    for wid, w in snap.workers.items():
        if w.utilisation < s.idle_threshold and not w.troubled and wid not in t.spares:
            t.low_since[wid] = t.state.low_since.get(wid, now)


def pick_spares(t: Tick, current: Mapping[Key, int]) -> set[str]:
    """The empty running workers kept as spares: up to ``spare_*_workers`` of each
    hardware, in order of name (the others drain as idle workers do)."""
    used = {wid for _, wid in current}
    spares: set[str] = set()
    for hw in ("cpu", "gpu"):
        empty = sorted(
            wid
            for wid, w in t.snap.workers.items()
            if w.hardware == hw and wid not in used and not t.closed(wid)
        )
        spares.update(empty[: t.s.spare_workers(hw)])
    return spares


def pick_drain(t: Tick, current: Mapping[Key, int]) -> str | None:
    """An idle worker to empty and remove, if its replicas fit on the others."""
    s, now = t.s, t.now
    for hw in ("cpu", "gpu"):
        if any(t.snap.workers[w].hardware == hw for w in t.draining):
            continue  # one at a time
        if t.count(hw) - 1 < s.min_workers(hw) or t.backed_off(hw):
            continue
        added = t.worker_added_ms.get(hw)
        if added is not None and now - added < s.drain_hold_s * 1000:
            continue  # the room just added is for the load that asked for it
        idle = [
            w
            for w in t.snap.workers.values()
            if w.hardware == hw
            and not t.closed(w.worker_id)
            and w.worker_id not in t.spares
            and w.worker_id in t.low_since
            and now - t.low_since[w.worker_id] >= s.worker_idle_s * 1000
        ]
        idle.sort(key=lambda w: (t.cores_used(w, current), w.worker_id))
        for w in idle:
            if _fits_elsewhere(t, w, current):
                return w.worker_id
    return None


def _fits_elsewhere(t: Tick, worker: WorkerView, current: Mapping[Key, int]) -> bool:
    others = [
        w
        for w in t.snap.workers.values()
        if w.hardware == worker.hardware
        and w.worker_id != worker.worker_id
        and not t.closed(w.worker_id)
        and w.worker_id not in t.spares  # a drain packs into workers in use
    ]
    if worker.hardware == "cpu":
        need = t.cores_used(worker, current)
        room = sum(w.cores - t.cores_used(w, current) for w in others)
    else:
        need = sum(n for (v, wid), n in current.items() if wid == worker.worker_id)
        room = sum(
            w.max_replicas - sum(n for (v, wid), n in current.items() if wid == w.worker_id)
            for w in others
        )
    return need <= room


def worker_actions(t: Tick, plan: Assignment, current: Mapping[Key, int]) -> None:
    added = {hw for hw in ("cpu", "gpu") if _add_worker(t, hw, plan)}
    _remove_workers(t, current, added)
    for hw in ("cpu", "gpu"):
        later = sorted({v for v, h in plan.replicas if h.startswith(PENDING_HOST + hw)})
        if later:
            t.notes.append(f"{', '.join(later)} will start on the {hw} worker asked for")
    for key, qps in plan.unserved_qps.items():
        if t.unservable.get(key):
            t.notes.append(
                f"{key}: {qps:.1f} qps unserved: no ready variant meets its requirements"
            )
        else:
            t.notes.append(f"{key}: {qps:.1f} qps cannot be placed on any worker")


def _add_worker(t: Tick, hw: str, plan: Assignment) -> bool:
    """Ask for a worker of ``hw`` when a rule says so and the limits allow it."""
    s = t.s
    live = [w for w in t.snap.workers.values() if w.hardware == hw and not t.closed(w.worker_id)]
    asked = sum(1 for h, _ in t.pending_workers if h == hw)
    needed = sorted({v for v, h in plan.replicas if h.startswith(NEW_HOST + hw)})
    reasons = []
    if needed:
        reasons.append(f"the plan needs room the running {hw} workers lack ({', '.join(needed)})")
    reactive = s.reactive_worker_rules
    if reactive and live and all(w.utilisation > s.hot_threshold for w in live):
        reasons.append(f"all {len(live)} {hw} workers are over {s.hot_threshold:.0%} busy")
    troubled = sum(1 for w in live if w.troubled)
    if reactive and live and troubled > s.overloaded_fraction * len(live):
        reasons.append(
            f"{troubled} of {len(live)} {hw} workers hold Overloaded or Interfered variants"
        )
    below_min = len(live) + asked < s.min_workers(hw)
    if below_min:
        reasons.append(f"below the minimum of {s.min_workers(hw)} {hw} workers")
    # grow by one worker (in a burst, by every one the plan needs) unless one is on its
    # way already; and ask for the spares the plan leaves missing on top
    grow = bool(reasons) and (not asked or below_min or bool(needed))
    spare = _spare_deficit(t, hw, plan, asked)
    if spare:
        reasons.append(f"keeping {s.spare_workers(hw)} spare {hw} worker(s) started")
    why = "; ".join(reasons)
    if not grow and not spare:
        return False
    if len(live) + asked >= s.max_workers(hw):
        t.notes.append(
            f"would add a {hw} worker ({why}) but "
            f"INFAAS_SCALER_MAX_{hw.upper()}_WORKERS={s.max_workers(hw)} is reached"
        )
        return False
    burst = s.burst_workers and bool(needed)
    if grow and t.backed_off(hw) and not below_min and not burst:
        t.deferred.append(
            f"add a {hw} worker ({why}): backing off {s.worker_backoff_s:g} s after the "
            f"last {hw} worker action"
        )
        grow = False  # the spares go past the back-off: they are kept, not grown to a load
        if not spare:
            return False
    hosts = len({h for _, h in plan.replicas if h.startswith(NEW_HOST + hw)})
    count = (max(hosts, 1) if burst else 1) if grow else 0
    count = min(count + spare, s.max_workers(hw) - len(live) - asked)
    for _ in range(count):
        t.actions.append(Action(ADD_WORKER, hardware=hw, reason=why))
        t.pending_workers = (*t.pending_workers, (hw, t.now))
    t.worker_action_ms[hw] = t.now
    if count:
        t.worker_added_ms[hw] = t.now
    return True


def _spare_deficit(t: Tick, hw: str, plan: Assignment, asked: int) -> int:
    """How many more ``hw`` workers to ask for so that ``spare_*_workers`` stay empty
    once the plan is carried out: spares it leaves empty and workers asked for that
    it does not use count."""
    want = t.s.spare_workers(hw)
    if not want:
        return 0
    hosts = {h for _, h in plan.replicas}
    mine = [wid for wid in t.spares if t.snap.workers[wid].hardware == hw]
    kept = sum(1 for wid in mine if wid not in hosts)
    used_asked = sum(1 for h in hosts if h.startswith(PENDING_HOST + hw))
    return max(want - kept - max(asked - used_asked, 0), 0)


def _remove_workers(t: Tick, current: Mapping[Key, int], added: set[str]) -> None:
    """Remove drained workers once empty (again if one lingers past its time)."""
    snap, now = t.snap, t.now
    for wid in sorted(t.draining):
        w = snap.workers[wid]
        if w.hardware in added or any(h == wid for _, h in current):
            continue
        since = t.draining.pop(wid)
        t.removing[wid] = now
        _remove_worker(t, w, f"idle, drained for {t.since(since)} and now empty")
    for wid, asked_ms in sorted(t.removing.items()):
        if now - asked_ms > t.s.worker_start_timeout_s * 1000:
            t.removing[wid] = now
            _remove_worker(
                t,
                snap.workers[wid],
                f"asked to go {t.since(asked_ms)} ago and still reporting; asking again",
            )


def _remove_worker(t: Tick, worker: WorkerView, reason: str) -> None:
    t.actions.append(
        Action(REMOVE_WORKER, worker=worker.worker_id, hardware=worker.hardware, reason=reason)
    )
    t.worker_action_ms[worker.hardware] = t.now

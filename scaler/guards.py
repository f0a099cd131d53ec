"""Step 3 of a tick: from targets to guarded replica actions. Growth goes at once; a
decrease waits for a few ticks of a smaller target, for the hold-down to unload, for the
back-off after growth, for its queue to empty and for its app's new replicas to load; the
last running replica of an app with demand stays until another runs."""

from __future__ import annotations

from collections.abc import Mapping

from registry.livestate import LOADING
from scaler.fleet import in_flight
from scaler.plan import LOAD, SET_REPLICAS, UNLOAD, Action, Key, Pending
from scaler.planner import Assignment
from scaler.tick import Tick


def replica_actions(
    t: Tick, targets: Mapping[Key, int], current: Mapping[Key, int], plan: Assignment
) -> None:
    """Growth first and at once; then shrinking, each step only when it may go."""
    snap, now = t.snap, t.now
    totals: dict[str, int] = {}
    for (vid, _), n in current.items():
        totals[vid] = totals.get(vid, 0) + n
    t.below_ticks = {}
    t.zero_since = {}
    t.grown_ms = dict(t.state.grown_ms)
    keys = sorted(k for k in set(targets) | set(current) if k[1] in snap.workers)
    for key in keys:
        vid, _ = key
        have, want = current.get(key, 0), targets.get(key, 0)
        if want > have:
            why = _why_grow(t, vid, want - have, totals, plan)
            _act(t, LOAD if have == 0 else SET_REPLICAS, key, want, why)
            t.grown_ms[vid] = now
    busy = in_flight(t)  # includes what was just asked for
    unloading: set[Key] = set()  # unloads decided this tick
    for key in keys:
        vid, wid = key
        have, want = current.get(key, 0), targets.get(key, 0)
        if want >= have:
            continue
        ticks = t.state.below_ticks.get(key, 0) + 1
        t.below_ticks[key] = ticks
        if want == 0:
            t.zero_since[key] = t.state.zero_since.get(key, now)
        info = snap.variants.get(vid)
        if info is None:
            _act(t, UNLOAD, key, 0, f"unload: {vid} is no ready variant of the catalog")
            continue
        hold = _hold_back(t, key, want, ticks, info.app, busy)
        if not hold and want == 0:
            hold = _last_replica(t, key, info.app, unloading)
        if hold:
            t.deferred.append(f"{vid} on {wid}: {have} -> {want} replicas held back: {hold}")
        elif want == 0:
            why = (
                f"worker {wid} is being drained"
                if wid in t.draining
                else f"not needed for {t.since(t.zero_since[key])} (hold-down "
                f"{_hold(t, vid) / 1000:g} s)"
            )
            _act(t, UNLOAD, key, 0, f"unload: {why}")
            unloading.add(key)
        else:
            _act(
                t,
                SET_REPLICAS,
                key,
                want,
                f"scale down: {want} replicas carry the held load of {info.app} "
                f"(smaller target for {ticks} ticks)",
            )


def _hold_back(t: Tick, key: Key, want: int, ticks: int, app: str, busy: set[str]) -> str:
    """Why a decrease must wait; empty when it may go ahead."""
    vid, wid = key
    if app in busy:
        return f"replicas of {app} are still loading (make before break)"
    if want == 0 and t.snap.backlog.get(vid, 0) > 0:
        return f"its queue holds {t.snap.backlog[vid]} queries"
    return "" if t.closed(wid) else _patience(t, key, want, ticks)


def _last_replica(t: Tick, key: Key, app: str, unloading: set[Key]) -> str:
    """Why unloading ``key`` would leave ``app`` with nothing running while its queries
    still come; empty when another running replica of the app stays. The plan may put
    the app on a worker that has not joined yet (one it asked for when a worker
    vanished): the replica that runs serves until the new one does."""
    demand_qps = sum(
        t.estimates.get(k, 0.0) for k, c in t.classes.items() if c.app == app and k not in t.lapsed
    )
    if demand_qps <= 0:
        return ""
    others = (
        (vid, w)
        for w in t.snap.workers.values()
        if not t.closed(w.worker_id)
        for vid, n in w.replicas.items()
        if n > 0 and (vid, w.worker_id) != key and (vid, w.worker_id) not in unloading
    )
    if any(
        (info := t.snap.variants.get(vid)) is not None
        and info.app == app
        and w.states.get(vid) != LOADING
        for vid, w in others
    ):
        return ""
    return f"the last running replica of {app}, which still has {demand_qps:.1f} q/s of demand"


def _patience(t: Tick, key: Key, want: int, ticks: int) -> str:
    """Back-off after growth, a few ticks of a smaller target, the hold-down to unload."""
    vid, _ = key
    s, now = t.s, t.now
    grown = t.grown_ms.get(vid)
    if grown is not None and now - grown < s.variant_backoff_s * 1000:
        return f"it grew {t.since(grown)} ago (back-off {s.variant_backoff_s:g} s)"
    if ticks < s.down_confirm_ticks:
        return f"smaller target for {ticks} of {s.down_confirm_ticks} ticks"
    since = t.zero_since.get(key)
    if want == 0 and since is not None and now - since < _hold(t, vid):
        return f"unneeded for {t.since(since)} of its {_hold(t, vid) / 1000:g} s hold-down"
    return ""


def _hold(t: Tick, vid: str) -> float:
    info = t.snap.variants[vid]
    return t.s.hold_ms(info.hardware, info.load_ms)


def _why_grow(t: Tick, vid: str, more: int, totals: Mapping[str, int], plan: Assignment) -> str:
    info = t.snap.variants.get(vid)
    routed = sorted((c, q) for (c, v), q in plan.routing.items() if v == vid)
    serves = ", ".join(f"{c} ({q:.1f} qps)" for c, q in routed) or "its queue"
    app_runs = any(
        n > 0
        and (other := t.snap.variants.get(v)) is not None
        and info is not None
        and other.app == info.app
        for v, n in totals.items()
    )
    if not app_runs:
        return f"start: load {vid} for {serves}, the cheapest variant that serves it"
    if totals.get(vid, 0) == 0:
        load_ms = info.load_ms if info else 0.0
        return (
            f"switch: load {vid} for {serves}; cheapest way to keep capacity >= "
            f"{t.s.headroom:g} x load, its {load_ms:.0f} ms load time included"
        )
    return (
        f"replicate: +{more} replica(s) of {vid} for {serves}; cheaper than switching, "
        "load time included"
    )


def _act(t: Tick, kind: str, key: Key, replicas: int, reason: str) -> None:
    vid, wid = key
    info = t.snap.variants.get(vid)
    t.actions.append(Action(kind, wid, t.snap.workers[wid].hardware, vid, replicas, reason))
    t.pending[key] = Pending(replicas, t.now, info.app if info else "")
    t.below_ticks.pop(key, None)
    t.zero_since.pop(key, None)

"""Step 1 of a tick: the load per demand class. A rise is taken at once, a fall is
smoothed; the plan uses the highest estimate of the last hold-down, raised by a trend
where the forecast sees one beyond the noise of Poisson arrivals."""

from __future__ import annotations

import math
from collections.abc import Mapping

from scaler.forecast import SeasonalParams, observe, rise_ahead
from scaler.plan import ClassPlan, Key
from scaler.snapshot import DemandClass
from scaler.tick import Tick


def estimate(t: Tick, current: Mapping[Key, int]) -> list[ClassPlan]:
    """Smoothed and held load per class; updates classes, estimates and history."""
    s, now = t.s, t.now
    seen = {c.key: c for c in t.snap.classes}
    classes = dict(t.state.classes)
    classes.update(seen)
    t.classes = {}
    t.estimates = {}
    t.history = {}
    t.seen_ms = {}
    t.lapsed = set()  # held, but not in the demand for a hold-down
    plans = []
    # per class: measured, estimate, history kept, hold-down window, rise over window
    per_class: dict[str, tuple[float, float, list[tuple[float, float]], float]] = {}
    rises: dict[str, tuple[float, float]] = {}  # key -> (rise in qps, over seconds)
    for key in sorted(classes):
        record = classes[key]
        measured = seen[key].qps if key in seen else 0.0
        prior = t.state.estimates.get(key)
        if prior is None or measured >= prior:
            estimate = measured
        else:
            estimate = prior + s.load_smoothing * (measured - prior)
        window = _hold_of_app(t, record.app, current)
        kept = max(window, s.forecast_window_s * 1000) if s.forecast_s > 0 else window
        past = [(t, q) for t, q in t.state.history.get(key, ()) if t > now - kept]
        rise = _rise(t, past, now, estimate)
        if rise is not None:
            rises[key] = rise
        t.estimates[key] = estimate
        per_class[key] = (measured, estimate, past, window)
    group_trend = _group_trends(t, classes, rises)
    seasonal_rise = _seasonal(t, sum(c.qps for c in seen.values()))
    for key, (measured, estimate, past, window) in per_class.items():
        record = classes[key]
        trend = 0.0
        if key in rises:
            rise_qps, span_s = rises[key]
            if _beyond_noise(t, rise_qps, estimate):
                trend = rise_qps / span_s
            trend = max(trend, estimate * group_trend.get(_group_of(t, record), 0.0))
        past.append((now, estimate))
        held = max(q for t, q in past if t > now - window)
        held = _ahead(held, estimate, trend, seasonal_rise, s.forecast_s)
        if held < 1e-6 and key not in seen:
            del t.estimates[key]
            continue  # gone for a whole hold-down: forget it
        t.classes[key] = record
        t.history[key] = tuple(past)
        _track_seen(t, key, key in seen, window)
        backlog = seen[key].backlog if key in seen else 0
        planned = _quantize(held * s.headroom + backlog / s.drain_s, s.load_quantum)
        plans.append(ClassPlan(key, record.app, measured, estimate, held, planned, 0.0))
    return plans


def _ahead(held: float, estimate: float, trend: float, rise: float, ahead_s: float) -> float:
    """The held load raised to where a trend (q/s per s) or the season's shape (a ratio)
    says it is going, at most double the estimate: a step looks like a steep trend for a
    while, and a shape learnt from the past may not repeat."""
    if trend > 0:
        held = max(held, min(estimate + trend * ahead_s, 2.0 * estimate))
    if rise > 1.0:
        held = max(held, estimate * min(rise, 2.0))
    return held


def _seasonal(t: Tick, total_qps: float) -> float:
    """Learn the fleet's summed load's shape (``season_s``) and return how much it is
    foreseen to rise within ``forecast_s`` (1: none, or the season is off or not yet
    learnt). A sum of classes: its shape is steadier than any one class's."""
    s = t.s
    t.seasonal = t.state.seasonal
    if s.season_s <= 0:
        return 1.0
    params = SeasonalParams(season_s=s.season_s, bin_s=s.season_bin_s)
    now_s = t.now / 1000.0
    t.seasonal = observe(t.state.seasonal, now_s, total_qps, params)
    return rise_ahead(t.seasonal, now_s, max(s.forecast_s, s.season_bin_s), params)


def _track_seen(t: Tick, key: str, seen: bool, window: float) -> None:
    """When the class was last in the demand; lapsed once that is a hold-down ago."""
    last = t.now if seen else t.state.seen_ms.get(key)
    if last is not None:
        t.seen_ms[key] = last
    if last is None or t.now - last >= window:
        t.lapsed.add(key)


def _rise(
    t: Tick, past: list[tuple[float, float]], now: float, estimate: float
) -> tuple[float, float] | None:
    """How much load rose over the forecast window, and over how many seconds
    (None without a forecast or with too little history)."""
    s = t.s
    if s.forecast_s <= 0:
        return None
    older = [(t, q) for t, q in past if t <= now - s.forecast_window_s * 1000]
    then_ms, then_qps = older[-1] if older else (past[0] if past else (now, estimate))
    if now - then_ms < 0.5 * s.forecast_window_s * 1000:
        return None  # too little history for a trend
    return estimate - then_qps, (now - then_ms) / 1000.0


def _beyond_noise(t: Tick, rise_qps: float, load_qps: float) -> bool:
    """Two rates measured over a few seconds of Poisson arrivals differ by about 0.63 ×
    the square root of the rate (5 s windows): only a rise beyond ``trend_z`` × that
    root is a trend."""
    return rise_qps > t.s.trend_z * math.sqrt(max(load_qps, 1.0))


def _group_of(t: Tick, record: DemandClass) -> str | None:
    scope = t.s.trend_scope
    return None if scope == "class" else record.app if scope == "app" else ""


def _group_trends(
    t: Tick, classes: Mapping[str, DemandClass], rises: Mapping[str, tuple[float, float]]
) -> dict[str | None, float]:
    """Per group of classes (``trend_scope``), how fast its summed load rises as a
    share of that load per second, where the summed rise is beyond its noise: a sum
    of classes has the noise of its total, so a ramp shared by small classes shows in
    their sum before it shows in any one of them."""
    if t.s.trend_scope == "class":
        return {}
    sums: dict[str | None, list[float]] = {}
    for key, (rise_qps, span_s) in rises.items():
        total = sums.setdefault(_group_of(t, classes[key]), [0.0, 0.0, 0.0])
        total[0] += rise_qps
        total[1] += rise_qps / span_s
        total[2] += t.estimates[key]
    return {
        group: slope / load
        for group, (rise, slope, load) in sums.items()
        if load > 0 and _beyond_noise(t, rise, load)
    }


def _hold_of_app(t: Tick, app: str, current: Mapping[Key, int]) -> float:
    holds = [
        t.s.hold_ms(info.hardware, info.load_ms)
        for (vid, _), n in current.items()
        if n > 0 and (info := t.snap.variants.get(vid)) is not None and info.app == app
    ]
    return max(holds, default=t.s.hold_ms("cpu", 0.0))


def _quantize(qps: float, quantum: float) -> float:
    """Round a load up to the next step of a geometric ladder (ratio 1 + quantum), so
    loads that differ by noise make the same problem; 0 leaves it as it is."""
    if quantum <= 0 or qps <= 0:
        return qps
    steps = math.ceil(math.log(qps) / math.log1p(quantum) - 1e-9)
    return float(math.exp(steps * math.log1p(quantum)))

"""How fast a job must go, and when its chunks give way to online queries."""

from __future__ import annotations

from datetime import datetime

from registry.livestate import OVERLOADED, WorkerReport


def online_pressure(report: WorkerReport | None, busy_limit: float) -> bool:
    """Whether batch work on a worker should pause for its online queries: one of its
    online variants is Overloaded, has more queries waiting than its replicas take in
    one batch, or kept its replicas busy at least ``busy_limit`` of the last monitoring
    window. (Not Interfered: that flags latency above the profile, which tiny models
    show on a shared machine with no queries waiting; pausing on it starves the job.)"""
    if report is None:
        return False
    return any(
        load.state == OVERLOADED
        or load.busy >= busy_limit
        or load.backlog > max(load.replicas, 1) * max(load.max_batch, 1)
        for load in report.variants.values()
    )


def required_items_per_s(items_remaining: int, deadline: datetime | None, now: datetime) -> float:
    """The rate a job's remaining items need to finish by its deadline (0 without one;
    a deadline already past needs everything at once: the rate of one second)."""
    if deadline is None or not items_remaining:
        return 0.0
    left_s = max((deadline - now).total_seconds(), 1.0)
    return round(items_remaining / left_s, 6)

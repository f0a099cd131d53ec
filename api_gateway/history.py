"""The console's memory of the last hour: one sample per app per second, taken from this
gateway's SLO accounting (api_gateway/accounting.py) by the refresh loop.

Nothing here runs per query: the accounting already counts each answer; once a second
:meth:`LoadHistory.sample` turns the growth of those cumulative counts into that
second's load, latency percentiles, SLO misses, accuracy delivered, cost and the mix of
variants. Bounded: the last :data:`FINE_S` seconds are kept one point a second, the rest
of the hour as one point per :data:`COARSE_S` seconds (sums added, p50 the queries'
weighted mean of the seconds' p50s, p99 their largest: an upper bound); a second without
queries stores nothing; at most :data:`MAX_APPS` apps (the one idle longest is forgotten
first). With 200 apps of 3 variants busy every second for an hour: 631 points an app,
63 MB, a sample taking 18 ms (median) on the shared 2-core machine
(``python -m bench.ui_history``).

It is one gateway's view: behind several gateways each console shows the load its own
gateway served (``GET /v1/apps/{app}/stats`` merges all of them, cumulatively).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from api_gateway.accounting import EDGES_MS, AppTally, Tally

HISTORY_S = 3600
FINE_S = 300  # one point a second for the last five minutes
COARSE_S = 10  # one point per ten seconds before that
NO_BUCKETS: Mapping[int, int] = MappingProxyType({})  # one empty histogram, shared
MAX_APPS = 200
RECENT_S = 10  # the window of the overview's live figures


@dataclass(frozen=True, slots=True)
class Second:
    """One app's load in one second (``t_s``: the second's start, Unix time)."""

    t_s: int
    queries: int
    with_objective: int
    slo_misses: int
    accuracy_sum: float
    cost_usd: float
    p50_ms: float | None
    p99_ms: float | None
    mix: tuple[tuple[str, int], ...]  # (variant, queries answered)
    latency_buckets: Mapping[int, int]  # kept only for the recent window's percentiles
    span_s: int = 1  # the seconds it covers, from t_s: 1, or COARSE_S when rolled up


def rolled_up(into: Second | None, point: Second) -> Second:
    """``point`` added to the coarse point that covers its second (a new one if None)."""
    if into is None:
        start = point.t_s - point.t_s % COARSE_S
        return replace(point, t_s=start, span_s=COARSE_S, latency_buckets=NO_BUCKETS)
    queries = into.queries + point.queries
    mix = dict(into.mix)
    for variant, count in point.mix:
        mix[variant] = mix.get(variant, 0) + count
    p50s = [(p.p50_ms, p.queries) for p in (into, point) if p.p50_ms is not None]
    p99s = [p.p99_ms for p in (into, point) if p.p99_ms is not None]
    return replace(
        into,
        queries=queries,
        with_objective=into.with_objective + point.with_objective,
        slo_misses=into.slo_misses + point.slo_misses,
        accuracy_sum=into.accuracy_sum + point.accuracy_sum,
        cost_usd=into.cost_usd + point.cost_usd,
        p50_ms=sum(v * n for v, n in p50s) / sum(n for _, n in p50s) if p50s else None,
        p99_ms=max(p99s) if p99s else None,
        mix=tuple(sorted(mix.items())),
    )


@dataclass
class _Ring:
    """One app's points: coarse ones (older), then fine ones (the last FINE_S s)."""

    coarse: deque[Second] = field(default_factory=deque)
    fine: deque[Second] = field(default_factory=deque)

    @property
    def newest_s(self) -> int:
        return self.fine[-1].t_s if self.fine else self.coarse[-1].t_s

    def append(self, point: Second, history_s: int, fine_s: int) -> None:
        fine = self.fine
        fine.append(point)
        # one point a second at most: the one RECENT_S + 1 back has left the live window,
        # and its histogram is dropped (its p50 and p99 stay)
        if len(fine) > RECENT_S + 1 and fine[-(RECENT_S + 2)].latency_buckets:
            fine[-(RECENT_S + 2)] = replace(fine[-(RECENT_S + 2)], latency_buckets=NO_BUCKETS)
        while fine[0].t_s <= point.t_s - fine_s:
            old = fine.popleft()
            last = self.coarse[-1] if self.coarse else None
            if last is not None and last.t_s + last.span_s > old.t_s:
                self.coarse[-1] = rolled_up(last, old)
            else:
                self.coarse.append(rolled_up(None, old))
        while self.coarse and self.coarse[0].t_s + self.coarse[0].span_s <= point.t_s - history_s:
            self.coarse.popleft()

    def newer_than(self, after_s: int | None) -> list[Second]:
        if after_s is None:
            return [*self.coarse, *self.fine]
        points: list[Second] = []
        for part in (self.fine, self.coarse):
            for point in reversed(part):  # newest first: stop at the first one not wanted
                if point.t_s <= after_s:
                    points.reverse()
                    return points
                points.append(point)
        points.reverse()
        return points


@dataclass
class _Seen:
    """An app's cumulative counts when last sampled."""

    queries: int = 0
    with_objective: int = 0
    slo_misses: int = 0
    accuracy_sum: float = 0.0
    cost_usd: float = 0.0
    buckets: dict[int, int] = field(default_factory=dict)
    variants: dict[str, int] = field(default_factory=dict)


def percentile_of(buckets: Mapping[int, int], q: float) -> float | None:
    """The ``q``-th percentile of a latency histogram (accounting's bucket edges)."""
    total = sum(buckets.values())
    if not total:
        return None
    rank = math.ceil(q / 100.0 * total)
    seen = 0
    for index in sorted(buckets):
        seen += buckets[index]
        if seen >= rank:
            return EDGES_MS[index]
    return EDGES_MS[-1]


def grown(now: Mapping[Any, int], before: Mapping[Any, int]) -> dict[Any, int]:
    return {k: n - before.get(k, 0) for k, n in now.items() if n > before.get(k, 0)}


class LoadHistory:
    """Per-app rings of :class:`Second`; feed it with :meth:`sample` once a second."""

    def __init__(
        self, *, history_s: int = HISTORY_S, max_apps: int = MAX_APPS, fine_s: int = FINE_S
    ) -> None:
        self.history_s = history_s
        self.max_apps = max_apps
        self.fine_s = min(fine_s, history_s)
        self._rings: dict[str, _Ring] = {}
        self._seen: dict[str, _Seen] = {}
        self._last_second: int | None = None

    def sample(self, apps: Mapping[str, AppTally], now_s: float) -> bool:
        """Record the growth of each app's cumulative tallies since the last sample as the
        second that just ended; at most once per second (the refresh loop calls it twice
        as often)."""
        second = int(now_s) - 1
        if self._last_second is not None and second <= self._last_second:
            return False
        self._last_second = second
        for app, tally in apps.items():
            total = tally.total
            seen = self._seen.setdefault(app, _Seen())
            if total.queries == seen.queries:
                continue
            counts = {v: t.queries for v, t in tally.variants.items()}
            self._append(app, self._second(second, total, seen, counts))
            self._seen[app] = _Seen(
                total.queries,
                total.with_objective,
                total.slo_misses,
                total.accuracy_sum,
                total.cost_usd,
                dict(total.buckets),
                counts,
            )
        self._forget_older_than(second - self.history_s)
        return True

    @staticmethod
    def _second(second: int, total: Tally, seen: _Seen, counts: Mapping[str, int]) -> Second:
        buckets = grown(total.buckets, seen.buckets)
        return Second(
            t_s=second,
            queries=total.queries - seen.queries,
            with_objective=total.with_objective - seen.with_objective,
            slo_misses=total.slo_misses - seen.slo_misses,
            accuracy_sum=total.accuracy_sum - seen.accuracy_sum,
            cost_usd=total.cost_usd - seen.cost_usd,
            p50_ms=percentile_of(buckets, 50),
            p99_ms=percentile_of(buckets, 99),
            mix=tuple(sorted(grown(counts, seen.variants).items())),
            latency_buckets=buckets,
        )

    def _append(self, app: str, point: Second) -> None:
        ring = self._rings.get(app)
        if ring is None:
            if len(self._rings) >= self.max_apps:
                idlest = min(self._rings, key=lambda a: self._rings[a].newest_s)
                del self._rings[idlest]
            ring = self._rings[app] = _Ring()
        ring.append(point, self.history_s, self.fine_s)

    def _forget_older_than(self, oldest: int) -> None:
        for app in [a for a, ring in self._rings.items() if ring.newest_s < oldest]:
            del self._rings[app]

    def since(self, app: str, after_s: int | None = None) -> list[Second]:
        """The app's points after ``after_s`` (all of the last hour when None), oldest
        first; those older than ``fine_s`` cover ``COARSE_S`` seconds each."""
        ring = self._rings.get(app)
        return [] if ring is None else ring.newer_than(after_s)

    def recent(self, app: str, now_s: float, window_s: int = RECENT_S) -> dict[str, Any]:
        """The overview's live figures: the last ``window_s`` seconds sampled (up to the
        second before ``now_s``)."""
        newest = int(now_s) - 1 if self._last_second is None else self._last_second
        return summarize(self.since(app, newest - window_s), window_s)

    @property
    def newest_s(self) -> int | None:
        return self._last_second


def summarize(points: Iterable[Second], window_s: int) -> dict[str, Any]:
    """Rates and percentiles over some seconds (the histogram merged, not the p99s)."""
    queries = with_objective = misses = 0
    accuracy_sum = cost_usd = 0.0
    buckets: dict[int, int] = {}
    for p in points:
        queries += p.queries
        with_objective += p.with_objective
        misses += p.slo_misses
        accuracy_sum += p.accuracy_sum
        cost_usd += p.cost_usd
        for index, count in p.latency_buckets.items():
            buckets[index] = buckets.get(index, 0) + count
    return {
        "window_s": window_s,
        "qps": queries / window_s,
        "p50_ms": percentile_of(buckets, 50),
        "p99_ms": percentile_of(buckets, 99),
        "slo_misses": misses,
        "slo_miss_rate": misses / with_objective if with_objective else 0.0,
        "mean_accuracy": accuracy_sum / queries if queries else None,
        "cost_per_1000_queries_usd": 1000.0 * cost_usd / queries if queries else None,
    }


def columns(points: list[Second]) -> dict[str, Any]:
    """The points as columns for the console's charts: one list per figure, and the mix
    as one list per variant, aligned with ``t_s`` (0 where it served nothing); rates
    are per second over each point's ``span_s``, counts per point."""
    names = sorted({v for p in points for v, _ in p.mix})
    mix: dict[str, list[float]] = {v: [0] * len(points) for v in names}
    for i, p in enumerate(points):
        for v, n in p.mix:
            mix[v][i] = n / p.span_s
    return {
        "t_s": [p.t_s for p in points],
        "span_s": [p.span_s for p in points],
        "qps": [p.queries / p.span_s for p in points],
        "p50_ms": [p.p50_ms for p in points],
        "p99_ms": [p.p99_ms for p in points],
        "slo_misses": [p.slo_misses for p in points],
        "mean_accuracy": [p.accuracy_sum / p.queries for p in points],
        "cost_usd": [p.cost_usd for p in points],
        "mix": mix,
    }

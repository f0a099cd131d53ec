"""Live SLO accounting: what each app actually got — latency against its objectives,
accuracy against its floors, and what it cost — plus the demand the scaler plans for.

Kept per gateway in memory (one event loop: no locks), published to live state every
refresh, merged across gateways for ``GET /v1/apps/{app}/stats``. Latency percentiles come
from fixed log-spaced histogram buckets, so they merge across gateways exactly (to within
a bucket: ~5 % of the value).
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from registry.live_docs import ClassDemand, RequirementClass

# bucket i holds latencies in (EDGES[i-1], EDGES[i]]; 0.02 ms .. 120 s, ~5 % apart
EDGES_MS: tuple[float, ...] = tuple(0.02 * 1.05**i for i in range(321))
DEMAND_WINDOW_S = 5


@dataclass
class Tally:
    queries: int = 0
    with_objective: int = 0
    slo_misses: int = 0
    with_floor: int = 0
    accuracy_misses: int = 0
    accuracy_sum: float = 0.0
    cost_usd: float = 0.0
    buckets: dict[int, int] = field(default_factory=dict)

    def add(
        self,
        elapsed_ms: float,
        latency_ms: float | None,
        floor: float | None,
        accuracy: float,
        cost_usd: float,
    ) -> None:
        self.queries += 1
        if latency_ms is not None:
            self.with_objective += 1
            self.slo_misses += elapsed_ms > latency_ms
        if floor is not None:
            self.with_floor += 1
            self.accuracy_misses += accuracy < floor
        self.accuracy_sum += accuracy
        self.cost_usd += cost_usd
        index = min(bisect.bisect_left(EDGES_MS, elapsed_ms), len(EDGES_MS) - 1)
        self.buckets[index] = self.buckets.get(index, 0) + 1

    def merge(self, other: Tally) -> None:
        self.queries += other.queries
        self.with_objective += other.with_objective
        self.slo_misses += other.slo_misses
        self.with_floor += other.with_floor
        self.accuracy_misses += other.accuracy_misses
        self.accuracy_sum += other.accuracy_sum
        self.cost_usd += other.cost_usd
        for index, count in other.buckets.items():
            self.buckets[index] = self.buckets.get(index, 0) + count

    def percentile_ms(self, q: float) -> float | None:
        if not self.queries:
            return None
        rank = math.ceil(q / 100.0 * self.queries)
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                return EDGES_MS[index]
        return EDGES_MS[-1]

    def to_doc(self) -> dict[str, Any]:
        doc = {k: v for k, v in self.__dict__.items() if k != "buckets"}
        doc["buckets"] = {str(k): v for k, v in self.buckets.items()}
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Tally:
        tally = cls(**{k: v for k, v in doc.items() if k != "buckets"})
        tally.buckets = {int(k): int(v) for k, v in doc.get("buckets", {}).items()}
        return tally

    def view(self) -> dict[str, Any]:
        """What a user reads: rates, percentiles, accuracy delivered, cost."""
        n = self.queries
        return {
            "queries": n,
            "p50_ms": self.percentile_ms(50),
            "p99_ms": self.percentile_ms(99),
            "slo_miss_rate": self.slo_misses / self.with_objective if self.with_objective else 0.0,
            "accuracy_miss_rate": (
                self.accuracy_misses / self.with_floor if self.with_floor else 0.0
            ),
            "mean_accuracy": self.accuracy_sum / n if n else None,
            "cost_usd": self.cost_usd,
            "cost_per_1000_queries_usd": 1000.0 * self.cost_usd / n if n else None,
        }


@dataclass
class AppTally:
    total: Tally = field(default_factory=Tally)
    variants: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    hardware: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    errors: dict[str, int] = field(default_factory=dict)


class Accounting:
    def __init__(self) -> None:
        self.apps: dict[str, AppTally] = defaultdict(AppTally)
        # demand: requirement class -> {second: count}
        self._arrivals: dict[RequirementClass, dict[int, int]] = defaultdict(dict)

    def arrival(
        self,
        app: str,
        now_s: float,
        latency_ms: float | None,
        min_accuracy: float | None,
        max_cost_per_hour: float | None,
    ) -> None:
        key = RequirementClass.of(app, latency_ms, min_accuracy, max_cost_per_hour)
        second = int(now_s)
        per_second = self._arrivals[key]
        per_second[second] = per_second.get(second, 0) + 1

    def answered(
        self,
        app: str,
        variant: str,
        hardware: str,
        *,
        elapsed_ms: float,
        latency_ms: float | None,
        min_accuracy: float | None,
        accuracy: float,
        cost_usd: float,
    ) -> None:
        tally = self.apps[app]
        for target in (tally.total, tally.variants[variant], tally.hardware[hardware]):
            target.add(elapsed_ms, latency_ms, min_accuracy, accuracy, cost_usd)

    def failed(self, app: str, code: str) -> None:
        errors = self.apps[app].errors
        errors[code] = errors.get(code, 0) + 1

    def demand(self, now_s: float) -> list[ClassDemand]:
        """Arrival rate per requirement class over the last complete seconds."""
        newest = int(now_s) - 1
        oldest = newest - DEMAND_WINDOW_S + 1
        classes = []
        for requirements, per_second in list(self._arrivals.items()):
            for second in [s for s in per_second if s < oldest]:
                del per_second[second]
            count = sum(c for s, c in per_second.items() if oldest <= s <= newest)
            if not per_second:
                del self._arrivals[requirements]
            if count:
                classes.append(ClassDemand(requirements, count / DEMAND_WINDOW_S))
        return classes

    def to_doc(self) -> dict[str, Any]:
        return {
            "apps": {
                app: {
                    "total": t.total.to_doc(),
                    "variants": {k: v.to_doc() for k, v in t.variants.items()},
                    "hardware": {k: v.to_doc() for k, v in t.hardware.items()},
                    "errors": dict(t.errors),
                }
                for app, t in self.apps.items()
            },
        }


def merged_view(docs: list[dict[str, Any]], app: str) -> dict[str, Any]:
    """One app's statistics over the documents of all gateways."""
    total = Tally()
    errors: dict[str, int] = defaultdict(int)
    variants: dict[str, Tally] = defaultdict(Tally)
    hardware: dict[str, Tally] = defaultdict(Tally)
    for doc in docs:
        part = doc.get("apps", {}).get(app)
        if not part:
            continue
        total.merge(Tally.from_doc(part["total"]))
        for name, sub in part.get("variants", {}).items():
            variants[name].merge(Tally.from_doc(sub))
        for name, sub in part.get("hardware", {}).items():
            hardware[name].merge(Tally.from_doc(sub))
        for code, count in part.get("errors", {}).items():
            errors[code] += count
    return {
        "app": app,
        "gateways": len(docs),
        **total.view(),
        "errors": dict(errors),
        "variants": {k: v.view() for k, v in sorted(variants.items())},
        "hardware": {k: v.view() for k, v in sorted(hardware.items())},
        "percentiles": "from histogram buckets ~5 % wide, merged across gateways",
    }

"""Prometheus metrics of one gateway (its own registry, so tests can run several)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS_MS = (0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 200, 500, 1000, 5000)


VariantLabels = tuple[str, str, str]  # app, variant, hardware


@dataclass(frozen=True, slots=True)
class VariantSeries:
    """One variant's series of an answered query (prometheus_client's ``labels()`` costs
    ~3 µs a call, and an answer touches six series)."""

    ok: Any
    latency_ms: Any
    model_ms: Any
    slo_misses: Any
    cost_usd: Any
    accuracy_delivered: Any


class GatewayMetrics:
    def __init__(self) -> None:
        self._series: dict[VariantLabels, VariantSeries] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        self.queries = Counter(
            "infaas_queries",
            "Queries answered, by app, variant, hardware and outcome code",
            ["app", "variant", "hardware", "code"],
            registry=self.registry,
        )
        self.latency_ms = Histogram(
            "infaas_query_latency_ms",
            "End-to-end latency measured at the gateway (milliseconds)",
            ["app", "variant", "hardware"],
            buckets=LATENCY_BUCKETS_MS,
            registry=self.registry,
        )
        self.model_ms = Histogram(
            "infaas_model_latency_ms",
            "Inference time of the batch that carried the query (milliseconds)",
            ["app", "variant", "hardware"],
            buckets=LATENCY_BUCKETS_MS,
            registry=self.registry,
        )
        self.slo_misses = Counter(
            "infaas_slo_misses",
            "Answers later than the query's latency objective",
            ["app", "variant", "hardware"],
            registry=self.registry,
        )
        self.cost_usd = Counter(
            "infaas_cost_usd",
            "Hardware cost of the inference time spent on answered queries (dollars)",
            ["app", "variant", "hardware"],
            registry=self.registry,
        )
        self.accuracy_delivered = Counter(
            "infaas_accuracy_delivered",
            "Sum of the profiled accuracy of the variants that answered (÷ queries = mean)",
            ["app", "variant", "hardware"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "infaas_rejected_queries",
            "Queries refused before reaching a worker, by app and error code",
            ["app", "code"],
            registry=self.registry,
        )
        self.expired = Gauge(
            "infaas_expired_in_queue",
            "Queries that expired in a variant queue and were answered with a deadline error",
            registry=self.registry,
        )
        self.messages_published = Gauge(
            "infaas_query_messages_published",
            "Query messages this gateway published (queries packed together count once)",
            registry=self.registry,
        )
        self.queries_published = Gauge(
            "infaas_queries_published",
            "Queries this gateway published (÷ messages = queries per message)",
            registry=self.registry,
        )
        self.live_workers = Gauge(
            "infaas_live_workers", "Workers seen in live state", registry=self.registry
        )

    def series(self, labels: VariantLabels) -> VariantSeries:
        """The series of a variant's answers, made once per variant."""
        found = self._series.get(labels)
        if found is None:
            found = VariantSeries(
                self.queries.labels(*labels, "ok"),
                self.latency_ms.labels(*labels),
                self.model_ms.labels(*labels),
                self.slo_misses.labels(*labels),
                self.cost_usd.labels(*labels),
                self.accuracy_delivered.labels(*labels),
            )
            self._series[labels] = found
        return found

"""Prometheus metrics of one worker, served over HTTP for scraping.

Workers have no HTTP server of their own, so Prometheus (the compose stack's, or one in a
cluster) could not see them; with ``INFAAS_WORKER_METRICS_PORT`` set, the worker serves
``/metrics`` on that port, on every interface of its host (a worker's network is the
stack's private one, or the host that joined it).

What is exported is read at scrape time from the variant server, so nothing is counted
twice and the monitor's windows are left alone: per loaded variant its replicas, their
hardware cost, its state and the running total of queries answered (rates come from
Prometheus's ``rate()``); per process the standard CPU and memory figures. Per-window
latency and load figures are the monitor's, in live state. A custom collector on a
registry of this worker's own, so tests and the embedded stack can run several workers in
one process.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator, Mapping, Sized
from dataclasses import dataclass
from typing import Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from queues.errors import ConfigError
from registry.livestate import VARIANT_STATES
from registry.types import Variant

LABELS = ("worker", "hardware", "app", "variant")


class VariantTotals(Protocol):
    @property
    def total_completed(self) -> int: ...


class LoadedView(Protocol):
    """What the collector reads of one loaded variant (``workers.server.LoadedVariant``)."""

    @property
    def variant(self) -> Variant: ...

    @property
    def replicas(self) -> Sized: ...

    @property
    def stats(self) -> VariantTotals: ...

    @property
    def state(self) -> str: ...


class ServesVariants(Protocol):
    """What the collector reads: the variant server (or a stand-in in tests)."""

    @property
    def worker_id(self) -> str: ...

    @property
    def hardware(self) -> str: ...

    def loaded(self) -> Mapping[str, LoadedView]: ...


class WorkerCollector(Collector):
    """Turns the variant server's counters into metric families at each scrape."""

    def __init__(self, server: ServesVariants) -> None:
        self._server = server

    def collect(self) -> Iterator[Metric]:
        server = self._server
        info = GaugeMetricFamily(
            "infaas_worker_info", "This worker (always 1)", labels=["worker", "hardware", "host"]
        )
        info.add_metric([server.worker_id, server.hardware, socket.gethostname()], 1.0)
        yield info

        families = _Families()
        for variant_id, loaded in sorted(server.loaded().items()):
            labels = [server.worker_id, server.hardware, loaded.variant.app, variant_id]
            families.add(labels, loaded)
        yield from families.all()


class _Families:
    def __init__(self) -> None:
        self.replicas = GaugeMetricFamily(
            "infaas_worker_variant_replicas",
            "Replicas of a loaded variant consuming its queue on this worker",
            labels=LABELS,
        )
        self.cost = GaugeMetricFamily(
            "infaas_worker_variant_cost_per_hour",
            "Hardware cost of the variant's replicas on this worker (dollars per hour)",
            labels=LABELS,
        )
        self.completed = CounterMetricFamily(
            "infaas_worker_variant_completed",
            "Queries this worker answered with the variant since it was loaded",
            labels=LABELS,
        )
        self.state = GaugeMetricFamily(
            "infaas_worker_variant_state",
            "State of the variant on this worker (1 for the current state)",
            labels=[*LABELS, "state"],
        )

    def add(self, labels: list[str], loaded: LoadedView) -> None:
        replicas = len(loaded.replicas)
        self.replicas.add_metric(labels, float(replicas))
        self.cost.add_metric(labels, loaded.variant.cost_per_hour * replicas)
        self.completed.add_metric(labels, float(loaded.stats.total_completed))
        for state in VARIANT_STATES:
            self.state.add_metric([*labels, state], 1.0 if state == loaded.state else 0.0)

    def all(self) -> Iterator[Metric]:
        yield from (self.replicas, self.cost, self.completed, self.state)


@dataclass
class MetricsServer:
    """The worker's ``/metrics`` endpoint; ``port`` is the one bound (useful with 0)."""

    registry: CollectorRegistry
    port: int
    _server: WSGIServer
    _thread: threading.Thread

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def worker_registry(server: ServesVariants) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerCollector(server))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


def start_metrics_server(server: ServesVariants, port: int, addr: str = "") -> MetricsServer:
    """Serve this worker's metrics on ``addr:port`` (all interfaces by default)."""
    registry = worker_registry(server)
    try:
        http, thread = start_http_server(port, addr=addr or "0.0.0.0", registry=registry)
    except OSError as exc:
        raise ConfigError(
            f"the worker cannot serve metrics on port {port}: {exc.strerror or exc}; "
            "choose another INFAAS_WORKER_METRICS_PORT or leave it unset"
        ) from exc
    return MetricsServer(registry, int(http.server_address[1]), http, thread)

"""workers/metrics.py: the worker's /metrics endpoint Prometheus scrapes, and the Grafana
dashboard built on the gateway's and the workers' metrics."""

from __future__ import annotations

import json
import re
import socket
from dataclasses import dataclass, field

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from api_gateway.metrics import GatewayMetrics
from queues.errors import ConfigError
from registry.types import Variant
from tests import factories
from tests.infra_support import INFRA, load_yaml
from workers.metrics import start_metrics_server, worker_registry
from workers.settings import WorkerSettings
from workers.stats import VariantStats


@dataclass
class FakeLoaded:
    variant: Variant
    replicas: list[object]
    stats: VariantStats = field(default_factory=VariantStats)
    state: str = "active"


@dataclass
class FakeServer:
    worker_id: str = "cpu-host-1"
    hardware: str = "cpu"
    variants: dict[str, FakeLoaded] = field(default_factory=dict)

    def loaded(self) -> dict[str, FakeLoaded]:
        return dict(self.variants)


def server_with_two_variants() -> FakeServer:
    logreg = factories.variant("digits-logreg.onnx-fp32.cpu-t1", 0.96, 0.1, cost=0.048)
    mlp = factories.variant("digits-mlp.onnx-fp32.cpu-t2", 0.98, 0.3, cost=0.096)
    server = FakeServer()
    server.variants[logreg.id] = FakeLoaded(logreg, [object(), object()])
    server.variants[mlp.id] = FakeLoaded(mlp, [object()], state="overloaded")
    server.variants[logreg.id].stats.arrived(5)
    server.variants[logreg.id].stats.finished_batch(5, 0.2, [1.0] * 5)
    return server


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    matches = [v for (n, ls), v in found.items() if n == name and set(labels.items()) <= set(ls)]
    assert len(matches) == 1, (name, labels, matches)
    return matches[0]


def test_the_worker_exports_replicas_cost_state_and_answered_queries() -> None:
    from prometheus_client import generate_latest

    server = server_with_two_variants()
    found = samples(generate_latest(worker_registry(server)).decode())
    logreg, mlp = "digits-logreg.onnx-fp32.cpu-t1", "digits-mlp.onnx-fp32.cpu-t2"
    assert value(found, "infaas_worker_info", worker="cpu-host-1", hardware="cpu") == 1
    assert value(found, "infaas_worker_variant_replicas", variant=logreg, app="digits") == 2
    assert value(found, "infaas_worker_variant_cost_per_hour", variant=logreg) == pytest.approx(
        0.096
    )
    assert value(found, "infaas_worker_variant_completed_total", variant=logreg) == 5
    assert value(found, "infaas_worker_variant_completed_total", variant=mlp) == 0
    assert value(found, "infaas_worker_variant_state", variant=mlp, state="overloaded") == 1
    assert value(found, "infaas_worker_variant_state", variant=mlp, state="active") == 0
    assert value(found, "process_resident_memory_bytes") > 0
    # the monitor's windows are left alone: reading metrics resets nothing
    generate_latest(worker_registry(server))
    assert server.variants[logreg].stats.collect().completed == 5


def test_the_metrics_endpoint_serves_and_stops() -> None:
    endpoint = start_metrics_server(server_with_two_variants(), 0, "127.0.0.1")
    try:
        response = httpx.get(f"http://127.0.0.1:{endpoint.port}/metrics", timeout=5)
        assert response.status_code == 200
        assert "infaas_worker_variant_completed_total" in response.text
    finally:
        endpoint.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{endpoint.port}/metrics", timeout=2)


def test_a_port_in_use_is_a_clear_config_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot serve metrics on port {port}"):
            start_metrics_server(FakeServer(), port, "127.0.0.1")


def test_the_metrics_port_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert WorkerSettings().metrics_port is None
    monkeypatch.setenv("INFAAS_WORKER_METRICS_PORT", "9100")
    assert WorkerSettings().metrics_port == 9100
    for bad in ("-1", "65536", "nine"):
        monkeypatch.setenv("INFAAS_WORKER_METRICS_PORT", bad)
        with pytest.raises(ValidationError, match="metrics_port"):
            WorkerSettings()


# --- Grafana --------------------------------------------------------------------------------


def exported_names() -> set[str]:
    from prometheus_client import generate_latest

    names = {
        sample.name
        for family in text_string_to_metric_families(
            generate_latest(worker_registry(server_with_two_variants())).decode()
        )
        for sample in family.samples
    }
    gateway = GatewayMetrics()
    for metric in gateway.registry.collect():
        base = metric.name
        names |= {base, f"{base}_total", f"{base}_bucket", f"{base}_sum", f"{base}_count"}
    return names


def test_the_dashboard_uses_only_metrics_that_exist_and_the_provisioned_source() -> None:
    dashboard = json.loads((INFRA / "grafana" / "dashboards" / "infaas.json").read_text())
    source = load_yaml(INFRA / "grafana" / "provisioning" / "datasources" / "prometheus.yml")
    uid = source["datasources"][0]["uid"]
    assert source["datasources"][0]["url"] == "http://prometheus:9090"
    known = exported_names()
    titles = []
    for panel in dashboard["panels"]:
        titles.append(panel["title"])
        assert panel["datasource"]["uid"] == uid
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid
            for name in re.findall(r"\b(infaas_[a-z_]+)\b", target["expr"]):
                assert name in known, f"{panel['title']}: {name} is exported by nothing"
    text = " ".join(titles).lower()
    for topic in ("slo", "variants in use", "queue depth", "cost"):
        assert topic in text, topic
    provider = load_yaml(INFRA / "grafana" / "provisioning" / "dashboards" / "infaas.yml")
    assert provider["providers"][0]["options"]["path"] == "/etc/grafana/dashboards"

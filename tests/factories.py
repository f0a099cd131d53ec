"""Hand-built catalog and live-state records for tests of the pure decision code."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from registry.livestate import ACTIVE, LiveSnapshot, VariantLoad, WorkerReport
from registry.types import App, CatalogSnapshot, InputSignature, Model, Profile, Variant

if TYPE_CHECKING:
    from api_gateway.settings import GatewaySettings
    from api_gateway.state import GatewayState


def profile(
    accuracy: float,
    latency_b1_ms: float,
    *,
    slope_ms: float | None = None,
    max_batch: int = 32,
    load_ms: float = 100.0,
    memory_mb: float = 50.0,
) -> Profile:
    slope = latency_b1_ms * 0.2 if slope_ms is None else slope_ms
    intercept = latency_b1_ms - slope
    sizes = [b for b in (1, 4, 8, 16, 32, 64) if b <= max_batch]
    latency = {b: intercept + slope * b for b in sizes}
    return Profile(
        accuracy=accuracy,
        metric="top1",
        latency_ms=latency,
        latency_p99_ms={b: v * 1.2 for b, v in latency.items()},
        latency_slope_ms=slope,
        latency_intercept_ms=intercept,
        memory_mb=memory_mb,
        load_ms=load_ms,
        saturation_qps=max(1000 * b / v for b, v in latency.items()),
        artifact_bytes=1000,
        max_batch=max_batch,
    )


def variant(
    vid: str,
    accuracy: float,
    latency_b1_ms: float,
    *,
    app: str = "digits",
    cost: float = 0.048,
    hardware: str = "cpu",
    threads: int = 1,
    **profile_kwargs: float,
) -> Variant:
    model = vid.split(".", maxsplit=1)[0]
    return Variant(
        id=vid,
        model=model,
        app=app,
        runtime="onnx",
        precision="fp32",
        hardware=hardware,
        threads=threads if hardware == "cpu" else 0,
        artifact_key=f"variants/{vid}/model.onnx",
        instance_class="m5.2xlarge" if hardware == "cpu" else "p3.2xlarge",
        cost_per_hour=cost,
        profile=profile(accuracy, latency_b1_ms, **profile_kwargs),  # type: ignore[arg-type]
    )


def catalog(*variants: Variant, revision: int = 1) -> CatalogSnapshot:
    sig = InputSignature("input", "float32", (-1, 64))
    apps = {v.app: App(v.app, "classification", sig) for v in variants}
    models = {
        v.model: Model(v.model, v.app, "onnx", f"models/{v.model}.onnx", "val.npz")
        for v in variants
    }
    return CatalogSnapshot(
        revision=revision, apps=apps, models=models, variants={v.id: v for v in variants}
    )


def worker(
    worker_id: str,
    loads: dict[str, str] | None = None,
    *,
    hardware: str = "cpu",
    outstanding: int = 0,
    app: str = "digits",
    replicas: int = 1,
) -> WorkerReport:
    """A worker running the variants of ``loads`` (variant id -> state)."""
    return WorkerReport(
        worker_id=worker_id,
        hardware=hardware,
        host="h",
        pid=1,
        cores=2,
        variants={
            vid: VariantLoad(
                variant=vid, app=app, state=state, outstanding=outstanding, replicas=replicas
            )
            for vid, state in (loads or {}).items()
        },
    )


def live(*workers: WorkerReport) -> LiveSnapshot:
    return LiveSnapshot(taken_ms=0.0, workers={w.worker_id: w for w in workers})


def running(*variant_ids: str, state: str = ACTIVE) -> LiveSnapshot:
    return live(worker("w1", dict.fromkeys(variant_ids, state)))


def worker_report(
    worker_id: str,
    replicas: dict[str, int] | None = None,
    *,
    hardware: str = "cpu",
    cores: int = 4,
    states: dict[str, str] | None = None,
    utilisation: float = 0.0,
    app: str = "digits",
    qps: dict[str, float] | None = None,
    started_ms: float = 0.0,
) -> WorkerReport:
    """A worker running ``replicas`` (variant id -> replica count), for the scaler."""
    states = states or {}
    qps = qps or {}
    return WorkerReport(
        worker_id=worker_id,
        hardware=hardware,
        host="h",
        pid=1,
        cores=cores,
        variants={
            vid: VariantLoad(
                variant=vid,
                app=app,
                state=states.get(vid, ACTIVE),
                replicas=n,
                qps=qps.get(vid, 0.0),
            )
            for vid, n in (replicas or {}).items()
        },
        cpu_util=utilisation if hardware == "cpu" else 0.0,
        gpu_util=utilisation if hardware == "gpu" else 0.0,
        started_ms=started_ms,
    )


def gateway_state(home: Path, settings: GatewaySettings) -> GatewayState:
    """A gateway's in-memory state on services with no broker (memory live state and a
    catalog under ``home``): what the gateway does between queries, without a network."""
    from api_gateway.metrics import GatewayMetrics
    from api_gateway.services import GatewayServices
    from api_gateway.state import GatewayState
    from infaas.services import open_services
    from queues.rpc import create_query_client
    from queues.settings import BrokerSettings
    from registry.settings import RegistrySettings

    broker = BrokerSettings(broker_url=None)
    services = open_services(broker, RegistrySettings(home=home))
    return GatewayState(
        settings,
        GatewayServices(
            broker=broker,
            catalog=services.catalog,
            live=services.live,
            client=create_query_client(broker),
        ),
        GatewayMetrics(),
    )

"""Random instances for the planner benchmark (:mod:`bench.planner`): planner problems
(apps of ten variants, a cluster of CPU and GPU workers, requirement classes, loads and a
current allocation), and whole clusters for policy ticks with a stand-in for the workers
that does what each plan asks."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any

from registry.livestate import VariantLoad, WorkerReport
from registry.pricing import PriceTable
from registry.types import App, CatalogSnapshot, InputSignature, Model, Profile, Variant
from scaler.greedy import GreedyPlanner
from scaler.planner import ClassLoad, Host, Option, Problem
from scaler.policy import Plan

VARIANTS_PER_APP = 10


@dataclass(frozen=True, slots=True)
class _Model:
    """A random variant before classes exist: its option, accuracy and top speed."""

    option: Option
    accuracy: float
    qps: float


def random_models(rng: random.Random, app: str, prices: PriceTable) -> list[_Model]:
    """Ten variants of one app: CPU ones of 1, 2 or 4 threads and a few GPU ones."""
    cpu = prices.instance_for("cpu")
    gpu = prices.instance_for("gpu")
    models = []
    for k in range(VARIANTS_PER_APP):
        on_gpu = rng.random() < 0.25
        accuracy = rng.uniform(0.6, 0.95)
        slowness = 0.5 + (accuracy - 0.6) * 6  # more accurate models are slower
        if on_gpu:
            threads = 0
            qps = rng.uniform(1500, 6000) / slowness
            cost = gpu.usd_per_hour
            memory = rng.uniform(500, 5000)
            load_ms = rng.uniform(2000, 8000)
        else:
            threads = rng.choice((1, 2, 4))
            qps = rng.uniform(60, 300) * threads**0.85 / slowness
            cost = cpu.usd_per_hour * threads / cpu.vcpus
            memory = rng.uniform(100, 1500)
            load_ms = rng.uniform(200, 2500)
        option = Option(
            variant=f"{app}-v{k}.{'gpu' if on_gpu else f'cpu-t{threads}'}",
            app=app,
            hardware="gpu" if on_gpu else "cpu",
            cores=threads,
            memory_mb=round(memory, 1),
            cost_per_hour=round(cost, 6),
            load_ms=round(load_ms, 1),
            capacity_qps={},
        )
        models.append(_Model(option, accuracy, qps))
    return models


def _hosts(workers: int, prices: PriceTable) -> list[Host]:
    gpus = max(round(workers * 0.3), 1)
    cpu: dict[str, Any] = {
        "hardware": "cpu",
        "cores": 8,
        "memory_mb": 16384.0,
        "max_replicas": 1000,
    }
    gpu: dict[str, Any] = {
        "hardware": "gpu",
        "cores": 8,
        "memory_mb": 16384.0,
        "max_replicas": 4,
        "max_per_variant": 1,
    }
    hosts = [Host(id=f"cpu{k}", **cpu) for k in range(workers - gpus)]
    hosts += [Host(id=f"gpu{k}", **gpu) for k in range(gpus)]
    hosts.append(
        Host(
            id="new-cpu",
            prospective=True,
            open_cost_per_hour=prices.instance_for("cpu").usd_per_hour,
            **cpu,
        )
    )
    hosts.append(
        Host(
            id="new-gpu",
            prospective=True,
            open_cost_per_hour=prices.instance_for("gpu").usd_per_hour,
            **gpu,
        )
    )
    return hosts


def _cluster_qps(key: str, options: tuple[Option, ...], hosts: list[Host]) -> float:
    """What the running workers could serve of one class if they served nothing else."""
    total = 0.0
    for host in hosts:
        if host.prospective:
            continue
        total += max(
            (host.room(o) * o.capacity_qps[key] for o in options if key in o.capacity_qps),
            default=0.0,
        )
    return total


def random_problem(
    rng: random.Random,
    variants: int,
    workers: int,
    *,
    utilisation: float = 0.5,
    load_penalty_per_s: float = 0.1,
) -> Problem:
    """A random instance whose load would fill ``utilisation`` of the running workers."""
    prices = PriceTable.default()
    apps = [f"app{a}" for a in range(max(variants // VARIANTS_PER_APP, 1))]
    models = [m for app in apps for m in random_models(rng, app, prices)]
    classes: list[ClassLoad] = []
    capacity: dict[str, dict[str, float]] = {m.option.variant: {} for m in models}
    for app in apps:
        mine = [m for m in models if m.option.app == app]
        for c in range(rng.choice((2, 3))):
            floor = rng.uniform(0.55, 0.85)
            tight = rng.random() < 0.4  # a tight latency objective: smaller batches
            key = f"{app}|c{c}"
            for m in mine:
                if m.accuracy >= floor:
                    factor = rng.uniform(0.4, 0.7) if tight else 1.0
                    capacity[m.option.variant][key] = round(m.qps * factor, 2)
            if any(key in capacity[m.option.variant] for m in mine):
                classes.append(ClassLoad(key=key, app=app, qps=0.0))
    options = tuple(replace(m.option, capacity_qps=capacity[m.option.variant]) for m in models)
    hosts = _hosts(workers, prices)
    full = {c.key: _cluster_qps(c.key, options, hosts) for c in classes}
    weights = [rng.random() for _ in classes]
    total = sum(weights) or 1.0

    def loads(scale: float) -> tuple[ClassLoad, ...]:
        return tuple(
            replace(c, qps=round(utilisation * scale * full[c.key] * w / total, 2))
            for c, w in zip(classes, weights, strict=True)
        )

    # the current allocation: the plan of a different load, on the running workers
    before = Problem(loads(rng.uniform(0.5, 1.5)), options, tuple(hosts), load_penalty_per_s)
    previous = GreedyPlanner().solve(before)
    current: dict[str, dict[str, int]] = {}
    for (vid, hid), n in previous.replicas.items():
        if not hid.startswith("new-"):
            current.setdefault(hid, {})[vid] = n
    hosts = [replace(h, current=current.get(h.id, {})) for h in hosts]
    return Problem(loads(rng.uniform(0.8, 1.2)), options, tuple(hosts), load_penalty_per_s)


def random_cluster(
    rng: random.Random, variants: int, workers: int
) -> tuple[CatalogSnapshot, dict[str, WorkerReport], list[tuple[str, float | None, float]]]:
    """A catalog of profiled variants, idle workers, and requirement classes (app,
    latency objective, accuracy floor) for whole policy ticks."""
    prices = PriceTable.default()
    sig = InputSignature("input", "float32", (-1, 64))
    apps, models, found = {}, {}, {}
    classes: list[tuple[str, float | None, float]] = []
    for a in range(max(variants // VARIANTS_PER_APP, 1)):
        app = f"app{a}"
        apps[app] = App(app, "classification", sig)
        for k in range(VARIANTS_PER_APP):
            on_gpu = rng.random() < 0.25
            accuracy = rng.uniform(0.6, 0.95)
            slowness = 0.5 + (accuracy - 0.6) * 6
            threads = 0 if on_gpu else rng.choice((1, 2, 4))
            b1 = (
                rng.uniform(0.5, 2.0) if on_gpu else rng.uniform(2, 10) / threads**0.85
            ) * slowness
            slope = b1 * (0.02 if on_gpu else rng.uniform(0.6, 0.9))
            sizes = (1, 4, 8, 16, 32, 64)
            latency = {b: b1 - slope + slope * b for b in sizes}
            model = f"{app}-m{k}"
            vid = f"{model}.onnx-fp32.{'gpu' if on_gpu else f'cpu-t{threads}'}"
            instance, cost = prices.variant_cost_per_hour("gpu" if on_gpu else "cpu", threads)
            models[model] = Model(model, app, "onnx", f"models/{model}", "val")
            found[vid] = Variant(
                id=vid,
                model=model,
                app=app,
                runtime="onnx",
                precision="fp32",
                hardware="gpu" if on_gpu else "cpu",
                threads=threads,
                artifact_key=vid,
                instance_class=instance,
                cost_per_hour=cost,
                profile=Profile(
                    accuracy=accuracy,
                    metric="top1",
                    latency_ms=latency,
                    latency_p99_ms={b: 1.2 * v for b, v in latency.items()},
                    latency_slope_ms=slope,
                    latency_intercept_ms=b1 - slope,
                    memory_mb=rng.uniform(500, 5000) if on_gpu else rng.uniform(100, 1500),
                    load_ms=rng.uniform(2000, 8000) if on_gpu else rng.uniform(200, 2500),
                    saturation_qps=max(1000 * b / v for b, v in latency.items()),
                    artifact_bytes=1,
                    max_batch=64,
                ),
            )
        for _ in range(rng.choice((2, 3))):
            tight = rng.random() < 0.4
            classes.append((app, rng.uniform(5, 20) if tight else None, rng.uniform(0.55, 0.85)))
    catalog = CatalogSnapshot(revision=1, apps=apps, models=models, variants=found)
    gpus = max(round(workers * 0.3), 1)
    reports = {}
    for k in range(workers):
        hardware = "gpu" if k < gpus else "cpu"
        wid = f"{hardware}{k}"
        reports[wid] = WorkerReport(wid, hardware, "bench", 1, cores=8)
    return catalog, reports, classes


def apply_plan(plan: Plan, reports: dict[str, WorkerReport]) -> None:
    """The workers of a simulated cluster do what the plan asks: replicas set, workers
    added and removed."""
    added = 0
    for a in plan.actions:
        if a.worker is not None and a.variant is not None:
            w = reports[a.worker]
            loads = dict(w.variants)
            if a.replicas:
                loads[a.variant] = VariantLoad(a.variant, "", replicas=a.replicas)
            else:
                loads.pop(a.variant, None)
            reports[a.worker] = replace(w, variants=loads)
        elif a.kind == "add_worker":
            added += 1
            wid = f"{a.hardware}-t{plan.tick}-{added}"
            reports[wid] = WorkerReport(wid, a.hardware or "cpu", "bench", 1, cores=8)
        elif a.kind == "remove_worker" and a.worker is not None:
            reports.pop(a.worker, None)

"""Selector benchmark: time to choose a variant per query with 10,000 variants across 500
apps, against a brute-force scan of the same catalog, in one run on one core.

    python -m bench.selector [--apps 500] [--variants-per-app 20] [--queries 20000]

Writes ``bench/results/selector.json``. Target: p99 ≤ 50 µs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from registry.livestate import LiveSnapshot, VariantLoad, WorkerReport
from registry.pricing import usd_for
from registry.selector import Requirements, SelectorIndex, select
from registry.types import App, CatalogSnapshot, InputSignature, Model, Profile, Variant

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_P99_US = 50.0


def build(apps: int, per_app: int, seed: int) -> tuple[CatalogSnapshot, LiveSnapshot]:
    rng = np.random.default_rng(seed)
    sig = InputSignature("input", "float32", (-1, 64))
    app_records, models, variants = {}, {}, {}
    loads: dict[str, VariantLoad] = {}
    for a in range(apps):
        app = f"app-{a}"
        app_records[app] = App(app, "classification", sig)
        for v in range(per_app):
            model = f"{app}-m{v}"
            models[model] = Model(model, app, "onnx", f"m/{model}", "val")
            b1 = float(rng.lognormal(0.0, 1.2))
            slope = b1 * float(rng.uniform(0.05, 0.5))
            latency = {b: b1 + slope * (b - 1) for b in (1, 4, 8, 16, 32, 64)}
            gpu = v % 5 == 4
            vid = f"{model}.onnx-fp32.{'gpu' if gpu else f'cpu-t{1 + v % 3}'}"
            variants[vid] = Variant(
                id=vid, model=model, app=app, runtime="onnx", precision="fp32",
                hardware="gpu" if gpu else "cpu", threads=0 if gpu else 1 + v % 3,
                artifact_key="x", instance_class="i",
                cost_per_hour=3.06 if gpu else 0.048 * (1 + v % 3),
                profile=Profile(
                    accuracy=float(rng.uniform(0.6, 0.99)), metric="top1",
                    latency_ms=latency, latency_p99_ms=latency, latency_slope_ms=slope,
                    latency_intercept_ms=b1 - slope, memory_mb=50, load_ms=100,
                    saturation_qps=1000 * 64 / latency[64], artifact_bytes=1, max_batch=64,
                ),
            )  # fmt: skip
            if rng.random() < 0.5:
                loads[vid] = VariantLoad(variant=vid, app=app)
    workers = {
        f"w{i}": WorkerReport(
            worker_id=f"w{i}",
            hardware="cpu",
            host="h",
            pid=i,
            cores=8,
            variants=dict(list(loads.items())[i::20]),
        )
        for i in range(20)
    }
    catalog = CatalogSnapshot(revision=1, apps=app_records, models=models, variants=variants)
    return catalog, LiveSnapshot(taken_ms=0.0, workers=workers)


def brute_force(catalog: CatalogSnapshot, running: set[str], req: Requirements) -> str | None:
    """The same rule, scanning every variant of the catalog for each query."""
    best: tuple[float, str] | None = None
    for variant in catalog.variants.values():
        profile = variant.profile
        if variant.app != req.app or profile is None or variant.id not in running:
            continue
        latency = profile.predict_latency_ms(req.batch)
        if req.min_accuracy is not None and profile.accuracy < req.min_accuracy:
            continue
        if req.latency_ms is not None and latency > req.latency_ms:
            continue
        cost = usd_for(variant.cost_per_hour, latency / req.batch)
        if best is None or (cost, variant.id) < best:
            best = (cost, variant.id)
    return best[1] if best else None


def queries(apps: int, count: int, seed: int) -> list[Requirements]:
    rng = np.random.default_rng(seed + 1)
    return [
        Requirements(
            app=f"app-{int(rng.integers(apps))}",
            batch=int(rng.choice([1, 1, 1, 4, 16])),
            latency_ms=float(rng.uniform(2, 50)),
            min_accuracy=float(rng.uniform(0.5, 0.8)),
        )
        for _ in range(count)
    ]


def time_each(fn: Any, items: list[Requirements]) -> np.ndarray:
    times = np.empty(len(items))
    for i, req in enumerate(items):
        started = time.perf_counter_ns()
        with contextlib.suppress(Exception):  # no eligible variant: timed the same
            fn(req)
        times[i] = (time.perf_counter_ns() - started) / 1000.0
    return times


def run(apps: int, per_app: int, count: int, seed: int) -> dict[str, Any]:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    catalog, live = build(apps, per_app, seed)
    started = time.perf_counter()
    index = SelectorIndex(catalog, live, overhead_ms=0.5)
    index_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    index = SelectorIndex(catalog, live, overhead_ms=0.5, previous=index)
    refresh_ms = (time.perf_counter() - started) * 1000
    items = queries(apps, count, seed)
    running = set(live.by_variant)
    for req in items[:500]:  # the two must agree on every query they both answer
        try:
            ours: str | None = select(index, req).variant.id
        except Exception:
            ours = None
        # the brute force has no pipeline overhead: take it off the objective
        shifted = replace(req, latency_ms=(req.latency_ms or 0.0) - 0.5)
        theirs = brute_force(catalog, running, shifted)
        if ours is not None and theirs is not None and ours != theirs:
            raise AssertionError(f"selector chose {ours}, the brute-force scan {theirs}")
    ours_us = time_each(lambda r: select(index, r), items)
    brute_us = time_each(lambda r: brute_force(catalog, running, r), items[: count // 10])
    return {
        "benchmark": "selector",
        "command": f"python -m bench.selector --apps {apps} --variants-per-app {per_app} "
        f"--queries {count}",
        "machine": {"cores_used": 1, "processor": platform.processor() or platform.machine()},
        "catalog": {"apps": apps, "variants": len(catalog.variants)},
        "index_build_ms": round(index_ms, 1),
        "index_refresh_ms": round(refresh_ms, 1),
        "selector_us": {"p50": round(float(np.percentile(ours_us, 50)), 2),
                        "p99": round(float(np.percentile(ours_us, 99)), 2)},
        "brute_force_us": {"p50": round(float(np.percentile(brute_us, 50)), 2),
                           "p99": round(float(np.percentile(brute_us, 99)), 2)},
        "speedup_p50": round(float(np.percentile(brute_us, 50) / np.percentile(ours_us, 50)), 1),
        "target_p99_us": TARGET_P99_US,
        "met": bool(np.percentile(ours_us, 99) <= TARGET_P99_US),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--apps", type=int, default=500)
    parser.add_argument("--variants-per-app", type=int, default=20)
    parser.add_argument("--queries", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    result = run(args.apps, args.variants_per_app, args.queries, args.seed)
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "selector.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

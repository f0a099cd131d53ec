"""Measure the simulator's CPU profiles on this machine and the slowdown of two models
sharing a core; write them, with the cited GPU profiles, to ``bench/results/sim_profiles.json``.

    python -m bench.sim.measure [--out bench/results/sim_profiles.json]

Run it with nothing else on the machine (profiles are latencies). The digits app is the
demo's (trained at setup); the imagenet app has ResNet-50 v1.5 and EfficientNet-B0 built
in plain torch (their CPU cost measured here, their GPU cost and accuracy published).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.sim.architectures import ARCHITECTURES, RESOLUTION, export_onnx
from bench.sim.gpu_tables import GPU_INSTANCE, GPU_NAME, PUBLISHED
from infaas.demo_models import load_validation, prepare_demo_models
from registry.pricing import PriceTable
from workers.builders import optimize_onnx
from workers.profiler import cpu_model_name, measure_latency, profile_variant, usable_cores
from workers.runtimes.base import RuntimeSpec, load_runtime

RESULTS = Path(__file__).resolve().parents[1] / "results"
REPO = Path(__file__).resolve().parents[2]
IMAGENET_BATCHES = {
    "resnet50": (1, 2, 4, 8),
    "efficientnet-b0": (1, 2, 4, 8, 16),
    "efficientnet-b4": (1, 2, 4),
}
GPU_LOAD_MS_ASSUMED = 2500.0  # CUDA context + weights to device; no published figure


def _cpu_variant(model: str, app: str, threads: int, profile: dict[str, Any]) -> dict[str, Any]:
    instance, cost = PriceTable.default().variant_cost_per_hour("cpu", threads)
    return {
        "id": f"{model}.onnx-fp32.cpu-t{threads}",
        "model": model,
        "app": app,
        "hardware": "cpu",
        "precision": "fp32",
        "threads": threads,
        "instance_class": instance,
        "cost_per_hour": cost,
        "source": f"measured on this machine ({cpu_model_name()})",
        **profile,
    }


def measure_digits(work: Path) -> list[dict[str, Any]]:
    demo = prepare_demo_models(REPO / ".infaas" / "test-cache" / "demo-models")
    inputs, labels = load_validation(demo.validation_path)
    out = []
    for model in demo.models:
        optimized = optimize_onnx(model.path, work / f"{model.id}.onnx")
        for threads in (1, 2):
            spec = RuntimeSpec("onnx", "fp32", "cpu", threads, output_name=model.output_name)
            p = profile_variant(
                functools.partial(load_runtime, spec, optimized),
                optimized.stat().st_size,
                inputs,
                labels,
                batch_sizes=(1, 4, 8, 16, 32, 64),
                budget_s_per_batch=0.3,
            )
            out.append(
                _cpu_variant(
                    model.id,
                    "digits",
                    threads,
                    {
                        "accuracy": p.accuracy,
                        "latency_ms": p.latency_ms,
                        "latency_p99_ms": p.latency_p99_ms,
                        "load_ms": p.load_ms,
                        "memory_mb": p.memory_mb,
                    },
                )
            )
    return out


def measure_imagenet(work: Path) -> list[dict[str, Any]]:
    out = []
    accuracy = {p.model: p.accuracy for p in PUBLISHED if p.precision == "fp32"}
    for name in ARCHITECTURES:
        source = export_onnx(name, work / f"{name}.onnx")
        optimized = optimize_onnx(source, work / f"{name}-opt.onnx")
        for threads in (1, 2):
            spec = RuntimeSpec("onnx", "fp32", "cpu", threads)
            started = time.perf_counter()
            runtime = load_runtime(spec, optimized)
            size = RESOLUTION[name]
            runtime.predict(np.zeros((1, 3, size, size), np.float32))
            load_ms = (time.perf_counter() - started) * 1000
            p50, p99 = {}, {}
            for batch in IMAGENET_BATCHES[name]:
                x = np.random.default_rng(0).random((batch, 3, size, size), dtype=np.float32)
                stats = measure_latency(runtime.predict, x, min_runs=5, budget_s=2.0, warmup=1)
                p50[batch], p99[batch] = stats.p50_ms, stats.p99_ms
            runtime.close()
            out.append(
                _cpu_variant(
                    name,
                    "imagenet",
                    threads,
                    {
                        "accuracy": accuracy[name],
                        "latency_ms": p50,
                        "latency_p99_ms": p99,
                        "load_ms": load_ms,
                        "memory_mb": optimized.stat().st_size / 2**20 * 1.5,
                        "accuracy_source": "published top-1 (see the GPU rows' source)",
                    },
                )
            )
            print(f"{name} t{threads}: b1 {p50[1]:.1f} ms, b4 {p50[4]:.1f} ms")
    return out


def gpu_variants() -> list[dict[str, Any]]:
    price = PriceTable.default().instances[GPU_INSTANCE].usd_per_hour
    return [
        {
            "id": f"{p.model}.torch-{p.precision}.gpu",
            "model": p.model,
            "app": "imagenet",
            "hardware": "gpu",
            "precision": p.precision,
            "threads": 0,
            "instance_class": GPU_INSTANCE,
            "cost_per_hour": price,
            "accuracy": p.accuracy,
            "latency_ms": p.latency_ms,
            "latency_p99_ms": p.latency_p99_ms,
            "load_ms": GPU_LOAD_MS_ASSUMED,
            "memory_mb": 2048.0,
            "source": f"published, {GPU_NAME}: {p.source}",
        }
        for p in PUBLISHED
    ]


def measure_interference(work: Path) -> dict[str, Any]:
    """Latency of one model alone on a core, then with a second model on the same core."""
    a = optimize_onnx(export_onnx("efficientnet-b0", work / "a.onnx"), work / "a-opt.onnx")
    b = optimize_onnx(export_onnx("resnet50", work / "b.onnx"), work / "b-opt.onnx")
    core = min(os.sched_getaffinity(0))
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        ra = load_runtime(RuntimeSpec("onnx", "fp32", "cpu", 1), a)
        rb = load_runtime(RuntimeSpec("onnx", "fp32", "cpu", 1), b)
        x = np.zeros((1, 3, 224, 224), np.float32)
        alone = measure_latency(ra.predict, x, min_runs=30, budget_s=3.0).p50_ms
        stop = threading.Event()

        def hog() -> None:
            while not stop.is_set():
                rb.predict(x)

        thread = threading.Thread(target=hog)
        thread.start()
        try:
            shared = measure_latency(ra.predict, x, min_runs=30, budget_s=3.0).p50_ms
        finally:
            stop.set()
            thread.join()
    finally:
        os.sched_setaffinity(0, previous)
    return {
        "slowdown": round(shared / alone, 3),
        "alone_ms": round(alone, 3),
        "shared_ms": round(shared, 3),
        "how": "EfficientNet-B0 at batch 1 on one core, alone and while ResNet-50 runs "
        "continuously on the same core (1 intra-op thread each)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "sim_profiles.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="infaas-sim-measure-") as tmp:
        work = Path(tmp)
        variants = measure_digits(work) + measure_imagenet(work) + gpu_variants()
        interference = measure_interference(work)
    doc = {
        "command": "python -m bench.sim.measure",
        "machine": {"cpu": cpu_model_name(), "cores": usable_cores()},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "gpu": {"name": GPU_NAME, "instance": GPU_INSTANCE,
                "load_ms_assumed": GPU_LOAD_MS_ASSUMED},
        "interference": interference,
        "variants": variants,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    print(f"{len(variants)} variant profiles, interference slowdown "
          f"{interference['slowdown']}x -> {args.out}")  # fmt: skip


if __name__ == "__main__":
    main()

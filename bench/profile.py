"""Registration benchmark: how long generating and profiling variants takes, and what
the profiles say.

1. The demo models, registered in-process through the same code as the API
   (``ensure_demo_app``): the profile table and the registration time.
2. A ~14 MB MobileNetV2 (plain torch, random backbone, synthetic images; see
   :mod:`bench.mobilenet`) uploaded through the HTTP API of a gateway with a worker
   (``infaas register`` does the same): time from upload to every variant finished.

Baseline, measured in the same run: the profiled p50 of each fp32 variant at 1 thread
against a direct onnxruntime timing of the same artifact (ratio ~1 means the profile
says what a bare loop sees). Run it with nothing else busy on the machine; the core count
and the load average are recorded with the results.

``python -m bench.profile`` writes ``bench/results/profile.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from infaas.client import InfaasClient
from infaas.demo import DEMO_APP, ensure_demo_app
from infaas.demo_models import prepare_demo_models
from infaas.embedded import LocalStack
from infaas.services import Services, open_services
from queues.settings import BrokerSettings
from registry.settings import RegistrySettings
from registry.types import Variant
from workers.profiler import cpu_model_name, usable_cores
from workers.runtimes.base import RuntimeSpec, load_runtime

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
DEMO_CACHE = REPO / ".infaas" / "test-cache" / "demo-models"
MOBILENET_APP = "synthetic-images"
MOBILENET_BATCH_SIZES = (1, 4, 8, 16, 32)
TARGET_S = 180.0


def machine() -> dict[str, Any]:
    load1, load5, _ = os.getloadavg()
    return {
        "cpu": cpu_model_name(),
        "cores_usable": usable_cores(),
        "cores_total": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_1m_at_start": round(load1, 2),
        "load_average_5m_at_start": round(load5, 2),
    }


def variant_row(variant: Variant) -> dict[str, Any]:
    profile = variant.profile
    row: dict[str, Any] = {"variant": variant.id, "status": variant.status}
    if variant.error:
        row["error"] = variant.error
    if profile is None:
        return row
    row.update(
        accuracy=round(profile.accuracy, 4),
        metric=profile.metric,
        p50_ms={b: round(v, 4) for b, v in sorted(profile.latency_ms.items())},
        p99_ms={b: round(v, 4) for b, v in sorted(profile.latency_p99_ms.items())},
        fit_ms=f"{profile.latency_slope_ms:.4f} * b + {profile.latency_intercept_ms:.4f}",
        best_batch=profile.best_batch,
        max_batch=profile.max_batch,
        saturation_qps=round(profile.saturation_qps, 1),
        memory_mb=round(profile.memory_mb, 1),
        load_ms=round(profile.load_ms, 1),
        artifact_mb=round(profile.artifact_bytes / 1e6, 3),
        cost_per_hour=variant.cost_per_hour,
        instance_class=variant.instance_class,
    )
    return row


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n{title}")
    head = f"{'variant':44} {'status':7} {'acc.':>6} {'p50@1':>8} {'p50@8':>8} {'p50@32':>9} "
    print(head + f"{'p99@1':>8} {'best b':>6} {'sat. q/s':>9} {'MB':>7} {'load ms':>8} {'$/h':>7}")
    for row in rows:
        if "accuracy" not in row:
            print(f"{row['variant']:44} {row['status']:7}  {row.get('error', '')[:90]}")
            continue
        p50, p99 = row["p50_ms"], row["p99_ms"]
        print(
            f"{row['variant']:44} {row['status']:7} {row['accuracy']:6.3f} "
            f"{p50.get(1, float('nan')):8.3f} {p50.get(8, float('nan')):8.3f} "
            f"{p50.get(32, float('nan')):9.3f} {p99.get(1, float('nan')):8.3f} "
            f"{row['best_batch']:6d} {row['saturation_qps']:9.0f} {row['memory_mb']:7.1f} "
            f"{row['load_ms']:8.1f} {row['cost_per_hour']:7.4f}"
        )


def direct_p50_ms(services: Services, variant: Variant, batch: np.ndarray, runs: int) -> float:
    """The baseline: the same artifact timed in a bare onnxruntime loop."""
    with tempfile.TemporaryDirectory() as tmp:
        path = services.store.get_file(variant.artifact_key, Path(tmp) / "model.onnx")
        model = services.catalog.get_model(variant.model)
        app = services.catalog.get_app(variant.app)
        spec = RuntimeSpec(
            "onnx",
            "fp32",
            "cpu",
            variant.threads,
            input_name=app.signature.name,
            output_name=model.output_name,
        )
        runtime = load_runtime(spec, path)
        try:
            for _ in range(3):
                runtime.predict(batch)
            times = []
            for _ in range(runs):
                t0 = time.perf_counter_ns()
                runtime.predict(batch)
                times.append(time.perf_counter_ns() - t0)
        finally:
            runtime.close()
    return float(np.median(times)) / 1e6


def baseline(services: Services, variant: Variant, inputs: np.ndarray, runs: int) -> dict[str, Any]:
    assert variant.profile is not None
    out: dict[str, Any] = {"variant": variant.id}
    for size in (1, 32):
        if size not in variant.profile.latency_ms:
            continue
        batch = np.ascontiguousarray(np.resize(inputs, (size, *inputs.shape[1:])))
        direct = direct_p50_ms(services, variant, batch, runs)
        profiled = variant.profile.latency_ms[size]
        out[f"batch_{size}"] = {
            "profiled_p50_ms": round(profiled, 4),
            "direct_p50_ms": round(direct, 4),
            "ratio": round(profiled / direct, 3),
        }
    return out


def bench_demo(home: Path, budget_s: float) -> dict[str, Any]:
    prepare_demo_models(DEMO_CACHE)  # trained once and cached: not part of registration
    services = open_services(BrokerSettings(broker_url=None), RegistrySettings(home=home))
    try:
        started = time.perf_counter()
        demo = ensure_demo_app(
            services, say=lambda _message: None, models_dir=DEMO_CACHE, budget_s_per_batch=budget_s
        )
        elapsed = time.perf_counter() - started
        variants = services.catalog.list_variants(app_id=DEMO_APP)
        rows = [variant_row(v) for v in variants]
        print_table(f"demo app ({len(variants)} variants, registered in {elapsed:.1f} s)", rows)
        from infaas.demo_models import load_validation

        inputs, _ = load_validation(demo.validation_path)
        reference = services.catalog.get_variant("digits-cnn.onnx-fp32.cpu-t1")
        return {
            "registration_s": round(elapsed, 1),
            "budget_s_per_batch": budget_s,
            "variants": rows,
            "baseline": baseline(services, reference, inputs, runs=30),
        }
    finally:
        services.close()


def bench_mobilenet(home: Path, budget_s: float, images: int) -> dict[str, Any]:
    from bench.mobilenet import IMAGE_SIZE, INPUT_NAME, export_onnx, synthetic_task

    model, inputs, labels = synthetic_task(images=images)
    model_path = export_onnx(model, home / "mobilenet-v2.onnx")
    validation = home / "mobilenet-v2-val.npz"
    np.savez(validation, inputs=inputs, labels=labels)
    services = open_services(BrokerSettings(broker_url=None), RegistrySettings(home=home / "stack"))
    try:
        with LocalStack(services) as stack:  # its gateway on a free port
            client = InfaasClient(stack.url, timeout_s=600)
            client.create_app(
                MOBILENET_APP,
                input_name=INPUT_NAME,
                dtype="float32",
                shape=[-1, 3, IMAGE_SIZE, IMAGE_SIZE],
                num_classes=1000,
                description="synthetic noisy prototypes (bench/mobilenet.py)",
            )
            started = time.perf_counter()
            answer = client.register_model(
                MOBILENET_APP,
                model_path,
                validation,
                model_id="mobilenet-v2",
                budget_s_per_batch=budget_s,
                batch_sizes=MOBILENET_BATCH_SIZES,
            )
            uploaded = time.perf_counter() - started
            final = client.wait_for_registration(answer["registration"], timeout_s=1800)
            elapsed = time.perf_counter() - started
            client.close()
        variants = services.catalog.list_variants(model_id="mobilenet-v2")
        rows = [variant_row(v) for v in variants]
        size_mb = model_path.stat().st_size / 1e6
        print_table(
            f"MobileNetV2 ({size_mb:.1f} MB, {images} images): registered in {elapsed:.1f} s "
            f"(target {TARGET_S:.0f} s; upload and checks {uploaded:.1f} s)",
            rows,
        )
        fp32 = services.catalog.get_variant("mobilenet-v2.onnx-fp32.cpu-t1")
        return {
            "model_mb": round(size_mb, 2),
            "validation_images": images,
            "batch_sizes": list(MOBILENET_BATCH_SIZES),
            "budget_s_per_batch": budget_s,
            "registration_s": round(elapsed, 1),
            "upload_and_checks_s": round(uploaded, 1),
            "target_s": TARGET_S,
            "within_target": elapsed <= TARGET_S,
            "status": final["status"],
            "notes": {hw: task["notes"] for hw, task in final["hardware"].items()},
            "variants": rows,
            "baseline": baseline(services, fp32, inputs, runs=10),
        }
    finally:
        services.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-s", type=float, default=0.4, help="profiling time per batch")
    parser.add_argument("--images", type=int, default=32, help="MobileNetV2 validation images")
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--skip-mobilenet", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "profile.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    results: dict[str, Any] = {
        "command": "python -m bench.profile",
        "machine": machine(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with tempfile.TemporaryDirectory(prefix="infaas-bench-profile-") as tmp:
        if not args.skip_demo:
            results["demo"] = bench_demo(Path(tmp) / "demo", args.budget_s)
        if not args.skip_mobilenet:
            (Path(tmp) / "mobilenet").mkdir()
            results["mobilenet_v2"] = bench_mobilenet(
                Path(tmp) / "mobilenet", args.budget_s, args.images
            )
    load1, _, _ = os.getloadavg()
    results["machine"]["load_average_1m_at_end"] = round(load1, 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()

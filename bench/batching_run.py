"""The pipeline benchmark's batching run: 64 closed-loop clients against a memory-bound
variant, with the worker's batching off (one query per model call) and on."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from bench.loadgen import closed_loop
from bench.models import register_wide_mlp
from bench.stack import bench_stack, chosen_variant
from infaas.demo_models import load_validation

BATCHING_CLIENTS = 64
BATCHING_SLO_MS = 100.0


def run_batching(duration_s: float) -> dict[str, Any]:
    """64 clients against a memory-bound variant, with batching off (one query per model
    call, prefetch 1, and one message per query from the gateway) and on (the variant's
    best batch, the deadline-aware wait, queries packed at the edge)."""
    modes: dict[str, dict[str, float | int]] = {}
    with bench_stack() as stack:
        variant = register_wide_mlp(stack.services, stack.home, stack.demo.validation_path)
        inputs, _ = load_validation(stack.demo.validation_path)
        body = json.dumps(
            {"inputs": inputs[:1].tolist(), "latency_ms": BATCHING_SLO_MS, "min_accuracy": 0.5}
        ).encode()
        path = f"/v1/apps/{stack.services.catalog.get_variant(variant).app}/infer"
        for mode, env, gateway_env in (
            ("off", {"INFAAS_WORKER_BATCH_CAP": "1"}, {"INFAAS_EDGE_BATCH_ROWS": "1"}),
            ("on", {}, {}),
        ):
            url = stack.start_gateway(name=f"gateway-{mode}", env=gateway_env)
            gateway = stack.processes[-1]
            worker = stack.start_worker("--variants", variant, name=f"worker-{mode}", env=env)
            stack.wait_ready(workers=1)
            if chosen_variant(url, path, body) != variant:
                raise RuntimeError(f"the gateway did not choose {variant}")
            asyncio.run(closed_loop(url, path, body, concurrency=8, duration_s=1, record=False))
            result = asyncio.run(
                closed_loop(url, path, body, concurrency=BATCHING_CLIENTS, duration_s=duration_s)
            )
            modes[mode] = result.summary()
            if result.error_samples:
                print(f"batching {mode}: errors such as {result.error_samples[:2]}")
            stack.stop_process(worker)
            stack.stop_process(gateway)
            _wait_gone(stack)
    on, off = modes["on"], modes["off"]
    ratio = float(on["throughput_qps"]) / max(float(off["throughput_qps"]), 1e-9)
    return {
        "variant": variant,
        "clients": BATCHING_CLIENTS,
        "slo_ms": BATCHING_SLO_MS,
        "off": off,
        "on": on,
        "throughput_ratio": round(ratio, 2),
        "target_ratio": 1.5,
        "met": ratio >= 1.5 and float(on["p99_ms"]) <= BATCHING_SLO_MS and on["errors"] == 0,
    }


def _wait_gone(stack: Any, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while stack.services.live.snapshot().workers and time.monotonic() < deadline:
        time.sleep(0.2)


def report_batching(batching: dict[str, Any]) -> None:
    print(
        f"batching, {batching['clients']} clients, variant {batching['variant']}, "
        f"objective {batching['slo_ms']:g} ms"
    )
    for mode in ("off", "on"):
        m = batching[mode]
        print(
            f"  batching {mode:3}: {m['throughput_qps']:8.0f} q/s  p50 {m['p50_ms']:7.2f} ms"
            f"  p99 {m['p99_ms']:7.2f} ms  errors {m['errors']}"
        )
    print(
        f"  throughput ratio on/off {batching['throughput_ratio']} (target >= 1.5, "
        f"p99 within the objective): met={batching['met']}"
    )

"""Pipeline benchmark: a batch-1 model-less query through gateway, RabbitMQ and worker,
against calling the same onnxruntime session directly, in one run.

    python -m bench.pipeline [--variant V] [--requests 3000] [--duration-s 8]

A second run compares batching on and off at 64 clients on a memory-bound variant.

Gateway and worker run as separate processes (``infaas gateway``, ``infaas worker``) on
the local RabbitMQ and Redis; the load generator is this process. Prints p50/p99 latency
and throughput at 1 and 16 concurrent clients, the latency the pipeline adds, and writes
``bench/results/pipeline.json``. The same query then goes through the Open Inference
Protocol's routes (v2 REST JSON, v2 REST binary, gRPC; bench/oip.py), interleaved with
``/v1`` in ``--oip-rounds`` short rounds, each reported with its throughput's ratio to
``/v1``'s.

Then both ``/v1`` routes, pinned (``/v1/variants/{variant}/infer``) and model-less
(``/v1/apps/{app}/infer``, needs that select the same variant), at ``--clients`` (1, 8,
32) in a closed loop, interleaved in ``--cell-rounds`` rounds (medians), each cell with
CPU milliseconds per answered query of the gateway, worker, broker and Redis process
trees and their resident memory (bench/procstat.py), the model-less/pinned throughput
ratio per client count; and an open-loop capacity ramp (Poisson arrivals at
``--open-rates``; bench/loadgen.py) per route, unless ``--skip-open-loop``. Beside them,
in the same cells and ramps (bench/cells.py): the model-less route on a second gateway
that sends one message per query (``INFAAS_EDGE_BATCH_ROWS=1``), the model-less route
on a third gateway that answers every request through FastAPI
(``INFAAS_QUERY_FAST_PATH=false``, api_gateway/fast_queries.py), and NVIDIA Triton
(PyTriton 0.7, tritonserver 2.51) serving the same ONNX file with dynamic batching (32
rows, 2 ms), its answer checked against onnxruntime's (bench/triton_peer.py; its venv is
built once in the test cache), unless ``--skip-triton``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import threading
import time
from pathlib import Path
from subprocess import Popen
from typing import Any

import numpy as np

from bench import oip, procstat
from bench.batching_run import report_batching, run_batching
from bench.cells import Route, cpu_per_query, report_cells, rss_mb, run_cells
from bench.loadgen import DEFAULT_RATES, LoadResult, capacity_ramp, closed_loop
from bench.oip import OIP_TARGET_RATIO, report_oip, run_oip
from bench.stack import bench_stack, chosen_variant
from bench.triton_peer import triton_server
from infaas.demo_models import load_validation
from tests.services import free_port
from workers.runtimes.base import RuntimeSpec, load_runtime

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = {"added_p50_ms": 3.0, "added_p99_ms": 10.0, "throughput_16_qps": 600.0}
CLIENTS = (1, 8, 32)


def direct_baseline(
    predict: Any, sample: np.ndarray, *, requests: int, duration_s: float
) -> dict[str, dict[str, float | int]]:
    """The same session called in-process: sequential, then 16 threads in a closed loop."""
    for _ in range(200):
        predict(sample)
    latencies = []
    for _ in range(requests):
        started = time.perf_counter()
        predict(sample)
        latencies.append((time.perf_counter() - started) * 1000)
    one = LoadResult(1, sum(latencies) / 1000, latencies, {200: len(latencies)})
    counts = [0] * 16
    stop = time.perf_counter() + duration_s

    def loop(i: int) -> None:
        while time.perf_counter() < stop:
            predict(sample)
            counts[i] += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(16)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return {
        "1": one.summary(),
        "16": {
            "concurrency": 16,
            "requests": sum(counts),
            "throughput_qps": round(sum(counts) / wall, 1),
        },
    }


def run(
    variant: str,
    requests: int,
    duration_s: float,
    oip_rounds: int = 5,
    *,
    clients: tuple[int, ...] = CLIENTS,
    cell_rounds: int = 3,
    open_rates: tuple[float, ...] | None = DEFAULT_RATES,
    open_step_s: float = 3.0,
    triton: bool = True,
) -> dict[str, Any]:
    """``open_rates`` None skips the open-loop ramps; ``triton`` False leaves Triton out."""
    with bench_stack() as stack, contextlib.ExitStack() as peers:
        inputs, _ = load_validation(stack.demo.validation_path)
        sample = inputs[:1]
        record = stack.services.catalog.get_variant(variant)
        assert record.profile is not None
        stack.start_gateway()
        gateway = stack.processes[-1]
        unpacked_url, unpacked = _gateway(
            stack, "gateway-unpacked", {"INFAAS_EDGE_BATCH_ROWS": "1"}
        )
        fastapi_url, fastapi_gw = _gateway(
            stack, "gateway-fastapi", {"INFAAS_QUERY_FAST_PATH": "false"}
        )
        worker = stack.start_worker("--variants", variant)
        stack.wait_ready(workers=1)

        model = stack.services.catalog.get_model(record.model)
        artifact = stack.services.store.get_file(record.artifact_key, stack.home / "direct.onnx")
        runtime = load_runtime(
            RuntimeSpec("onnx", "fp32", "cpu", record.threads, output_name=model.output_name),
            artifact,
        )
        direct = direct_baseline(
            runtime.predict, sample, requests=requests, duration_s=duration_s / 2
        )
        expected = runtime.predict(sample)
        runtime.close()

        body = json.dumps(
            {
                "inputs": sample.tolist(),
                "latency_ms": 50,
                "min_accuracy": round(record.profile.accuracy - 0.001, 4),
            }
        ).encode()
        path = f"/v1/apps/{record.app}/infer"
        url = stack.gateway_url
        check = asyncio.run(closed_loop(url, path, body, concurrency=1, requests=1))
        if check.ok != 1:
            raise RuntimeError(f"the gateway refused the benchmark query: {check.statuses}")
        asyncio.run(closed_loop(url, path, body, concurrency=4, requests=2000, record=False))
        one = asyncio.run(closed_loop(url, path, body, concurrency=1, requests=requests))
        sixteen = asyncio.run(closed_loop(url, path, body, concurrency=16, duration_s=duration_s))
        chosen = chosen_variant(url, path, body)
        if chosen != variant:
            raise RuntimeError(f"the gateway chose {chosen}, the benchmark measures {variant}")
        pinned_body = json.dumps({"inputs": sample.tolist()}).encode()
        ours = _watch(gateway, worker)
        routes_v1 = {
            "pinned": Route(url, f"/v1/variants/{variant}/infer", pinned_body, ours),
            "modelless": Route(url, path, body, ours),
            "modelless-unpacked": Route(unpacked_url, path, body, _watch(unpacked, worker)),
            "modelless-fastapi": Route(fastapi_url, path, body, _watch(fastapi_gw, worker)),
        }
        for name, r in routes_v1.items():
            chosen = chosen_variant(r.url, r.path, r.body)
            if chosen != variant:
                raise RuntimeError(f"{name}: the gateway chose {chosen}, not {variant}")
        if triton:
            routes_v1["triton"] = _triton_route(
                peers, artifact, model.output_name, sample, expected
            )
        cells = run_cells(routes_v1, clients, cell_rounds, duration_s)
        open_figures = None
        if open_rates:
            open_figures = {
                name: asyncio.run(
                    capacity_ramp(
                        r.url,
                        r.path,
                        r.body,
                        rates=open_rates,
                        step_s=open_step_s,
                        measure=r.watch.begin,
                    )
                )
                for name, r in routes_v1.items()
                if name != "pinned"
            }
        needs = {"latency_ms": 50.0, "min_accuracy": round(record.profile.accuracy - 0.001, 4)}
        input_name = stack.services.catalog.get_app(record.app).signature.name
        routes = run_oip(
            stack,
            record.app,
            variant,
            sample,
            (path, body),
            (input_name, needs),
            requests,
            duration_s,
            oip_rounds,
            watch=ours,
        )

    added_p50 = one.percentile_ms(50) - float(direct["1"]["p50_ms"])
    added_p99 = one.percentile_ms(99) - float(direct["1"]["p99_ms"])
    return {
        "benchmark": "pipeline",
        "command": f"python -m bench.pipeline --variant {variant} --requests {requests} "
        f"--duration-s {duration_s:g} --oip-rounds {oip_rounds} "
        f"--clients {','.join(map(str, clients))} --cell-rounds {cell_rounds} "
        + (
            f"--open-rates {','.join(f'{r:g}' for r in open_rates)} --open-step-s {open_step_s:g}"
            if open_rates
            else "--skip-open-loop"
        )
        + ("" if triton else " --skip-triton"),
        "machine": {
            "cores": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
        },
        "variant": variant,
        "direct": direct,
        "gateway": {"1": one.summary(), "16": sixteen.summary()},
        "added_latency_ms": {"p50": round(added_p50, 3), "p99": round(added_p99, 3)},
        "overhead_ratio_p50": round(one.percentile_ms(50) / float(direct["1"]["p50_ms"]), 1),
        "oip": {
            "routes": routes,
            "throughput_ratio_to_v1": oip.ratios(routes),
            "target_ratio": OIP_TARGET_RATIO,
            "rounds": oip_rounds,
        },
        "cells": cells,
        "cpu_per_query": cpu_per_query(cells),
        "rss_mb": rss_mb(cells),
        "open_loop": open_loop_figures(open_figures, open_step_s),
        "targets": TARGETS,
        "met": {
            "added_p50_ms": added_p50 <= TARGETS["added_p50_ms"],
            "added_p99_ms": added_p99 <= TARGETS["added_p99_ms"],
            "throughput_16_qps": sixteen.throughput_qps >= TARGETS["throughput_16_qps"]
            and sixteen.errors == 0,
        },
    }


def _gateway(stack: Any, name: str, env: dict[str, str]) -> tuple[str, Popen[bytes]]:
    """A further gateway on the same stack, with its own settings."""
    port, grpc_port = free_port(), free_port()
    proc = stack.spawn(
        "gateway", "--port", str(port), "--grpc-port", str(grpc_port), name=name, env=env
    )
    return f"http://127.0.0.1:{port}", proc


def _alive(proc: Popen[bytes]) -> procstat.Roots:
    return lambda: [proc.pid] if proc.poll() is None else []


def _watch(gateway: Popen[bytes], worker: Popen[bytes]) -> procstat.ProcWatch:
    return procstat.ProcWatch(
        {
            "gateway": _alive(gateway),
            "worker": _alive(worker),
            "broker": procstat.broker_pids,
            "redis": procstat.redis_pids,
        }
    )


def _triton_route(
    peers: contextlib.ExitStack,
    onnx_path: Path,
    output_name: str,
    sample: np.ndarray,
    expected: np.ndarray,
) -> Route:
    """NVIDIA Triton serving the same ONNX file with dynamic batching (32 rows, 2 ms),
    its answer checked against onnxruntime's own."""
    import httpx
    import onnxruntime as ort

    input_name = ort.InferenceSession(str(onnx_path)).get_inputs()[0].name
    peer = peers.enter_context(triton_server(onnx_path, input_name, output_name=output_name))
    answer = httpx.post(peer.url + peer.infer_path, content=peer.body(sample), timeout=30)
    answer.raise_for_status()
    got = np.asarray(answer.json()["outputs"][0]["data"], dtype=np.float32)
    if not np.allclose(got, np.asarray(expected, dtype=np.float32).ravel(), atol=1e-5):
        raise RuntimeError(f"Triton answered {got[:5]}..., onnxruntime {expected.ravel()[:5]}...")
    watch = procstat.ProcWatch(
        {"triton": lambda: peer.pids, "broker": procstat.broker_pids, "redis": procstat.redis_pids}
    )
    return Route(peer.url, peer.infer_path, peer.body(sample), watch)


def open_loop_figures(ramps: dict[str, Any] | None, step_s: float) -> dict[str, Any] | None:
    if ramps is None:
        return None
    return {
        "routes": ramps,
        "capacity_qps": {name: ramp["capacity_qps"] for name, ramp in ramps.items()},
        "step_s": step_s,
        "note": "Poisson arrivals, latency from the scheduled send time; capacity: the "
        "highest rate with p99 <= the limit and no error",
    }


def report(result: dict[str, Any]) -> None:
    d1, d16 = result["direct"]["1"], result["direct"]["16"]
    g1, g16 = result["gateway"]["1"], result["gateway"]["16"]
    print(f"variant {result['variant']}, batch-1 model-less queries")
    print(f"{'path':28} {'clients':>7} {'p50 ms':>8} {'p99 ms':>8} {'q/s':>9} {'errors':>6}")
    print(
        f"{'onnxruntime, in-process':28} {1:7} {d1['p50_ms']:8.3f} {d1['p99_ms']:8.3f} "
        f"{d1['throughput_qps']:9.0f} {0:6}"
    )
    print(
        f"{'onnxruntime, in-process':28} {16:7} {'':>8} {'':>8} {d16['throughput_qps']:9.0f} {0:6}"
    )
    print(
        f"{'gateway + RabbitMQ + worker':28} {1:7} {g1['p50_ms']:8.3f} {g1['p99_ms']:8.3f} "
        f"{g1['throughput_qps']:9.0f} {g1['errors']:6}"
    )
    print(
        f"{'gateway + RabbitMQ + worker':28} {16:7} {g16['p50_ms']:8.3f} {g16['p99_ms']:8.3f} "
        f"{g16['throughput_qps']:9.0f} {g16['errors']:6}"
    )
    added = result["added_latency_ms"]
    print(
        f"added latency at 1 client: p50 {added['p50']:.3f} ms (target <= 3), "
        f"p99 {added['p99']:.3f} ms (target <= 10); p50 overhead ratio "
        f"{result['overhead_ratio_p50']}x the direct call"
    )
    print(f"16 clients: {g16['throughput_qps']:.0f} q/s (target >= 600, no errors)")
    print("targets met:", result["met"])
    report_oip(result["oip"])
    if result.get("cells"):
        report_cells(result)
    if result.get("open_loop"):
        report_open_loop(result["open_loop"])


def _ms(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) and not math.isnan(value) else "-"


def report_open_loop(figures: dict[str, Any]) -> None:
    print(f"open loop: {figures['note']}; {figures['step_s']:g} s per rate")
    print(
        f"{'route':10} {'rate':>6} {'q/s':>7} {'p50 ms':>7} {'p99 ms':>8} {'errors':>6} "
        f"{'conns':>5} {'lag p99':>7} {'client':>7} {'gw+wk':>7} {'passed':>6}"
    )
    for name, ramp in figures["routes"].items():
        for step in ramp["steps"]:
            gw_wk = step.get("procs", {}).get("gateway+worker", {}).get("cpu_ms_per_query")
            print(
                f"{name:10} {step['rate_qps']:6.0f} {step['throughput_qps']:7.0f} "
                f"{step['p50_ms']:7.2f} {step['p99_ms']:8.2f} {step['errors']:6} "
                f"{step['connections']:5} {_ms(step.get('send_lag_p99_ms')):>7} "
                f"{_ms(step['client_cpu_ms_per_query']):>7} {_ms(gw_wk):>7} "
                f"{step['passed']!s:>6}"
            )
        stopped = ramp["stopped_at_qps"]
        print(
            f"{name}: capacity {ramp['capacity_qps']:g} q/s (p99 <= {ramp['p99_limit_ms']:g} ms, "
            f"no errors)" + (f", stopped at {stopped:g} q/s" if stopped is not None else "")
        )
    print("client, gw+wk: CPU ms per answered query of the load generator, gateway + worker")


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variant", default="digits-mlp-small.onnx-fp32.cpu-t1")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--duration-s", type=float, default=8.0)
    parser.add_argument("--oip-rounds", type=int, default=5)
    parser.add_argument("--skip-batching", action="store_true")
    parser.add_argument(
        "--clients", type=_ints, default=CLIENTS, help="closed-loop client counts, e.g. 1,8,32"
    )
    parser.add_argument("--cell-rounds", type=int, default=3)
    parser.add_argument(
        "--open-rates",
        type=_floats,
        default=DEFAULT_RATES,
        help="open-loop ramp rates in q/s, ascending, e.g. 250,500,1000",
    )
    parser.add_argument("--open-step-s", type=float, default=3.0)
    parser.add_argument("--skip-open-loop", action="store_true")
    parser.add_argument("--skip-triton", action="store_true", help="leave NVIDIA Triton out")
    parser.add_argument("--out", type=Path, default=RESULTS / "pipeline.json")
    args = parser.parse_args()
    result = run(
        args.variant,
        args.requests,
        args.duration_s,
        args.oip_rounds,
        clients=args.clients,
        cell_rounds=args.cell_rounds,
        open_rates=None if args.skip_open_loop else args.open_rates,
        open_step_s=args.open_step_s,
        triton=not args.skip_triton,
    )
    report(result)
    if args.skip_batching:
        result["command"] += " --skip-batching"
    if str(args.out) != str(RESULTS / "pipeline.json"):
        result["command"] += f" --out {args.out}"
    if not args.skip_batching:
        result["batching"] = run_batching(args.duration_s)
        report_batching(result["batching"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

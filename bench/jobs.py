"""Online queries while a batch job runs: do they keep their latency objective?

    python -m bench.jobs [--clients 8] [--rate-qps 400] [--duration-s 15] [--items 20000]
                         [--slo-ms 50] [--chunk-items 100]

Gateway and one worker run as separate processes on the local RabbitMQ and Redis (the
load generator is this process). Online queries arrive at a steady rate the worker has
room for (8 clients, 400 queries/s, a 50 ms objective; a saturating closed loop would
leave no spare capacity, and the job would rightly wait). They name their variant, so
that what is measured is the serving path the job shares, not the selector's reaction to
variant states. The same run measures them ``without`` a job, then ``with`` a
20,000-item job on the same worker (its chunks on a thread at the lowest OS priority,
pausing while online variants are pressed), and, for contrast, ``with_normal_priority``:
the job's chunks at normal priority, never pausing (``INFAAS_JOB_LOW_PRIORITY=false``,
``INFAAS_JOB_YIELD_TO_ONLINE=false``). Prints p50/p99, SLO misses, the job's progress
and the p99 ratio with/without, and writes ``bench/results/jobs.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np

from bench import procstat
from bench.loadgen import LoadResult, build_request, read_response
from bench.stack import BenchStack, bench_stack
from infaas.demo_models import load_validation

RESULTS = Path(__file__).resolve().parent / "results"
ONLINE_VARIANT = "digits-mlp-small.onnx-fp32.cpu-t1"
JOB_FLOOR = 0.99  # the CNN variants: milliseconds per item, so the job spans the window
TARGET_P99_RATIO = 1.5


def _put_inputs(stack: BenchStack, items: int, bucket: str) -> str:
    inputs, _ = load_validation(stack.demo.validation_path)
    rows = np.resize(inputs.astype(np.float32), (items, inputs.shape[1]))
    buffer = io.BytesIO()
    np.savez(buffer, inputs=rows)
    stack.services.store.bucket(bucket).put_bytes("bench/inputs.npz", buffer.getvalue())
    return f"s3://{bucket}/bench"


def _submit(url: str, source: str, out: str, chunk_items: int) -> dict[str, Any]:
    body = {
        "app": "digits",
        "input": source,
        "output": out,
        "min_accuracy": JOB_FLOOR,
        "chunk_items": chunk_items,
    }
    response = httpx.post(f"{url}/v1/jobs", json=body, timeout=120)
    if response.status_code != 202:
        raise RuntimeError(f"the job was refused: {response.text}")
    answer: dict[str, Any] = response.json()
    return answer


def _job(url: str, job_id: str) -> dict[str, Any]:
    status: dict[str, Any] = httpx.get(f"{url}/v1/jobs/{job_id}", timeout=30).json()
    return status


def _wait_running(url: str, job_id: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while _job(url, job_id)["progress"]["chunks_done"] < 1:
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id} did not start; see the worker's log")
        time.sleep(0.1)


async def _paced_client(
    url: str, request: bytes, rate_qps: float, stop_at: float, result: LoadResult
) -> None:
    """One client sending at a steady rate (waiting for each answer first): online
    traffic the system has room for, unlike a closed loop that saturates it."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    interval_s = 1.0 / rate_qps
    next_at = time.perf_counter()
    try:
        while next_at < stop_at:
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            started = time.perf_counter()
            writer.write(request)
            status, answer = await read_response(reader)
            result.latencies_ms.append((time.perf_counter() - started) * 1000)
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if status != 200 and len(result.error_samples) < 5:
                result.error_samples.append(f"{status} {answer[:300]!r}")
            next_at = max(next_at + interval_s, time.perf_counter())
    finally:
        writer.close()


async def _paced(
    url: str, path: str, body: bytes, clients: int, rate_qps: float, duration_s: float
) -> LoadResult:
    request = build_request(url, path, body)
    result = LoadResult(concurrency=clients, wall_s=0.0)
    started = time.perf_counter()
    stop_at = started + duration_s
    await asyncio.gather(
        *(_paced_client(url, request, rate_qps / clients, stop_at, result) for _ in range(clients))
    )
    result.wall_s = time.perf_counter() - started
    return result


def _measure(
    url: str, path: str, body: bytes, args: argparse.Namespace, watch: procstat.ProcWatch
) -> tuple[LoadResult, dict[str, dict[str, float]]]:
    """The online load, after a second of warm-up, with the CPU per answered online
    query and the memory of each process group over it."""
    asyncio.run(_paced(url, path, body, args.clients, args.rate_qps, 1.0))
    finish = watch.begin()
    result = asyncio.run(_paced(url, path, body, args.clients, args.rate_qps, args.duration_s))
    return result, finish(result.ok)


def _phase(
    measured: tuple[LoadResult, dict[str, dict[str, float]]], slo_ms: float
) -> dict[str, Any]:
    result, procs = measured
    summary: dict[str, Any] = dict(result.summary())
    summary["procs"] = procs
    misses = sum(1 for ms in result.latencies_ms if ms > slo_ms)
    summary["slo_misses"] = misses
    summary["slo_miss_rate"] = round(misses / max(len(result.latencies_ms), 1), 5)
    summary["error_samples"] = result.error_samples
    return summary


def _with_job(
    url: str,
    query: tuple[str, bytes],
    args: argparse.Namespace,
    source: str,
    label: str,
    watch: procstat.ProcWatch,
) -> dict[str, Any]:
    """Submit the job, measure the online queries while it runs, then cancel what is left."""
    answer = _submit(url, source, f"s3://bench-jobs-out/{label}", args.chunk_items)
    job_id = answer["job_id"]
    _wait_running(url, job_id)
    before = _job(url, job_id)["progress"]["items_done"]
    started = time.perf_counter()
    measured = _measure(url, query[0], query[1], args, watch)
    elapsed = time.perf_counter() - started
    after = _job(url, job_id)
    httpx.post(f"{url}/v1/jobs/{job_id}/cancel", timeout=30)
    phase = _phase(measured, args.slo_ms)
    phase["job"] = {
        "job_id": job_id,
        "variant": answer["variant"],
        "items_total": answer["items_total"],
        "items_done_during_phase": after["progress"]["items_done"] - before,
        "items_per_s": round((after["progress"]["items_done"] - before) / elapsed, 1),
        "ran_through_the_phase": after["status"] == "running",
    }
    return phase


def _show_logs(stack: BenchStack) -> None:
    for log in sorted(stack.home.glob("*.log")):
        print(f"--- {log.name} (last lines)")
        print("\n".join(log.read_text(errors="replace").splitlines()[-25:]))


def run(args: argparse.Namespace) -> dict[str, Any]:
    with bench_stack() as stack:
        try:
            return _run(stack, args)
        except Exception:
            _show_logs(stack)
            raise


def _run(stack: BenchStack, args: argparse.Namespace) -> dict[str, Any]:
    url = stack.start_gateway()
    gateway = stack.processes[-1]
    worker = stack.start_worker("--variants", ONLINE_VARIANT, name="worker")
    watch = procstat.ProcWatch(
        {
            "gateway": lambda: [gateway.pid],
            "worker": lambda: [p.pid for p in stack.processes if p is not gateway],
            "broker": procstat.broker_pids,
            "redis": procstat.redis_pids,
        }
    )
    stack.wait_ready(workers=1)
    inputs, _ = load_validation(stack.demo.validation_path)
    body = json.dumps({"inputs": inputs[:1].tolist()}).encode()
    path = f"/v1/variants/{ONLINE_VARIANT}/infer"
    answer = httpx.post(
        url + path, content=body, headers={"content-type": "application/json"}, timeout=30
    )
    if answer.status_code != 200:
        raise RuntimeError(f"the online query failed: {answer.text}")
    source = _put_inputs(stack, args.items, "bench-jobs-in")

    without = _phase(_measure(url, path, body, args, watch), args.slo_ms)
    print("without a job:", without, flush=True)
    with_job = _with_job(url, (path, body), args, source, "low", watch)
    print("with a job:", with_job, flush=True)
    stack.stop_process(worker)
    stack.start_worker(
        "--variants",
        ONLINE_VARIANT,
        name="worker-normal",
        env={"INFAAS_JOB_LOW_PRIORITY": "false", "INFAAS_JOB_YIELD_TO_ONLINE": "false"},
    )
    time.sleep(6.0)  # the stopped worker's live-state entry expires
    stack.wait_ready(workers=1)
    normal = _with_job(url, (path, body), args, source, "normal", watch)

    ratio = float(with_job["p99_ms"]) / max(float(without["p99_ms"]), 1e-9)
    normal_ratio = float(normal["p99_ms"]) / max(float(without["p99_ms"]), 1e-9)
    return {
        "benchmark": "jobs",
        "command": f"python -m bench.jobs --clients {args.clients} --rate-qps {args.rate_qps:g} "
        f"--duration-s "
        f"{args.duration_s:g} --items {args.items} --slo-ms {args.slo_ms:g} "
        f"--chunk-items {args.chunk_items}",
        "machine": {"cores": os.cpu_count(), "processor": platform.processor() or "unknown"},
        "online": {
            "variant": ONLINE_VARIANT,
            "clients": args.clients,
            "rate_qps": args.rate_qps,
            "latency_ms_objective": args.slo_ms,
        },
        "job": {"items": args.items, "min_accuracy": JOB_FLOOR, "chunk_items": args.chunk_items},
        "without": without,
        "with": with_job,
        "with_normal_priority": normal,
        "p99_ratio_with_over_without": round(ratio, 3),
        "p99_ratio_normal_priority_over_without": round(normal_ratio, 3),
        "target_p99_ratio": TARGET_P99_RATIO,
        "met": ratio <= TARGET_P99_RATIO
        and float(with_job["p99_ms"]) <= args.slo_ms
        and with_job["errors"] == 0
        and with_job["job"]["ran_through_the_phase"],
    }


def report(result: dict[str, Any]) -> None:
    online = result["online"]
    print(
        f"online: {online['rate_qps']:g} queries/s from {online['clients']} clients, "
        f"{online['variant']}, objective "
        f"{online['latency_ms_objective']:g} ms; job: {result['job']['items']} items"
    )
    print(
        f"{'phase':24} {'p50 ms':>8} {'p99 ms':>8} {'q/s':>8} {'SLO miss':>9} {'job items/s':>12}"
    )
    for name in ("without", "with", "with_normal_priority"):
        phase = result[name]
        rate = f"{phase['job']['items_per_s']:.0f}" if "job" in phase else "-"
        print(
            f"{name:24} {phase['p50_ms']:8.2f} {phase['p99_ms']:8.2f} "
            f"{phase['throughput_qps']:8.0f} {phase['slo_miss_rate']:9.2%} {rate:>8}"
        )
    print(
        "CPU ms per online query (the job's work counted in the phases with a job) and MB "
        "of memory under load:"
    )
    for name in ("without", "with", "with_normal_priority"):
        procs = result[name]["procs"]
        print(
            f"  {name:22} "
            + "  ".join(
                f"{group} {procs[group]['cpu_ms_per_query']:.3f} ms, "
                f"{procs[group].get('rss_mb_load', 0):.0f} MB"
                for group in ("gateway", "worker", "broker")
            )
        )
    print(
        f"p99 with/without a job: {result['p99_ratio_with_over_without']}x (target <= "
        f"{result['target_p99_ratio']}); at normal priority: "
        f"{result['p99_ratio_normal_priority_over_without']}x; met={result['met']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument(
        "--rate-qps", type=float, default=400.0, help="online queries/s, all clients"
    )
    parser.add_argument("--duration-s", type=float, default=15.0)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--chunk-items", type=int, default=100)
    parser.add_argument("--slo-ms", type=float, default=50.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "jobs.json")
    args = parser.parse_args()
    result = run(args)
    report(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

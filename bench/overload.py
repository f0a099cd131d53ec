"""How fast a variant pushed past its saturation turns Overloaded in live state, and how
fast it returns to Active once the pressure ends.

    python -m bench.overload [--trials 3] [--clients 16] [--timeout-s 30]

Gateway and one worker serving one variant run as separate processes on the local
RabbitMQ and Redis; this process floods the variant through the gateway from
``--clients`` closed-loop threads and polls live state every 50 ms. Each trial starts
from an idle, Active variant. The baseline is the worker monitor's report interval (1 s):
no detection can come sooner than one report, so the figure is also given in reports.
The target is Overloaded within 3 s of the flood's start (median of the trials). Writes
``bench/results/overload.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench import procstat
from bench.stack import BenchStack, bench_stack
from infaas.demo_models import load_validation
from registry.livestate import ACTIVE, OVERLOADED

VARIANT = "digits-cnn.onnx-fp32.cpu-t1"
REPORT_INTERVAL_S = 1.0  # workers.monitor's default
TARGET_DETECT_S = 3.0
POLL_S = 0.05
RESULTS = Path(__file__).resolve().parent / "results" / "overload.json"


def _state(stack: BenchStack) -> str | None:
    placed = stack.services.live.snapshot().placements(VARIANT)  # one worker serves it
    return placed[0].load.state if placed else None


def _wait_for(stack: BenchStack, state: str, timeout_s: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if _state(stack) == state:
            return time.monotonic() - started
        time.sleep(POLL_S)
    return None


def _trial(
    stack: BenchStack,
    url: str,
    body: bytes,
    args: argparse.Namespace,
    watch: procstat.ProcWatch,
) -> dict[str, Any]:
    if _wait_for(stack, ACTIVE, args.timeout_s) is None:
        raise RuntimeError(f"{VARIANT} never became Active before the flood")
    stop = threading.Event()
    sent = [0] * args.clients

    def flood(index: int) -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                client.post(
                    f"{url}/v1/variants/{VARIANT}/infer",
                    content=body,
                    headers={"content-type": "application/json"},
                )
                sent[index] += 1

    threads = [threading.Thread(target=flood, args=(i,)) for i in range(args.clients)]
    finish = watch.begin()
    started = time.monotonic()
    for thread in threads:
        thread.start()
    try:
        detect_s = _wait_for(stack, OVERLOADED, args.timeout_s)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    flood_s = time.monotonic() - started
    procs = finish(sum(sent))  # CPU per flood query (this process's threads are the client)
    recover_s = _wait_for(stack, ACTIVE, args.timeout_s)
    return {
        "overloaded_after_s": None if detect_s is None else round(detect_s, 3),
        "active_again_after_s": None if recover_s is None else round(recover_s, 3),
        "flood_qps": round(sum(sent) / flood_s, 1),
        "procs": procs,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    with bench_stack() as stack:
        url = stack.start_gateway()
        gateway = stack.processes[-1]
        worker = stack.start_worker("--variants", VARIANT, name="worker")
        stack.wait_ready(workers=1)
        watch = procstat.ProcWatch(
            {
                "gateway": lambda: [gateway.pid],
                "worker": lambda: [worker.pid],
                "broker": procstat.broker_pids,
                "redis": procstat.redis_pids,
            }
        )
        inputs, _ = load_validation(stack.demo.validation_path)
        body = json.dumps({"inputs": inputs[:1].tolist()}).encode()
        trials = []
        for index in range(args.trials):
            trial = _trial(stack, url, body, args, watch)
            procs = trial["procs"]
            print(
                f"trial {index + 1}: Overloaded after {trial['overloaded_after_s']} s, Active "
                f"again after {trial['active_again_after_s']} s, {trial['flood_qps']} q/s; "
                "CPU ms per flood query and MB under load: "
                + ", ".join(
                    f"{g} {procs[g]['cpu_ms_per_query']:.3f} ms {procs[g]['rss_mb_load']:.0f} MB"
                    for g in ("gateway", "worker", "broker")
                ),
                flush=True,
            )
            trials.append(trial)
    detected = [t["overloaded_after_s"] for t in trials if t["overloaded_after_s"] is not None]
    median_s = statistics.median(detected) if detected else None
    return {
        "benchmark": "overload",
        "command": f"python -m bench.overload --trials {args.trials} --clients {args.clients} "
        f"--timeout-s {args.timeout_s:g}",
        "machine": {"cores": os.cpu_count(), "processor": platform.processor() or "unknown"},
        "variant": VARIANT,
        "trials": trials,
        "median_overloaded_after_s": median_s,
        "median_overloaded_after_reports": None
        if median_s is None
        else round(median_s / REPORT_INTERVAL_S, 2),
        "target_overloaded_after_s": TARGET_DETECT_S,
        "met": median_s is not None
        and median_s <= TARGET_DETECT_S
        and len(detected) == len(trials),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.overload", description=__doc__)
    parser.add_argument("--trials", type=int, default=3, help="floods to measure (default 3)")
    parser.add_argument("--clients", type=int, default=16, help="flooding threads (default 16)")
    parser.add_argument(
        "--timeout-s", type=float, default=30.0, help="longest wait for a state (default 30)"
    )
    args = parser.parse_args(argv)
    if args.trials < 1 or args.clients < 1 or args.timeout_s <= 0:
        parser.error("--trials and --clients must be at least 1 and --timeout-s above 0")
    result = run(args)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "trials"}, indent=2))
    return 0 if result["met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

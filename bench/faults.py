"""Faults survived, in figures: one fault at a time under open-loop model-less load and a
batch job, and what became of every query and every job item.

    python -m bench.faults [--faults a,b,...] [--rate-qps 200] [--slo-ms 100]
                           [--job-items 20000] [--outage-s 30] [--partition-s 20]
                           [--out bench/results/faults.json]

The system runs as separate processes (``infaas gateway``, two ``infaas worker`` and
``infaas scaler``) on services of the bench's own, so that it can stop them: a RabbitMQ
node, a Redis server and a PostgreSQL cluster on free loopback ports, and a moto S3
server in this process (bench/fault_services.py, bench/faults_stack.py). One small model
is registered (the demo's logistic regression, profiled briefly). For each fault the
bench sends ``--rate-qps`` model-less queries a second (bench/fault_load.py), submits a
job of ``--job-items`` items, injects the fault (bench/fault_inject.py), goes on sending
for ``--after-s`` seconds after its end, waits for the job and puts the stack back.

Per fault: queries sent, answered correctly, refused (by error code), lost (no answer by
the client's deadline + 5 s), seconds from the fault's end to the first good answer to a
query sent after it, and job items written once, twice or missing. docs/faults.md says
what each fault does and reads the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from bench.fault_inject import FAULTS, Options, partitioned_worker, restore
from bench.fault_load import LoadProcess, query_figures
from bench.faults_stack import (
    DEADLINE_MS,
    MIN_ACCURACY,
    FaultStack,
    fault_stack,
    references,
    submit_job,
    upload_job_input,
    wait_job,
)
from infaas.demo import DEMO_APP
from infaas.demo_models import load_validation
from tests import netns

RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results" / "faults.json"
WARM_S = 3.0  # load before the job and the fault


def run_fault(
    stack: FaultStack,
    name: str,
    args: argparse.Namespace,
    inputs: np.ndarray,
    refs: dict[str, np.ndarray],
    job_source: str,
) -> dict[str, Any]:
    load = LoadProcess(
        url=stack.url,
        app=DEMO_APP,
        inputs=inputs,
        rate_qps=args.rate_qps,
        slo_ms=args.slo_ms,
        deadline_ms=args.deadline_ms,
        min_accuracy=MIN_ACCURACY,
    ).start()
    try:
        time.sleep(WARM_S)
        job_id = submit_job(stack, job_source)
        started = time.monotonic()
        injected = FAULTS[name](stack, Options(args.outage_s, args.partition_s))
        time.sleep(max(0.0, injected.end + args.after_s - time.monotonic()))
    finally:
        shots = load.stop()
    figures = query_figures(shots, refs, fault_end=injected.end)
    if args.shots is not None:
        _write_shots(args.shots / f"{name}.jsonl", shots, started, injected.end)
    if args.logs is not None:
        copy_logs(stack.home, args.logs / name)
    job = wait_job(stack, job_id, timeout_s=args.job_timeout_s)
    return {
        "fault": name,
        "fault_s": round(injected.end - started, 2),
        **figures,
        "job": {"items": args.job_items, **job},
        **injected.details,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    with ExitStack() as cleanup:
        stack = cleanup.enter_context(fault_stack())
        inputs, _ = load_validation(stack.demo.validation_path)
        inputs = inputs.astype(np.float32)
        refs = references(stack.services, stack.demo, inputs)
        job_source = upload_job_input(stack, inputs, args.job_items)
        for name in args.faults:
            if name == "worker-partition":
                _move_into_namespace(cleanup, stack)
            restore(stack)
            result = run_fault(stack, name, args, inputs, refs, job_source)
            if name == "worker-partition":
                _leave_namespace(stack)
            print(json.dumps(result), flush=True)
            results.append(result)
    return {
        "benchmark": "faults",
        "command": _command(args),
        "machine": {"cores": os.cpu_count(), "processor": platform.processor() or "unknown"},
        "rate_qps": args.rate_qps,
        "slo_ms": args.slo_ms,
        "deadline_ms": args.deadline_ms,
        "job_items": args.job_items,
        "outage_s": args.outage_s,
        "partition_s": args.partition_s,
        "faults": results,
    }


def copy_logs(home: Path, into: Path) -> list[str]:
    """The processes' logs so far (gateway, workers, scaler), kept past the bench's end
    (its home is a temporary folder); the names copied."""
    into.mkdir(parents=True, exist_ok=True)
    names = []
    for log in sorted(home.glob("*.log")):
        shutil.copy2(log, into / log.name)
        names.append(log.name)
    return names


def _write_shots(path: Path, shots: list[Any], started: float, fault_end: float) -> None:
    """Every query of one fault, a line each: seconds from the fault's start to its
    sending, its answer's time, status and code (for reading what the figures sum up)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as out:
        out.write(json.dumps({"fault_end_s": round(fault_end - started, 3)}) + "\n")
        for s in shots:
            line = {
                "sent_s": round(s.sent - started, 3),
                "took_s": round(s.done - s.sent, 3),
                "status": s.status,
                "code": s.code,
                "why": s.why,
                "late_ms": round(s.late_ms, 1),
            }
            out.write(json.dumps(line) + "\n")


def _move_into_namespace(cleanup: ExitStack, stack: FaultStack) -> None:
    host = cleanup.enter_context(netns.hosts(1, f"f{os.getpid() % 10000}"))[0]
    forwarder = cleanup.enter_context(netns.TcpForwarder())
    for port in stack.service_ports():
        forwarder.add((host.gateway, port), ("127.0.0.1", port))
    cleanup.callback(_leave_namespace, stack)
    partitioned_worker(stack, host)


def _leave_namespace(stack: FaultStack) -> None:
    if "worker-b" in stack.procs:
        stack.kill("worker-b")
    stack.partition_host = None


def _command(args: argparse.Namespace) -> str:
    parts = ["python -m bench.faults", f"--faults {','.join(args.faults)}"]
    parts += [f"--rate-qps {args.rate_qps:g}", f"--slo-ms {args.slo_ms:g}"]
    parts += [f"--job-items {args.job_items}", f"--outage-s {args.outage_s:g}"]
    parts += [f"--partition-s {args.partition_s:g}", f"--after-s {args.after_s:g}"]
    return " ".join(parts)


def table(result: dict[str, Any]) -> str:
    """The figures as docs/faults.md shows them (``--table`` prints them from a result)."""
    lines = [
        "| fault | sent | answered correctly | refused (code: n) | lost | recovery s "
        "| job items once / twice / missing |",
        "| --- | ---: | ---: | --- | ---: | ---: | --- |",
    ]
    for row in result["faults"]:
        refused = ", ".join(f"{code}: {n}" for code, n in row["refused"].items()) or "0"
        job = row["job"]
        recovery = "-" if row["recovery_s"] is None else f"{row['recovery_s']:.1f}"
        lines.append(
            f"| {row['fault']} | {row['sent']} | {row['answered_correctly']} | {refused} "
            f"| {row['lost']} | {recovery} | {job['items_once']} / {job['items_twice']} / "
            f"{job['items_missing']} ({job['job_status']}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.faults",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--faults",
        default=",".join(FAULTS),
        help="which, comma-separated; none: the same load on a healthy stack",
    )
    parser.add_argument("--rate-qps", type=float, default=200.0)
    parser.add_argument("--slo-ms", type=float, default=100.0, help="each query's latency_ms")
    parser.add_argument(
        "--deadline-ms",
        type=float,
        default=DEADLINE_MS,
        help="each query's timeout_ms; lost: no answer 5 s after it",
    )
    parser.add_argument("--job-items", type=int, default=20_000)
    parser.add_argument("--job-timeout-s", type=float, default=300.0)
    parser.add_argument(
        "--outage-s",
        type=float,
        default=30.0,
        help="broker, Redis, PostgreSQL and S3 down this long",
    )
    parser.add_argument(
        "--partition-s", type=float, default=20.0, help="a worker cut off the network this long"
    )
    parser.add_argument("--after-s", type=float, default=15.0, help="load after a fault's end")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--table", action="store_true", help="print --out's figures and exit")
    parser.add_argument(
        "--shots", type=Path, default=None, help="a folder: each query of each fault, a line"
    )
    parser.add_argument(
        "--logs",
        type=Path,
        default=None,
        help="a folder: after each fault, the gateway's, workers' and scaler's logs so far",
    )
    args = parser.parse_args(argv)
    for folder in (args.shots, args.logs):
        if folder is not None and folder.exists() and not folder.is_dir():
            parser.error(f"{folder} is a file; give a folder (it is made if missing)")
    if args.table:
        print(table(json.loads(args.out.read_text())))
        return 0
    args.faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    unknown = [f for f in args.faults if f not in FAULTS]
    if unknown:
        parser.error(f"unknown fault(s) {', '.join(unknown)}; known: {', '.join(FAULTS)}")
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

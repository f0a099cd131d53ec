"""What a user does with the running stack, from the stack's network (the stack test runs
this in its network namespace): a model the demo lacks (scikit-learn's wine set, trained
here, exported to ONNX) registered with `infaas register`; model-less queries with
`infaas query`; a batch job whose input and output live on the stack's S3 endpoint
(`infaas jobs submit --input s3://...`); load until the scaler adds a CPU worker through
its compose actuator, then none until it removes it; the gateway's and the workers'
metrics read back from Prometheus. Prints one JSON object: what was seen and the times.

    python -m stacktest.user --project NAME --env-file STACK_ENV --work DIR
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import httpx
import numpy as np

from bench.loadgen import closed_loop
from stacktest import compose_podman

APP = "wine"
MODEL = "wine-logreg"
INPUT_BUCKET = "wine-input"
OUTPUT_BUCKET = "wine-output"


class StackTestFailure(Exception):
    """The stack did not do what a user expects; the message says what and where."""


def container_ip(project: str, service: str, number: int = 1) -> str:
    name = f"{project}-{service}-{number}"
    ip = compose_podman.podman(
        "inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", name
    ).split()
    if not ip:
        raise StackTestFailure(f"{name} has no address on the stack's network")
    return ip[0]


def train_wine(folder: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """A logistic regression on the wine set as ONNX, and a validation split (.npz)."""
    from skl2onnx import to_onnx
    from sklearn.datasets import load_wine
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_wine(return_X_y=True)
    x = x.astype(np.float32)
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=0.4, random_state=0, stratify=y
    )
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model.fit(x_train, y_train)
    onnx_path = folder / f"{MODEL}.onnx"
    onnx_path.write_bytes(
        to_onnx(model, x_train[:1], options={"zipmap": False}).SerializeToString()
    )
    val_path = folder / "val.npz"
    np.savez(val_path, inputs=x_val, labels=y_val.astype(np.int64))
    return onnx_path, val_path, x_val, model.predict(x_val)


def cli(url: str, *args: str, timeout_s: float = 900) -> str:
    """`infaas ARGS --url URL`, as a user's shell runs it (INFAAS_API_KEY in the env)."""
    command = [sys.executable, "-m", "infaas.cli", *args, "--url", url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    if done.returncode != 0:
        raise StackTestFailure(f"infaas {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def running_workers(project: str) -> int:
    out = compose_podman.ps(
        compose_podman.Project(project, Path("."), {}, {}, {}), ["worker-cpu"], "running", True
    )
    return len(out.split())


def prometheus(url: str, query: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{url}/api/v1/query", params={"query": query}, timeout=10).json()
    if answer.get("status") != "success":
        raise StackTestFailure(f"Prometheus refused {query!r}: {answer}")
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def drive_load(
    gateway: str, key: str, project: str, rows: np.ndarray, max_s: float, prom: str
) -> dict[str, Any]:
    """Closed-loop clients until a second CPU worker runs, is up and Prometheus scraped
    it (or ``max_s``)."""
    body = json.dumps(
        {"inputs": rows[:1].tolist(), "latency_ms": 1000, "min_accuracy": 0.9}
    ).encode()
    headers = {"Authorization": f"Bearer {key}"}
    started = time.monotonic()
    up_s = None
    sent = ok = 0
    while time.monotonic() - started < max_s:
        run = asyncio.run(
            closed_loop(gateway, f"/v1/apps/{APP}/infer", body, concurrency=16,
                        duration_s=3, headers=headers)
        )  # fmt: skip
        sent, ok = sent + len(run.latencies_ms), ok + run.ok
        if running_workers(project) >= 2:
            up_s = time.monotonic() - started
            break
    serving_s = None
    while up_s is not None and time.monotonic() - started < max_s:
        newest = max(
            (c for c in compose_podman.containers(project) if c["service"] == "worker-cpu"),
            key=lambda c: c["number"],
        )
        try:
            metrics = f"http://{container_ip(project, 'worker-cpu', newest['number'])}:9100"
            if httpx.get(f"{metrics}/metrics", timeout=4).status_code == 200:
                serving_s = time.monotonic() - started
                break
        except httpx.HTTPError:
            pass
        time.sleep(1)
    scraped_s = None
    while serving_s is not None and time.monotonic() - started < max_s:
        asyncio.run(closed_loop(gateway, f"/v1/apps/{APP}/infer", body, concurrency=16,
                                duration_s=3, headers=headers, record=False))  # fmt: skip
        seen = prometheus(prom, 'count(infaas_worker_info{job="workers"})')
        if seen and float(seen[0]["value"][1]) >= 2:
            scraped_s = time.monotonic() - started
            break
    return {
        "scale_up_prometheus_s": None if scraped_s is None else round(scraped_s, 1),
        "scale_up_container_s": None if up_s is None else round(up_s, 1),
        "scale_up_worker_up_s": None if serving_s is None else round(serving_s, 1),
        "load_queries": sent,
        "load_answered": ok,
    }


def settle(project: str, workers: int, stable_s: float, max_s: float) -> None:
    """Wait until exactly ``workers`` CPU workers have run for ``stable_s`` in a row, so
    that what the load does is measured from a fleet at rest."""
    started = since = time.monotonic()
    while time.monotonic() - since < stable_s:
        if running_workers(project) != workers:
            since = time.monotonic()
        if time.monotonic() - started > max_s:
            log = compose_podman.logs(f"{project}-scaler-1", 400).splitlines()
            actions = "\n".join(line for line in log if "scaling: scaled" in line)
            raise StackTestFailure(
                f"the fleet did not rest at {workers} CPU worker(s) for {stable_s:.0f} s "
                f"within {max_s:.0f} s; the scaler's worker actions:\n{actions}"
            )
        time.sleep(2)


def wait_scale_down(project: str, max_s: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < max_s:
        if running_workers(project) <= 1:
            return round(time.monotonic() - started, 1)
        time.sleep(2)
    return None


def batch_job(url: str, s3: Any, rows: np.ndarray) -> dict[str, Any]:
    """Input uploaded to the S3 endpoint, the job run, its output read back from there."""
    for bucket in (INPUT_BUCKET, OUTPUT_BUCKET):
        s3.create_bucket(Bucket=bucket)
    buffer = io.BytesIO()
    np.savez(buffer, inputs=rows)
    s3.put_object(Bucket=INPUT_BUCKET, Key="batch/part-0.npz", Body=buffer.getvalue())
    out = cli(url, "jobs", "submit", APP, "--input", f"s3://{INPUT_BUCKET}/batch",
              "--output", f"s3://{OUTPUT_BUCKET}/run-1", "--min-accuracy", "0.9")  # fmt: skip
    job_id = next(
        (w for line in out.splitlines() if "infaas jobs wait" in line for w in line.split()[-1:]),
        None,
    )
    if job_id is None:
        raise StackTestFailure(f"jobs submit printed no job id:\n{out}")
    cli(url, "jobs", "wait", job_id)
    status = json.loads(cli(url, "jobs", "status", job_id, "--json"))
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=OUTPUT_BUCKET).get("Contents", [])]
    if status.get("status") != "succeeded" or not keys:
        raise StackTestFailure(f"job {job_id}: {status}, outputs {keys}")
    return {"job": job_id, "items": status["progress"]["items_done"], "outputs": keys}


def remote_completed(worker_podman: list[str], container: str) -> float:
    """Queries the worker host's worker completed, from its own metrics."""
    read = "import urllib.request as u; print(u.urlopen('http://127.0.0.1:9100/metrics').read().decode())"
    done = subprocess.run([*worker_podman, "exec", container, "python", "-c", read],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    lines = done.stdout.splitlines() if done.returncode == 0 else []
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith("infaas_worker_variant_completed_total{")
    )


def second_host(
    gateway: str, key: str, project: str, worker_podman: list[str], container: str
) -> dict[str, Any]:
    """The worker host's worker serves the app's queries. The scaler is stopped first: its
    compose actuator scales this host's workers only, and would count that one as its own."""
    compose_podman.podman("stop", "--time", "10", f"{project}-scaler-1")
    body = json.dumps({"inputs": [[0.0] * 13], "latency_ms": 1000}).encode()
    started = time.monotonic()
    sent = 0
    while time.monotonic() - started < 180:
        run = asyncio.run(
            closed_loop(gateway, f"/v1/apps/{APP}/infer", body, concurrency=8, duration_s=3,
                        headers={"Authorization": f"Bearer {key}"})
        )  # fmt: skip
        sent += len(run.latencies_ms)
        completed = remote_completed(worker_podman, container)
        if completed > 0:
            return {"remote_completed": completed, "sent": sent,
                    "first_served_s": round(time.monotonic() - started, 1)}  # fmt: skip
    raise StackTestFailure(f"the worker host's worker served none of {sent} queries in 180 s")


def observe(project: str, prom: str, env: dict[str, str]) -> dict[str, Any]:
    """The gateway's and the workers' metrics in Prometheus; Flower's API behind its login."""
    seen: dict[str, Any] = {}
    queries = prometheus(prom, 'sum(infaas_queries_total{job="gateway"})')
    workers = prometheus(prom, 'count(count_over_time(infaas_worker_info{job="workers"}[15m]))')
    seen["prometheus"] = {
        "gateway_queries": float(queries[0]["value"][1]) if queries else 0.0,
        "workers_seen": int(float(workers[0]["value"][1])) if workers else 0,
    }
    if not seen["prometheus"]["gateway_queries"] or seen["prometheus"]["workers_seen"] < 2:
        raise StackTestFailure(f"Prometheus lacks the gateway's or the workers' metrics: {seen}")
    flower = f"http://{container_ip(project, 'flower')}:5555/api/workers"
    login = (env["FLOWER_USER"], env["FLOWER_PASSWORD"])
    seen["flower"] = [httpx.get(flower, timeout=30).status_code,
                      httpx.get(flower, auth=login, timeout=30).status_code]  # fmt: skip
    if seen["flower"] != [401, 200]:
        raise StackTestFailure(f"Flower answered {seen['flower']} without and with its login")
    return seen


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--project", required=True)
    parser.add_argument("--env-file", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--scale-timeout-s", type=float, default=420)
    parser.add_argument(
        "--worker-host",
        nargs=2,
        metavar=("PODMAN", "CONTAINER"),
        help="only check the worker host's worker: how to run podman there, its container",
    )
    args = parser.parse_args(argv)
    env = compose_podman.read_env_file(args.env_file)
    key = env["GATEWAY_ADMIN_TOKEN"]
    os.environ["INFAAS_API_KEY"] = key
    url = f"http://{container_ip(args.project, 'gateway')}:8080"
    if args.worker_host:
        podman, container = args.worker_host
        print(json.dumps(second_host(url, key, args.project, podman.split(), container)))
        return 0
    prom = f"http://{container_ip(args.project, 'prometheus')}:9090"
    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://{container_ip(args.project, 'minio')}:9000",
        aws_access_key_id=env["MINIO_INFAAS_USER"],
        aws_secret_access_key=env["MINIO_INFAAS_PASSWORD"],
        region_name="us-east-1",
    )
    seen: dict[str, Any] = {}
    onnx_path, val_path, rows, expected = train_wine(args.work)

    started = time.monotonic()
    registered = cli(url, "register", APP, str(onnx_path), "--validation", str(val_path),
                     "--budget-s", "0.05", "--batch-sizes", "1,4")  # fmt: skip
    seen["register_s"] = round(time.monotonic() - started, 1)
    if MODEL not in registered:
        raise StackTestFailure(f"infaas register did not name {MODEL}:\n{registered}")

    (args.work / "rows.json").write_text(json.dumps(rows[:4].tolist()))
    started = time.monotonic()
    rows_json = str(args.work / "rows.json")
    answer = json.loads(cli(url, "query", APP, "--input", rows_json, "--latency-ms", "20000",
                            "--min-accuracy", "0.9", "--json"))  # fmt: skip
    seen["first_query_s"] = round(time.monotonic() - started, 1)
    if answer.get("model") != MODEL or answer.get("labels") != expected[:4].tolist():
        raise StackTestFailure(f"model-less query answered {answer}, expected {expected[:4]}")
    seen["query"] = {"variant": answer.get("variant"), "labels": answer["labels"]}

    seen["batch"] = batch_job(url, s3, rows)
    settle(args.project, 1, stable_s=20, max_s=args.scale_timeout_s)
    seen.update(drive_load(url, key, args.project, rows, args.scale_timeout_s, prom))
    if seen["scale_up_prometheus_s"] is None:
        raise StackTestFailure(f"no second CPU worker in {args.scale_timeout_s:.0f} s: {seen}")
    seen["scale_down_s"] = wait_scale_down(args.project, args.scale_timeout_s)
    if seen["scale_down_s"] is None:
        raise StackTestFailure(f"the added worker was not removed: {seen}")
    settle(args.project, 1, stable_s=30, max_s=120)  # and no worker comes back unasked

    seen.update(observe(args.project, prom, env))
    print(json.dumps(seen))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except StackTestFailure as exc:
        print(f"stack test failed: {exc}", file=sys.stderr)
        sys.exit(1)

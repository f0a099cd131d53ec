"""A newly registered model's first model-less answer, with nothing restarted.

For each trial: register a model under a new app through the gateway, note the moment
the registration reports finished, send one model-less query at once, and time its
answer. No worker runs the new variants yet, so the query waits while the workers'
loader loads the one the selector chose (workers/loader.py). The figure is the time
from the registration's end to the first answer, against the chosen variant's profiled
load time (target: at most load time + 1 s). Two modes, as a user runs them:

- ``embedded``: gateway and worker in this process (the embedded default);
- ``services``: ``infaas gateway`` and ``infaas worker`` as separate processes on the
  local RabbitMQ and Redis (a private vhost and prefix), an SQLite catalog and a folder
  store shared through the file system.

    python -m bench.first_answer --trials 3

Writes bench/results/first_answer.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from infaas.client import InfaasClient
from infaas.embedded import LocalStack
from infaas.services import open_services
from queues.settings import BrokerSettings
from registry.settings import RegistrySettings
from tests import services as isolation

RESULTS = Path(__file__).resolve().parent / "results" / "first_answer.json"
POLL_S = 0.02
TARGET_MARGIN_MS = 1000.0


def build_models(folder: Path) -> dict[str, tuple[Path, Path, np.ndarray]]:
    """Two models of scikit-learn's wine set, as ONNX with a validation split: a tiny
    logistic regression and an MLP of about 4 MB of weights (a load that takes time)."""
    from skl2onnx import to_onnx
    from sklearn.datasets import load_wine
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_wine(return_X_y=True)
    x = x.astype(np.float32)
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=0.3, random_state=0, stratify=y
    )
    estimators = {
        "wine-logreg": LogisticRegression(max_iter=2000),
        "wine-mlp-4mb": MLPClassifier((1024, 1024), max_iter=60, random_state=0),
    }
    models = {}
    for name, estimator in estimators.items():
        pipeline = make_pipeline(StandardScaler(), estimator).fit(x_train, y_train)
        onnx_path = folder / f"{name}.onnx"
        onnx = to_onnx(pipeline, x_train[:1], options={"zipmap": False})
        onnx_path.write_bytes(onnx.SerializeToString())
        val_path = folder / f"{name}-val.npz"
        np.savez(val_path, inputs=x_val, labels=y_val.astype(np.int64))
        models[name] = (onnx_path, val_path, x_val)
    return models


def one_trial(
    client: InfaasClient, app: str, model: tuple[Path, Path, np.ndarray], catalog: Any
) -> dict[str, Any]:
    onnx_path, val_path, rows = model
    answer = client.register_model(
        app,
        onnx_path,
        val_path,
        model_id=f"{app}-m",
        budget_s_per_batch=0.05,
        batch_sizes=(1, 8),
        create_app=True,
    )
    while not client.registration(answer["registration"])["finished"]:
        time.sleep(POLL_S)
    ended = time.perf_counter()
    reply = client.infer(app, rows[:1], latency_ms=5000, min_accuracy=0.9, timeout_ms=60_000)
    first_ms = (time.perf_counter() - ended) * 1000
    variant = catalog.get_variant(reply["variant"])
    load_ms = variant.profile.load_ms if variant.profile is not None else 0.0
    second = time.perf_counter()
    client.infer(app, rows[:1], latency_ms=5000, min_accuracy=0.9)
    return {
        "app": app,
        "variant": variant.id,
        "first_answer_ms": round(first_ms, 1),
        "profiled_load_ms": round(load_ms, 1),
        "margin_ms": round(first_ms - load_ms, 1),
        "next_answer_ms": round((time.perf_counter() - second) * 1000, 2),
    }


@contextmanager
def embedded(home: Path) -> Iterator[tuple[InfaasClient, Any]]:
    broker = BrokerSettings(broker_url=None, queue_prefix="bench")
    services = open_services(broker, RegistrySettings(home=home))
    with LocalStack(services) as stack, InfaasClient(stack.url, timeout_s=120) as client:
        yield client, services.catalog
    services.close()


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(30)


@contextmanager
def separate(home: Path) -> Iterator[tuple[InfaasClient, Any]]:
    with ExitStack() as stack:
        broker_url = stack.enter_context(isolation.rabbitmq_vhost())
        redis_url, prefix = stack.enter_context(isolation.redis_prefix())
        port = isolation.free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("INFAAS_")},
            "INFAAS_HOME": str(home),
            "INFAAS_BROKER_URL": broker_url,
            "INFAAS_QUEUE_PREFIX": "bench",
            "INFAAS_STATE_URL": redis_url,
            "INFAAS_STATE_PREFIX": prefix,
        }
        procs = []
        for args in (["gateway", "--port", str(port)], ["worker", "--hardware", "cpu"]):
            log = (home / f"{args[0]}.log").open("ab")
            stack.callback(log.close)
            cmd = [sys.executable, "-m", "infaas.cli", "--loglevel", "INFO", *args]
            procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))
        stack.callback(stop, procs)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                ready = httpx.get(f"{url}/readyz", timeout=2).json()
                if ready.get("status") == "ready" and ready.get("workers", 0) >= 1:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"the stack did not become ready; see {home}/*.log")
            time.sleep(0.3)
        services = open_services(
            BrokerSettings(broker_url=broker_url, queue_prefix="bench"),
            RegistrySettings(home=home, state_url=redis_url, state_prefix=prefix),
        )
        stack.callback(services.close)
        client = stack.enter_context(InfaasClient(url, timeout_s=120))
        yield client, services.catalog


def summarize(trials: list[dict[str, Any]]) -> dict[str, Any]:
    margins = [t["margin_ms"] for t in trials]
    return {
        "median_first_answer_ms": statistics.median(t["first_answer_ms"] for t in trials),
        "median_margin_ms": statistics.median(margins),
        "max_margin_ms": max(margins),
        "target_margin_ms": TARGET_MARGIN_MS,
        "met": max(margins) <= TARGET_MARGIN_MS,
        "trials": trials,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--trials", type=int, default=3, help="per model and mode")
    parser.add_argument("--modes", default="embedded,services")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    result: dict[str, Any] = {
        "command": "python -m bench.first_answer " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "modes": {},
    }
    with tempfile.TemporaryDirectory(prefix="infaas-first-") as tmp:
        models = build_models(Path(tmp))
        for mode in args.modes.split(","):
            home = Path(tmp) / mode
            home.mkdir()
            opened = embedded(home) if mode == "embedded" else separate(home)
            with opened as (client, catalog):
                trials = [
                    one_trial(client, f"{mode[:3]}-{name[5:]}-{i}", model, catalog)
                    for name, model in models.items()
                    for i in range(args.trials)
                ]
            result["modes"][mode] = summarize(trials)
            print(f"{mode}:")
            for t in trials:
                print(
                    f"  {t['variant']:<44} first answer {t['first_answer_ms']:8.1f} ms, "
                    f"profiled load {t['profiled_load_ms']:7.1f} ms, "
                    f"margin {t['margin_ms']:7.1f} ms (next answer {t['next_answer_ms']} ms)"
                )
            summary = result["modes"][mode]
            print(
                f"  median margin {summary['median_margin_ms']} ms, max "
                f"{summary['max_margin_ms']} ms (target <= {TARGET_MARGIN_MS:g} ms)"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""How long a worker takes to exit after SIGTERM while it serves load, and whether every
query it had accepted is still answered.

    python -m bench.worker_stop [--trials 5] [--clients 16] [--load-s 2]

One variant is served by two ``infaas worker`` processes on the local RabbitMQ and Redis
(a private vhost and key prefix, SQLite catalog, local object store): a standing one, and
in each trial a fresh one that is stopped. This process sends queries straight to the
variant's queue from ``--clients`` closed-loop callers (the gateway's own AMQP query
client), sends SIGTERM to the fresh worker after ``--load-s`` seconds of load, and times
until the process has exited; then it stops sending and waits for every query sent to be
answered (what the stopped worker held and did not start goes back to the queue and the
standing worker serves it). The baseline, measured in the same run, is the same stop with
no load. The target is an exit within 2 s of SIGTERM under load (every trial). Writes
``bench/results/worker_stop.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.stack import DEMO_CACHE, BenchStack
from infaas.demo import DEMO_APP
from infaas.demo_models import DemoSet, load_validation, prepare_demo_models
from infaas.services import Services, open_services
from queues import topology
from queues.errors import InfaasError
from queues.messages import Query, now_ms
from queues.rpc import create_query_client
from queues.settings import BrokerSettings
from registry.intake import Upload, accept_upload
from registry.registrations import RegistrationOptions
from registry.settings import RegistrySettings
from registry.types import App, InputSignature
from tests import services as isolation
from workers.registration_task import BuildContext, run_registration

MODEL = "digits-mlp-large"
VARIANT = f"{MODEL}.onnx-fp32.cpu-t1"
TARGET_STOP_S = 2.0
QUERY_TIMEOUT_S = 60.0
RESULTS = Path(__file__).resolve().parent / "results" / "worker_stop.json"


# -- the stack ------------------------------------------------------------------------


def register_model(
    services: Services,
    model_id: str,
    *,
    budget_s_per_batch: float,
    models_dir: Path = DEMO_CACHE,
) -> DemoSet:
    """The demo app with only ``model_id`` registered (profiling all six models takes
    minutes on two cores), its models trained into ``models_dir`` unless there already."""
    demo = prepare_demo_models(models_dir)
    model = next(m for m in demo.models if m.id == model_id)
    services.catalog.create_app(
        App(
            id=DEMO_APP,
            task="classification",
            signature=InputSignature(demo.input_name, "float32", (-1, 64)),
            output_kind="probabilities",
            num_classes=demo.num_classes,
        )
    )
    options = RegistrationOptions(budget_s_per_batch=budget_s_per_batch)
    registration = accept_upload(
        services.catalog,
        services.store,
        Upload(
            app=DEMO_APP,
            model_id=model.id,
            model_path=model.path,
            validation_path=demo.validation_path,
            hardware=("cpu",),
            metadata={"source": "demo"},
            options=options,
            output=model.output_name,
        ),
    )
    context = BuildContext(
        catalog=services.catalog,
        store=services.store,
        prices=services.prices,
        budget_s_per_batch=budget_s_per_batch,
        min_runs_per_batch=5,
    )
    run_registration(registration.id, context)
    return demo


@contextmanager
def one_model_stack(
    *,
    catalog_url: str | None = None,
    store_url: str | None = None,
    queue_max_length: int = 5000,
    models_dir: Path = DEMO_CACHE,
) -> Iterator[BenchStack]:
    """Like :func:`bench.stack.bench_stack`, with one model registered instead of six (and,
    if given, a catalog database and an object store instead of SQLite and a folder; the
    tests pass the demo models they trained already as ``models_dir``)."""
    with ExitStack() as stack:
        broker_url = stack.enter_context(isolation.rabbitmq_vhost())
        redis_url, prefix = stack.enter_context(isolation.redis_prefix())
        home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="infaas-bench-")))
        broker = BrokerSettings(
            broker_url=broker_url, queue_prefix="bench", queue_max_length=queue_max_length
        )
        registry = RegistrySettings(
            home=home,
            state_url=redis_url,
            state_prefix=prefix,
            catalog_url=catalog_url,
            store_url=store_url,
        )
        services = open_services(broker, registry)
        stack.callback(services.close)
        demo = register_model(services, MODEL, budget_s_per_batch=0.05, models_dir=models_dir)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("INFAAS_")},
            "INFAAS_HOME": str(home),
            "INFAAS_BROKER_URL": broker_url,
            "INFAAS_QUEUE_PREFIX": "bench",
            "INFAAS_QUEUE_MAX_LENGTH": str(queue_max_length),
            "INFAAS_STATE_URL": redis_url,
            "INFAAS_STATE_PREFIX": prefix,
            "PYTHONUNBUFFERED": "1",
            **({"INFAAS_CATALOG_URL": catalog_url} if catalog_url else {}),
            **({"INFAAS_STORE_URL": store_url} if store_url else {}),
        }
        bench = BenchStack(home=home, env=env, services=services, demo=demo)
        stack.callback(bench.stop)
        yield bench


def serving_workers(services: Services, variant: str) -> set[str]:
    return {
        worker_id
        for worker_id, report in services.live.snapshot().workers.items()
        if variant in report.variants
    }


def wait_serving(
    services: Services,
    variant: str,
    count: int,
    procs: list[subprocess.Popen[bytes]],
    timeout_s: float = 120.0,
) -> set[str]:
    """Wait until ``count`` workers report ``variant`` (their replicas then consume)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"a worker exited with {proc.returncode} while starting")
        found = serving_workers(services, variant)
        if len(found) >= count:
            return found
        time.sleep(0.1)
    raise RuntimeError(f"{count} workers did not serve {variant} within {timeout_s} s")


# -- the load ---------------------------------------------------------------------------


@dataclass
class Outcome:
    """What became of every query sent: answered by whom, or refused with which error."""

    sent: int = 0
    answered_by: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    wrong: int = 0

    @property
    def answered(self) -> int:
        return sum(self.answered_by.values())

    @property
    def unanswered(self) -> int:
        """Sent and neither answered nor refused (yet): in flight, or lost."""
        return self.sent - self.answered - sum(self.errors.values())


class QueryLoad:
    """Closed-loop callers on a thread of their own, sending straight to a variant queue.

    ``stop_sending()`` ends the sending; :meth:`join` waits until every query sent has an
    answer (or an error, e.g. the query client's own time-out: a lost query)."""

    def __init__(
        self, broker: BrokerSettings, queue: str, inputs: np.ndarray, *, clients: int
    ) -> None:
        self._broker = broker
        self._queue = queue
        self._inputs = inputs
        self._clients = clients
        self._stop = threading.Event()
        self._started = threading.Event()
        self.outcome = Outcome()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self._started.wait(30):
            raise RuntimeError("the query client did not connect within 30 s")

    def stop_sending(self) -> None:
        self._stop.set()

    def join(self, timeout_s: float) -> bool:
        self._stop.set()
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    async def _run(self) -> None:
        client = create_query_client(self._broker)
        await client.start()
        self._started.set()
        outcome = self.outcome

        async def caller(offset: int) -> None:
            index = offset
            while not self._stop.is_set():
                row = self._inputs[index % len(self._inputs)][None]
                index += self._clients
                query = Query(
                    uuid.uuid4().hex,
                    DEMO_APP,
                    VARIANT,
                    row,
                    now_ms() + QUERY_TIMEOUT_S * 1000,
                    now_ms(),
                )
                outcome.sent += 1
                try:
                    reply = await client.call(self._queue, query, timeout_s=QUERY_TIMEOUT_S)
                except InfaasError as exc:
                    outcome.errors[exc.code] += 1
                    continue
                if not reply.ok or reply.outputs is None:
                    outcome.errors[reply.error_code or "error"] += 1
                    continue
                if reply.outputs.shape[0] != 1:
                    outcome.wrong += 1
                outcome.answered_by[reply.worker] += 1

        try:
            await asyncio.gather(*(caller(i) for i in range(self._clients)))
        finally:
            await client.close()


# -- the trials -------------------------------------------------------------------------


def stop_and_time(proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> float:
    """Seconds from SIGTERM until the process has exited."""
    started = time.monotonic()
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        raise RuntimeError(f"the worker did not exit within {timeout_s} s of SIGTERM") from None
    return time.monotonic() - started


def _trial(
    stack: BenchStack, inputs: np.ndarray, args: argparse.Namespace, *, loaded: bool, index: int
) -> dict[str, Any]:
    services = stack.services
    before = serving_workers(services, VARIANT)
    victim = stack.start_worker("--variants", VARIANT, name=f"victim-{index}")
    victim_id = next(iter(wait_serving(services, VARIANT, len(before) + 1, [victim]) - before))
    trial: dict[str, Any] = {"load": loaded}
    load: QueryLoad | None = None
    if loaded:
        queue = topology.variant_queue("bench", DEMO_APP, VARIANT)
        load = QueryLoad(services.broker, queue, inputs, clients=args.clients)
        load.start()
        time.sleep(args.load_s)
    trial["stop_s"] = round(stop_and_time(victim), 3)
    trial["exit_code"] = victim.returncode
    stack.processes.remove(victim)
    if load is not None:
        load.stop_sending()
        if not load.join(QUERY_TIMEOUT_S + 30):
            raise RuntimeError("queries were still unanswered long after the stop")
        outcome = load.outcome
        trial.update(
            sent=outcome.sent,
            answered=outcome.answered,
            answered_by_stopped_worker=outcome.answered_by[victim_id],
            errors=dict(outcome.errors),
            lost=outcome.unanswered + outcome.errors.get("deadline_exceeded", 0),
            wrong=outcome.wrong,
        )
    return trial


def run(args: argparse.Namespace) -> dict[str, Any]:
    with one_model_stack() as stack:
        inputs, _ = load_validation(stack.demo.validation_path)
        standing = stack.start_worker("--variants", VARIANT, name="standing")
        wait_serving(stack.services, VARIANT, 1, [standing])
        trials: list[dict[str, Any]] = []
        for index in range(args.trials):
            for loaded in (False, True):
                trial = _trial(stack, inputs, args, loaded=loaded, index=index)
                print(f"trial {index + 1}: {trial}", flush=True)
                trials.append(trial)
    idle = [t["stop_s"] for t in trials if not t["load"]]
    busy = [t for t in trials if t["load"]]
    busy_s = [t["stop_s"] for t in busy]
    lost = sum(t["lost"] + t["wrong"] for t in busy)
    return {
        "benchmark": "worker_stop",
        "command": f"python -m bench.worker_stop --trials {args.trials} --clients {args.clients} "
        f"--load-s {args.load_s:g}",
        "machine": {"cores": os.cpu_count(), "processor": platform.processor() or "unknown"},
        "variant": VARIANT,
        "trials": trials,
        "idle_stop_s": {"median": statistics.median(idle), "max": max(idle)},
        "loaded_stop_s": {"median": statistics.median(busy_s), "max": max(busy_s)},
        "loaded_over_idle": round(statistics.median(busy_s) / statistics.median(idle), 2),
        "queries_sent": sum(t["sent"] for t in busy),
        "queries_lost": lost,
        "target_stop_s": TARGET_STOP_S,
        "met": max(busy_s) <= TARGET_STOP_S and lost == 0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.worker_stop", description=__doc__)
    parser.add_argument("--trials", type=int, default=5, help="stops of each kind (default 5)")
    parser.add_argument("--clients", type=int, default=16, help="closed-loop callers (default 16)")
    parser.add_argument(
        "--load-s", type=float, default=2.0, help="seconds of load before SIGTERM (default 2)"
    )
    args = parser.parse_args(argv)
    if args.trials < 1 or args.clients < 1 or args.load_s < 0:
        parser.error("--trials and --clients must be at least 1 and --load-s at least 0")
    result = run(args)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "trials"}, indent=2))
    return 0 if result["met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

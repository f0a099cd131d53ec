"""The demo: the `digits` app (six models trained from scikit-learn's digits at setup),
registered, served, and queried with requirements only.

Against the embedded default everything runs in this process; with the ``INFAAS_*``
settings pointing at real services, the app is registered there the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from infaas.client import InfaasClient
from infaas.demo_models import DemoSet, load_validation, prepare_demo_models
from infaas.services import Services
from queues.errors import InfaasError, UnknownApp, UnknownModel
from registry.intake import Upload, accept_upload, register_again
from registry.registrations import RegistrationOptions
from registry.types import READY, App, InputSignature
from workers.profiler import MIN_RUNS
from workers.registration_task import BuildContext, run_registration

DEMO_APP = "digits"
Say = Callable[[str], None]


def ensure_demo_app(
    services: Services,
    *,
    say: Say = print,
    models_dir: Path | None = None,
    budget_s_per_batch: float = 0.4,
    min_runs_per_batch: int = MIN_RUNS,
    verbose: bool = False,
) -> DemoSet:
    """Train (or reuse) the demo models and register any that are not ready yet.

    ``budget_s_per_batch`` is the profiler's time per batch size after its first
    ``min_runs_per_batch`` runs (tests use less of both); ``verbose`` lets onnxruntime's
    warnings through while the variants are built."""
    started = time.perf_counter()
    demo = prepare_demo_models(models_dir or services.registry.home / "demo-models", progress=say)
    catalog, store = services.catalog, services.store
    try:
        catalog.get_app(DEMO_APP)
    except UnknownApp:
        catalog.create_app(
            App(
                id=DEMO_APP,
                task="classification",
                signature=InputSignature(demo.input_name, "float32", (-1, 64)),
                output_kind="probabilities",
                num_classes=demo.num_classes,
                description="handwritten digits, 8×8 pixels of 0..16, flattened to 64 values",
            )
        )
    context = BuildContext(
        catalog=catalog,
        store=store,
        prices=services.prices,
        budget_s_per_batch=budget_s_per_batch,
        min_runs_per_batch=min_runs_per_batch,
        verbose=verbose,
    )
    options = RegistrationOptions(budget_s_per_batch=budget_s_per_batch)
    for demo_model in demo.models:
        if catalog.list_variants(model_id=demo_model.id, status=READY):
            continue
        try:
            catalog.get_model(demo_model.id)
            registration = register_again(catalog, demo_model.id, ["cpu"], options)
        except UnknownModel:
            # the same checks, files and records as an upload through the API
            registration = accept_upload(
                catalog,
                store,
                Upload(
                    app=DEMO_APP,
                    model_id=demo_model.id,
                    model_path=demo_model.path,
                    validation_path=demo.validation_path,
                    hardware=("cpu",),
                    metadata={"description": demo_model.description, "source": "demo"},
                    options=options,
                    output=demo_model.output_name,
                ),
            )
        say(f"generating and profiling the variants of {demo_model.id} ...")
        run_registration(registration.id, context)
    say(f"demo app ready in {time.perf_counter() - started:.1f} s")
    return demo


@dataclass(frozen=True)
class Scenario:
    title: str
    min_accuracy: float | None = None
    latency_ms: float | None = None
    max_cost_per_hour: float | None = None


SCENARIOS = (
    Scenario("strict: accuracy >= 0.985, latency <= 100 ms", 0.985, 100),
    Scenario("balanced: accuracy >= 0.97, latency <= 10 ms", 0.97, 10),
    Scenario("loose: accuracy >= 0.90, latency <= 2 ms", 0.90, 2),
    Scenario("cost cap: accuracy >= 0.95, <= $0.05/h", 0.95, None, 0.05),
    Scenario("impossible: accuracy >= 0.999", 0.999),
)


def run_scenarios(
    client: InfaasClient, demo: DemoSet, *, queries: int = 100, say: Say = print
) -> list[dict[str, Any]]:
    """Send each scenario's queries (one validation input each) and report what was chosen
    and what it delivered."""
    inputs, labels = load_validation(demo.validation_path)
    results = []
    for scenario in SCENARIOS:
        rows: list[dict[str, Any]] = []
        error = ""
        for i in range(min(queries, len(inputs))):
            try:
                rows.append(
                    client.infer(
                        DEMO_APP,
                        inputs[i : i + 1],
                        latency_ms=scenario.latency_ms,
                        min_accuracy=scenario.min_accuracy,
                        max_cost_per_hour=scenario.max_cost_per_hour,
                    )
                )
            except InfaasError as exc:
                error = f"{exc.code}: {exc.message}"
                break
        if rows:
            predicted = np.array([row["labels"][0] for row in rows])
            elapsed = np.array([row["elapsed_ms"] for row in rows])
            results.append(
                {
                    "scenario": scenario.title,
                    "variants": sorted({row["variant"] for row in rows}),
                    "queries": len(rows),
                    "accuracy": float((predicted == labels[: len(rows)]).mean()),
                    "p50_ms": float(np.percentile(elapsed, 50)),
                    "model_p50_ms": float(np.percentile([r["model_ms"] for r in rows], 50)),
                }
            )
        else:
            results.append({"scenario": scenario.title, "error": error})
    print_results(results, say)
    return results


def print_results(results: list[dict[str, Any]], say: Say) -> None:
    say("")
    say(f"{'requirement':48} {'chosen variant':34} {'acc.':>6} {'p50 ms':>7} {'model ms':>8}")
    say("-" * 107)
    for row in results:
        if "error" in row:
            say(f"{row['scenario']:48} -> {row['error']}")
            continue
        say(
            f"{row['scenario']:48} {', '.join(row['variants']):34} {row['accuracy']:6.3f} "
            f"{row['p50_ms']:7.2f} {row['model_p50_ms']:8.3f}"
        )
    say("")
    say("acc.: accuracy delivered on the queries sent (validation inputs the models never saw)")

"""Generating and profiling the variants of one registered model, on this hardware.

Runs wherever the hardware is: in a worker as a Celery task taken from the hardware's
control queue, or in-process for the embedded demo. A variant that fails to build or
profile is marked failed with its reason; the others still become ready.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from queues.errors import InfaasError
from registry.catalog import Catalog
from registry.pricing import PriceTable
from registry.store import ObjectStore
from registry.types import FAILED, GENERATING, PROFILING, QUEUED, READY, Model, Variant
from workers.builders import VariantBuild, build_onnx_cpu_variants
from workers.profiler import profile_variant, usable_cores
from workers.runtimes.base import RuntimeSpec, load_runtime

log = logging.getLogger(__name__)
Progress = Callable[[str, str], None]


@dataclass(frozen=True)
class BuildContext:
    catalog: Catalog
    store: ObjectStore
    prices: PriceTable
    hardware: str = "cpu"
    cores: int = 0
    batch_sizes: tuple[int, ...] = (1, 4, 8, 16, 32, 64)
    budget_s_per_batch: float = 0.4


def variant_artifact_key(variant: str, suffix: str = ".onnx") -> str:
    return f"variants/{variant}/model{suffix}"


def load_validation(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return np.asarray(data["inputs"]), np.asarray(data["labels"])


def _record(model: Model, build: VariantBuild, ctx: BuildContext, status: str) -> Variant:
    instance, cost = ctx.prices.variant_cost_per_hour(build.hardware, build.threads)
    return ctx.catalog.upsert_variant(
        Variant(
            id=build.id,
            model=model.id,
            app=model.app,
            runtime=build.runtime,
            precision=build.precision,
            hardware=build.hardware,
            threads=build.threads,
            opt=build.opt,
            artifact_key=variant_artifact_key(build.id, build.artifact.suffix),
            instance_class=instance,
            cost_per_hour=cost,
            status=status,
        )
    )


def generate_and_profile(
    model_id: str, ctx: BuildContext, *, progress: Progress | None = None
) -> list[Variant]:
    """Build every variant of ``model_id`` this hardware supports, upload and profile each."""
    say = progress or (lambda _variant, _status: None)
    catalog = ctx.catalog
    model = catalog.get_model(model_id)
    app = catalog.get_app(model.app)
    cores = ctx.cores or usable_cores()
    with tempfile.TemporaryDirectory(prefix=f"infaas-build-{model_id}-") as tmp:
        work = Path(tmp)
        source = ctx.store.get_file(model.artifact_key, work / "source.onnx")
        inputs, labels = load_validation(
            ctx.store.get_file(model.validation_key, work / "validation.npz")
        )
        builds = build_onnx_cpu_variants(model.id, source, work / "variants", cores)
        for build in builds:
            _record(model, build, ctx, QUEUED)
        ready: list[Variant] = []
        for build in builds:
            variant = _build_one(model, build, ctx, inputs, labels, app.signature.name, say)
            if variant is not None:
                ready.append(variant)
    catalog.set_model_status(model.id, READY if ready else FAILED)
    return ready


def _build_one(
    model: Model,
    build: VariantBuild,
    ctx: BuildContext,
    inputs: np.ndarray,
    labels: np.ndarray,
    input_name: str,
    say: Progress,
) -> Variant | None:
    catalog = ctx.catalog
    try:
        catalog.set_variant_status(build.id, GENERATING)
        say(build.id, GENERATING)
        key = variant_artifact_key(build.id, build.artifact.suffix)
        ctx.store.put_file(key, build.artifact)
        catalog.set_variant_status(build.id, PROFILING)
        say(build.id, PROFILING)
        spec = RuntimeSpec(
            runtime=build.runtime,
            precision=build.precision,
            hardware=build.hardware,
            threads=build.threads,
            opt=build.opt,
            input_name=input_name,
            output_name=model.output_name,
        )
        profile = profile_variant(
            lambda: load_runtime(spec, build.artifact),
            build.artifact.stat().st_size,
            inputs,
            labels,
            batch_sizes=ctx.batch_sizes,
            budget_s_per_batch=ctx.budget_s_per_batch,
        )
        instance, cost = ctx.prices.variant_cost_per_hour(build.hardware, build.threads)
        catalog.set_variant_profile(build.id, profile, cost_per_hour=cost, instance_class=instance)
        say(build.id, READY)
        return catalog.get_variant(build.id)
    except (InfaasError, ValueError, OSError, RuntimeError) as exc:
        reason = exc.message if isinstance(exc, InfaasError) else f"{type(exc).__name__}: {exc}"
        log.warning("variant %s failed: %s", build.id, reason)
        catalog.set_variant_status(build.id, FAILED, reason)
        say(build.id, FAILED)
        return None

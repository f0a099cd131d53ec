"""Generating and profiling the variants of one registered model, on this hardware.

Runs wherever the hardware is: in a worker as a Celery task taken from its hardware's
control queue (:mod:`workers.tasks`), or in-process for the embedded demo. A variant
that fails to build or profile is marked failed with its reason; the others still
become ready.

:func:`build_and_profile` is the core: it plans, builds, gates and profiles, and reports
through a :class:`Sink`. It needs no catalog or object store (the GPU check runs it with
nothing but torch); :func:`workers.registration_task.run_registration` wraps it with the
catalog, the store and the registration record.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from queues.errors import InfaasError, WorkerError
from registry.types import FAILED, GENERATING, PROFILING, Profile
from workers.builders import (
    ONNX_FP32,
    VariantPlan,
    build_artifact,
    calibration_slice,
    detect_capabilities,
    int8_inaccurate,
    int8_too_slow,
    plan_variants,
)
from workers.profiler import MIN_RUNS, profile_variant, top1_accuracy, usable_cores
from workers.runtimes.base import Runtime, RuntimeSpec, load_runtime

log = logging.getLogger(__name__)
INT8_GATE_BATCH = 8
MUCH_SLOWER = 2.0  # an int8 recipe this many times slower than fp32 is refused outright


@dataclass(frozen=True)
class ProfileSettings:
    """How a worker builds and measures variants."""

    hardware: str = "cpu"
    cores: int = 0
    batch_sizes: tuple[int, ...] = (1, 4, 8, 16, 32, 64)
    budget_s_per_batch: float = 0.4
    min_runs_per_batch: int = MIN_RUNS
    int8_max_accuracy_drop: float = 0.05
    int8_speed_tolerance: float = 0.05
    calibration_rows: int = 128
    min_calibration_rows: int = 16
    verbose: bool = False  # show onnxruntime's warnings while building


@dataclass(frozen=True)
class ModelSource:
    """An uploaded model and its validation set, on local disk."""

    model_id: str
    format: str
    path: Path
    input_name: str
    output_name: str
    inputs: np.ndarray
    labels: np.ndarray


@dataclass
class BuildReport:
    ready: dict[str, Profile] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    much_slower: dict[str, str] = field(default_factory=dict)  # int8 recipe -> why refused


class Sink(Protocol):
    """Where :func:`build_and_profile` reports (the catalog, or a record for a report)."""

    def planned(self, plans: Sequence[VariantPlan]) -> None: ...
    def status(self, plan: VariantPlan, status: str, error: str = "") -> None: ...
    def artifact(self, plan: VariantPlan, path: Path) -> None: ...
    def ready(self, plan: VariantPlan, profile: Profile) -> None: ...


class VariantRejected(WorkerError):
    """A variant that built and ran, but is not worth keeping (e.g. int8 slower than fp32)."""


def load_validation(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return np.asarray(data["inputs"]), np.asarray(data["labels"])


def runtime_spec(plan: VariantPlan, source: ModelSource) -> RuntimeSpec:
    output = source.output_name if plan.runtime in ("onnx", "tensorrt") else ""
    return RuntimeSpec.of_variant(plan, source.input_name, output)


# ----------------------------------------------------------------------------- core


def build_and_profile(
    source: ModelSource, settings: ProfileSettings, sink: Sink, workdir: Path
) -> BuildReport:
    """Plan this hardware's variants of ``source``, then build, check and profile each."""
    cores = settings.cores or usable_cores()
    caps = detect_capabilities(settings.hardware, source.format, source.path, len(source.inputs))
    plans, notes = plan_variants(
        source.model_id,
        source.format,
        settings.hardware,
        cores,
        caps,
        min_calibration_rows=settings.min_calibration_rows,
    )
    report = BuildReport(notes=list(notes))
    sink.planned(plans)
    artifacts: dict[str, Path | str] = {}  # recipe -> artifact, or why it could not be built
    accuracies: dict[Outputs, float] = {}  # measured once per artifact and runtime options
    for plan in plans:
        try:
            sink.status(plan, GENERATING)
            artifact = _artifact(plan, source, settings, workdir, artifacts)
            sink.artifact(plan, artifact)
            sink.status(plan, PROFILING)
            if plan.reference:
                _gate_int8(plan, artifact, source, settings, report, artifacts, accuracies)
            profile = _profile(plan, artifact, source, settings, accuracies.get(outputs_of(plan)))
            accuracies[outputs_of(plan)] = profile.accuracy
        except Exception as exc:  # one variant failing must not stop the others
            reason = exc.message if isinstance(exc, InfaasError) else f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, InfaasError):
                log.warning("variant %s failed", plan.id, exc_info=True)
            report.failed[plan.id] = reason
            sink.status(plan, FAILED, reason)
            continue
        report.ready[plan.id] = profile
        sink.ready(plan, profile)
    return report


def _artifact(
    plan: VariantPlan,
    source: ModelSource,
    settings: ProfileSettings,
    workdir: Path,
    artifacts: dict[str, Path | str],
) -> Path:
    if plan.recipe not in artifacts:
        try:
            artifacts[plan.recipe] = build_artifact(
                plan.recipe,
                source.path,
                workdir / "artifacts",
                input_name=source.input_name,
                calibration=calibration_slice(source.inputs, settings.calibration_rows),
                max_batch=max(settings.batch_sizes),
                verbose=settings.verbose,
            )
        except InfaasError as exc:
            artifacts[plan.recipe] = exc.message
    built = artifacts[plan.recipe]
    if isinstance(built, str):
        raise WorkerError(built)
    return built


# What decides a variant's outputs: everything in its plan but the id and thread count.
# Variants that differ only in threads run the same graph with the same options, so their
# top-1 accuracy is measured once (for the demo's CNN, 3-6 s of CPU per variant).
Outputs = tuple[str, str, str, str, str]


def outputs_of(plan: VariantPlan) -> Outputs:
    return (plan.recipe, plan.runtime, plan.precision, plan.hardware, plan.opt)


def _profile(
    plan: VariantPlan,
    artifact: Path,
    source: ModelSource,
    settings: ProfileSettings,
    accuracy: float | None = None,
) -> Profile:
    spec = runtime_spec(plan, source)
    gpu = plan.hardware == "gpu"
    if gpu:
        _reset_cuda_peak()
    profile = profile_variant(
        lambda: load_runtime(spec, artifact),
        artifact.stat().st_size,
        source.inputs,
        source.labels,
        batch_sizes=settings.batch_sizes,
        budget_s_per_batch=settings.budget_s_per_batch,
        min_runs_per_batch=settings.min_runs_per_batch,
        accuracy=accuracy,
    )
    if gpu:
        name, peak_bytes = _cuda_device()
        profile = dataclasses.replace(
            profile,
            profiled_on=name,
            memory_mb=max(profile.memory_mb, peak_bytes / (1024.0 * 1024.0)),
        )
    return profile


def _reset_cuda_peak() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def _cuda_device() -> tuple[str, int]:
    """The GPU's name and the peak memory torch allocated on it since the last reset."""
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device", 0
    return torch.cuda.get_device_name(), int(torch.cuda.max_memory_allocated())


def _gate_int8(
    plan: VariantPlan,
    artifact: Path,
    source: ModelSource,
    settings: ProfileSettings,
    report: BuildReport,
    artifacts: dict[str, Path | str],
    accuracies: dict[Outputs, float],
) -> None:
    """Keep an int8 variant only if its accuracy holds and it is not slower than its fp32
    reference; raises :class:`VariantRejected` with the measurements otherwise. The int8
    accuracy it measures is kept in ``accuracies`` for the variant's profile."""
    earlier = report.much_slower.get(plan.recipe)
    if earlier:
        raise VariantRejected(earlier)
    reference = report.ready.get(plan.reference)
    fp32_artifact = artifacts.get(ONNX_FP32)
    if reference is None or not isinstance(fp32_artifact, Path):
        raise VariantRejected(f"not kept: its fp32 reference {plan.reference} is not ready")
    fp32_plan = dataclasses.replace(plan, recipe=ONNX_FP32, precision="fp32", opt="")
    int8 = load_runtime(runtime_spec(plan, source), artifact)
    fp32 = load_runtime(runtime_spec(fp32_plan, source), fp32_artifact)
    try:
        # speed first: a slower int8 variant is refused without the accuracy pass
        rows = np.resize(source.inputs, (INT8_GATE_BATCH, *source.inputs.shape[1:]))
        fp32_ms, int8_ms = side_by_side_p50_ms(
            fp32, int8, np.ascontiguousarray(rows), budget_s=settings.budget_s_per_batch
        )
        reason = int8_too_slow(
            fp32_p50_ms=fp32_ms, int8_p50_ms=int8_ms, speed_tolerance=settings.int8_speed_tolerance
        )
        if int8_ms >= MUCH_SLOWER * fp32_ms:
            # more threads will not close that gap: the recipe's other variants are refused
            # on this measurement instead of being timed again
            report.much_slower[plan.recipe] = f"{reason} at {plan.threads} thread(s)"
        if not reason:
            key = outputs_of(plan)
            if key not in accuracies:
                accuracies[key] = top1_accuracy(int8.predict, source.inputs, source.labels)
            reason = int8_inaccurate(
                fp32_accuracy=reference.accuracy,
                int8_accuracy=accuracies[key],
                max_accuracy_drop=settings.int8_max_accuracy_drop,
            )
    finally:
        int8.close()
        fp32.close()
    if reason:
        raise VariantRejected(reason)


def side_by_side_p50_ms(
    first: Runtime,
    second: Runtime,
    batch: np.ndarray,
    *,
    budget_s: float,
    min_runs: int = 3,
    max_runs: int = 500,
) -> tuple[float, float]:
    """p50 latency of two runtimes on the same batch, timed alternately so that other
    load on the machine slows both alike."""
    for runtime in (first, second):
        runtime.predict(batch)
    times: tuple[list[int], list[int]] = ([], [])
    deadline = time.perf_counter() + 2 * budget_s
    while len(times[0]) < max_runs and (len(times[0]) < min_runs or time.perf_counter() < deadline):
        for index, runtime in enumerate((first, second)):
            t0 = time.perf_counter_ns()
            runtime.predict(batch)
            times[index].append(time.perf_counter_ns() - t0)
    return float(np.median(times[0])) / 1e6, float(np.median(times[1])) / 1e6


def describe(report: BuildReport) -> dict[str, Any]:
    return {
        "ready": sorted(report.ready),
        "failed": dict(sorted(report.failed.items())),
        "notes": list(report.notes),
    }

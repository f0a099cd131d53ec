"""A registration task on this hardware: the catalog, the object store and the
registration record around :func:`workers.registration.build_and_profile`.

Runs in a worker as a Celery task taken from its hardware's control queue
(:mod:`workers.tasks`), or in-process for the embedded demo. The task records each
variant as it goes, settles the model's status, and gives up on a model that kept
killing the workers that built it.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from queues.errors import InfaasError, NotFound, UnknownModel
from registry.pricing import PriceTable
from registry.types import FAILED, GENERATING, PROFILING, QUEUED, READY, Model, Profile, Variant
from workers.builders import VariantPlan
from workers.profiler import MIN_RUNS
from workers.registration import (
    BuildReport,
    ModelSource,
    ProfileSettings,
    build_and_profile,
    load_validation,
)

if TYPE_CHECKING:
    from registry.catalog import Catalog
    from registry.registrations import Registration, RegistrationStore, TaskProgress
    from registry.store import ObjectStore

log = logging.getLogger(__name__)
Progress = Callable[[str, str], None]
# a registration task whose worker was lost this many times (a model that crashes its
# runtime kills the worker, and the broker redelivers the task) is failed, not run again
MAX_REGISTRATION_ATTEMPTS = 3


@dataclass(frozen=True)
class BuildContext:
    catalog: Catalog
    store: ObjectStore
    prices: PriceTable
    hardware: str = "cpu"
    cores: int = 0
    batch_sizes: tuple[int, ...] = (1, 4, 8, 16, 32, 64)
    budget_s_per_batch: float = 0.4
    # the demo's tests lower it: a slow variant's minimum runs, not the budget, set their time
    min_runs_per_batch: int = MIN_RUNS
    worker: str = "in-process"
    verbose: bool = False  # show onnxruntime's warnings while building
    max_attempts: int = MAX_REGISTRATION_ATTEMPTS

    def settings(self, batch_sizes: Sequence[int], budget_s_per_batch: float) -> ProfileSettings:
        return ProfileSettings(
            hardware=self.hardware,
            cores=self.cores,
            batch_sizes=tuple(batch_sizes),
            budget_s_per_batch=budget_s_per_batch,
            min_runs_per_batch=self.min_runs_per_batch,
            verbose=self.verbose,
        )


def artifact_key(model: str, plan: VariantPlan) -> str:
    """Variants of one recipe share one artifact, kept under the model's prefix."""
    return f"models/{model}/artifacts/{plan.recipe}{plan.suffix}"


def instance_and_cost(prices: PriceTable, plan: VariantPlan, device: str = "") -> tuple[str, float]:
    """A CPU variant pays for its share of the CPU instance; a GPU variant for the GPU
    instance whose GPU it was measured on (the configured one when none matches)."""
    if plan.hardware == "gpu" and device:
        for inst in prices.instances.values():
            if inst.hardware == "gpu" and inst.gpu and inst.gpu.lower() in device.lower():
                return inst.name, inst.usd_per_hour
    return prices.variant_cost_per_hour(plan.hardware, plan.threads)


class CatalogSink:
    """Reports progress to the catalog (variants) and the registration record."""

    def __init__(
        self,
        model: Model,
        ctx: BuildContext,
        registrations: RegistrationStore,
        registration_id: str,
        progress: Progress,
    ) -> None:
        self.model = model
        self.ctx = ctx
        self.registrations = registrations
        self.registration_id = registration_id
        self.progress = progress
        self._stored: set[str] = set()

    def planned(self, plans: Sequence[VariantPlan]) -> None:
        for plan in plans:
            instance, cost = instance_and_cost(self.ctx.prices, plan)
            self.ctx.catalog.upsert_variant(
                Variant(
                    id=plan.id,
                    model=self.model.id,
                    app=self.model.app,
                    runtime=plan.runtime,
                    precision=plan.precision,
                    hardware=plan.hardware,
                    threads=plan.threads,
                    opt=plan.opt,
                    artifact_key=artifact_key(self.model.id, plan),
                    instance_class=instance,
                    cost_per_hour=cost,
                    status=QUEUED,
                )
            )
            self._record(plan, QUEUED)

    def status(self, plan: VariantPlan, status: str, error: str = "") -> None:
        self.ctx.catalog.set_variant_status(plan.id, status, error)
        self._record(plan, status, error)

    def artifact(self, plan: VariantPlan, path: Path) -> None:
        key = artifact_key(self.model.id, plan)
        if key not in self._stored:
            self.ctx.store.put_file(key, path)
            self._stored.add(key)

    def ready(self, plan: VariantPlan, profile: Profile) -> None:
        instance, cost = instance_and_cost(self.ctx.prices, plan, profile.profiled_on)
        self.ctx.catalog.set_variant_profile(
            plan.id, profile, cost_per_hour=cost, instance_class=instance
        )
        self._record(plan, READY)

    def _record(self, plan: VariantPlan, status: str, error: str = "") -> None:
        self.registrations.set_variant(self.registration_id, plan.id, plan.hardware, status, error)
        self.progress(plan.id, status)


def run_registration(
    registration_id: str, ctx: BuildContext, *, progress: Progress | None = None
) -> list[Variant]:
    """Build and profile this hardware's variants for one registration; returns the
    variants that became ready. A task that cannot run at all (its files are gone, the
    store is down) is recorded as failed with the reason, then the error is raised."""
    from registry.registrations import RegistrationStore

    say = progress or (lambda _variant, _status: None)
    catalog, registrations = ctx.catalog, RegistrationStore(ctx.catalog)
    this_task = (registration_id, ctx.hardware)
    try:
        registration = registrations.get(registration_id)
        model = catalog.get_model(registration.model)
        lost = lost_too_often(registration.task(ctx.hardware), ctx.max_attempts)
        if lost is None:
            registrations.start_task(registration_id, ctx.hardware, ctx.worker)
    except NotFound as exc:  # deleted (with its model) before this task ran
        log.info("registration %s is gone: %s", registration_id, exc.message)
        return []
    if lost is not None:  # answered (so the message is acked), never run again
        log.error("registration %s on %s is given up: %s", registration_id, ctx.hardware, lost)
        _settle_model(catalog, registrations, model.id, finishing=this_task)
        _fail(registrations, registration_id, ctx.hardware, lost)
        return []
    if model.status != READY:
        catalog.set_model_status(model.id, GENERATING)
    try:
        report = _run(model, registration, ctx, registrations, say)
    except Exception as exc:
        if isinstance(exc, NotFound) and _model_gone(catalog, model.id):
            log.info("model %s was deleted during its registration; stopping", model.id)
            return []
        reason = exc.message if isinstance(exc, InfaasError) else f"internal error: {exc!r}"
        _settle_model(catalog, registrations, model.id, finishing=this_task)
        _fail(registrations, registration_id, ctx.hardware, reason)
        raise
    # the model's status first: whoever sees the task finished sees the model settled
    _settle_model(catalog, registrations, model.id, finishing=this_task)
    registrations.finish_task(registration_id, ctx.hardware, notes=report.notes)
    return [catalog.get_variant(variant) for variant in sorted(report.ready)]


def lost_too_often(task: TaskProgress | None, max_attempts: int) -> str | None:
    """Why a delivered task must not run again, or None. A task found ``running`` was
    started by a worker that never finished it (it was lost mid-build); after
    ``max_attempts`` such starts the model is taken to be what kills the workers."""
    from registry.registrations import TASK_RUNNING

    if task is None or task.status != TASK_RUNNING or task.attempts < max_attempts:
        return None
    return (
        f"the {task.hardware} worker building this model's variants was lost "
        f"{task.attempts} times (last on {task.worker or 'an unknown worker'}), so the "
        "model may crash its runtime; it is not tried again: check that it loads and runs "
        "with onnxruntime or torch, then register it again"
    )


def _run(
    model: Model,
    registration: Registration,
    ctx: BuildContext,
    registrations: RegistrationStore,
    say: Progress,
) -> BuildReport:
    app = ctx.catalog.get_app(model.app)
    options = registration.options
    suffix = Path(model.artifact_key).suffix or ".onnx"
    with tempfile.TemporaryDirectory(prefix=f"infaas-build-{model.id}-") as tmp:
        work = Path(tmp)
        path = ctx.store.get_file(model.artifact_key, work / f"source{suffix}")
        inputs, labels = load_validation(ctx.store.get_file(model.validation_key, work / "val.npz"))
        source = ModelSource(
            model_id=model.id,
            format=model.format,
            path=path,
            input_name=app.signature.name,
            output_name=model.output_name,
            inputs=inputs,
            labels=labels,
        )
        sink = CatalogSink(model, ctx, registrations, registration.id, say)
        settings = ctx.settings(options.batch_sizes, options.budget_s_per_batch)
        return build_and_profile(source, settings, sink, work)


def _fail(
    registrations: RegistrationStore, registration_id: str, hardware: str, reason: str
) -> None:
    try:
        registrations.finish_task(registration_id, hardware, failed=True, error=reason)
    except InfaasError as exc:  # the record itself may be what is unreachable
        log.error(
            "could not record the failure of %s (%s): %s", registration_id, reason, exc.message
        )


def _model_gone(catalog: Catalog, model_id: str) -> bool:
    try:
        catalog.get_model(model_id)
    except UnknownModel:
        return True
    return False


def _settle_model(
    catalog: Catalog,
    registrations: RegistrationStore,
    model_id: str,
    *,
    finishing: tuple[str, str],
) -> None:
    """Ready once any variant is; failed when none is and every registration task (the
    one ``finishing`` included) is done; else still profiling."""
    try:
        if catalog.list_variants(model_id=model_id, status=READY):
            status = READY
        elif all(
            task.finished or (registration.id, task.hardware) == finishing
            for registration in registrations.for_model(model_id)
            for task in registration.tasks
        ):
            status = FAILED
        else:
            status = PROFILING
        catalog.set_model_status(model_id, status)
    except InfaasError as exc:
        log.warning("could not settle the status of model %s: %s", model_id, exc.message)


def generate_and_profile(
    model_id: str, ctx: BuildContext, *, progress: Progress | None = None
) -> list[Variant]:
    """Register ``model_id`` (already in the catalog) again on this hardware, in-process."""
    from registry.intake import register_again
    from registry.registrations import RegistrationOptions

    registration = register_again(
        ctx.catalog,
        model_id,
        [ctx.hardware],
        RegistrationOptions(ctx.budget_s_per_batch, tuple(ctx.batch_sizes)),
    )
    return run_registration(registration.id, ctx, progress=progress)

"""Registration records: the status word (pure), options, and the store on SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from queues.errors import InvalidRequest, NotFound
from registry.catalog import Catalog
from registry.intake import register_again
from registry.registrations import (
    TASK_DONE,
    TASK_FAILED,
    TASK_QUEUED,
    TASK_RUNNING,
    RegistrationOptions,
    RegistrationStore,
    TaskProgress,
    VariantProgress,
    registration_status,
)
from registry.types import FAILED, PROFILING, READY, App, InputSignature, Model


def _tasks(*statuses: str) -> list[TaskProgress]:
    return [TaskProgress(hw, s) for hw, s in zip(("cpu", "gpu"), statuses, strict=False)]


def _variants(*statuses: str) -> list[VariantProgress]:
    return [VariantProgress(f"m.v{i}", "cpu", s) for i, s in enumerate(statuses)]


@pytest.mark.parametrize(
    ("tasks", "variants", "expected"),
    [
        ([], [], "queued"),
        (_tasks(TASK_QUEUED), [], "queued"),
        (_tasks(TASK_QUEUED, TASK_QUEUED), [], "queued"),
        (_tasks(TASK_RUNNING), _variants(PROFILING), "running"),
        (_tasks(TASK_DONE, TASK_QUEUED), _variants(READY), "running"),
        (_tasks(TASK_DONE, TASK_RUNNING), _variants(READY, PROFILING), "running"),
        (_tasks(TASK_DONE), _variants(READY, FAILED), "ready"),
        (_tasks(TASK_DONE, TASK_FAILED), _variants(READY), "ready"),
        (_tasks(TASK_DONE), _variants(FAILED, FAILED), "failed"),
        (_tasks(TASK_FAILED), [], "failed"),
    ],
)
def test_registration_status(
    tasks: list[TaskProgress], variants: list[VariantProgress], expected: str
) -> None:
    assert registration_status(tasks, variants) == expected


@pytest.mark.parametrize(
    ("budget", "sizes", "expected"),
    [
        (0.001, (1, 4), "budget_s_per_batch 0.001 is outside"),
        (11.0, (1, 4), "outside"),
        (0.4, (), "must be increasing"),
        (0.4, (4, 1), "must be increasing"),
        (0.4, (1, 1), "must be increasing"),
        (0.4, (0, 4), "must be increasing"),
        (0.4, (1, 5000), "must be increasing"),
    ],
)
def test_options_refuse_nonsense(budget: float, sizes: tuple[int, ...], expected: str) -> None:
    with pytest.raises(InvalidRequest, match=expected):
        RegistrationOptions(budget, sizes)


def test_options_round_trip() -> None:
    options = RegistrationOptions(0.1, (1, 8, 32))
    assert RegistrationOptions.from_dict(options.to_dict()) == options
    assert RegistrationOptions.from_dict({}) == RegistrationOptions()


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    with Catalog(f"sqlite:///{tmp_path / 'catalog.db'}") as opened:
        opened.create_app(App("a", "classification", InputSignature("x", "float32", (-1, 4))))
        opened.add_model(Model("m", "a", "onnx", "models/m/x/source.onnx", "models/m/x/v.npz"))
        yield opened


def test_progress_is_recorded_without_moving_the_catalog_revision(catalog: Catalog) -> None:
    store = RegistrationStore(catalog)
    registration = register_again(catalog, "m", ["gpu", "cpu"], RegistrationOptions(0.1))
    revision = catalog.revision()
    assert registration.status == "queued"
    assert [t.hardware for t in registration.tasks] == ["cpu", "gpu"]
    store.start_task(registration.id, "cpu", "worker-1")
    store.set_variant(registration.id, "m.onnx-fp32.cpu-t1", "cpu", PROFILING)
    store.set_variant(registration.id, "m.onnx-fp32.cpu-t1", "cpu", READY)
    store.set_variant(registration.id, "m.onnx-int8-dynamic.cpu-t1", "cpu", FAILED, "slower")
    store.finish_task(registration.id, "cpu", notes=["torch variants need a torch.export upload"])
    found = store.get(registration.id)
    assert found.status == "running"  # the gpu task has not started
    cpu = found.task("cpu")
    assert cpu is not None
    assert (cpu.status, cpu.worker, cpu.attempts) == (TASK_DONE, "worker-1", 1)
    assert cpu.notes == ("torch variants need a torch.export upload",)
    assert cpu.started_at is not None
    assert cpu.finished_at is not None
    assert [(v.variant, v.status, v.error) for v in found.variants] == [
        ("m.onnx-fp32.cpu-t1", READY, ""),
        ("m.onnx-int8-dynamic.cpu-t1", FAILED, "slower"),
    ]
    store.start_task(registration.id, "gpu", "worker-2")
    store.finish_task(registration.id, "gpu", failed=True, error="no CUDA")
    view = store.get(registration.id).to_dict()
    assert view["status"] == "ready"
    assert view["finished"] is True
    assert view["hardware"]["gpu"]["error"] == "no CUDA"
    assert view["counts"] == {"queued": 0, "generating": 0, "profiling": 0, "ready": 1, "failed": 1}
    assert view["options"] == {"budget_s_per_batch": 0.1, "batch_sizes": [1, 4, 8, 16, 32, 64]}
    assert catalog.revision() == revision


def test_a_redone_task_counts_its_attempts(catalog: Catalog) -> None:
    store = RegistrationStore(catalog)
    registration = register_again(catalog, "m", ["cpu"])
    store.start_task(registration.id, "cpu", "worker-1")
    again = store.start_task(registration.id, "cpu", "worker-2")  # the first worker died
    task = again.task("cpu")
    assert task is not None
    assert (task.status, task.worker, task.attempts) == (TASK_RUNNING, "worker-2", 2)


def test_unknown_registrations_and_deletion(catalog: Catalog) -> None:
    store = RegistrationStore(catalog)
    with pytest.raises(NotFound, match="registration 'nope' does not exist"):
        store.get("nope")
    with pytest.raises(NotFound):
        store.set_variant("nope", "m.onnx-fp32.cpu-t1", "cpu", READY)
    with pytest.raises(InvalidRequest, match="status 'done' is not one of"):
        store.set_variant("nope", "m.onnx-fp32.cpu-t1", "cpu", "done")
    first = register_again(catalog, "m", ["cpu"])
    register_again(catalog, "m", ["cpu"])
    store.set_variant(first.id, "m.onnx-fp32.cpu-t1", "cpu", READY)
    assert [r.model for r in store.for_model("m")] == ["m", "m"]
    assert store.delete_for_model("m") == 2
    assert store.for_model("m") == []
    assert store.all() == []


def test_hardware_must_be_named(catalog: Catalog) -> None:
    with pytest.raises(InvalidRequest, match="hardware"):
        register_again(catalog, "m", [])
    with pytest.raises(InvalidRequest, match="hardware"):
        register_again(catalog, "m", ["tpu"])

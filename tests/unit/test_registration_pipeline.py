"""Generating and profiling variants on this machine's CPU, with real (small) models:
the core with a recording sink, then the whole registration on an SQLite catalog and a
local object store (taking in the upload, building, recording, deleting)."""

from __future__ import annotations

import dataclasses
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from queues.errors import (
    Conflict,
    InfaasError,
    InvalidModel,
    InvalidRequest,
    InvalidValidationSet,
    ObjectMissing,
    UnknownApp,
    WorkerError,
)
from registry.catalog import Catalog
from registry.intake import Upload, accept_upload, remove_model
from registry.pricing import PriceTable
from registry.registrations import RegistrationOptions, RegistrationStore, TaskProgress
from registry.store import LocalStore
from registry.types import (
    FAILED,
    GENERATING,
    PROFILING,
    QUEUED,
    READY,
    App,
    InputSignature,
    Profile,
)
from tests.hardware import needs_cuda
from tests.registration_models import (
    INPUT,
    OUTPUT,
    Trained,
    onnx_accuracy,
    sklearn_onnx,
    torch_program,
)
from workers import builders, profiler
from workers.builders import ONNX_INT8_DYNAMIC, VariantPlan
from workers.registration import ModelSource, ProfileSettings, build_and_profile
from workers.registration_task import (
    MAX_REGISTRATION_ATTEMPTS,
    BuildContext,
    generate_and_profile,
    lost_too_often,
    run_registration,
)

FAST = ProfileSettings(cores=2, batch_sizes=(1, 64), budget_s_per_batch=0.02)


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    # two 256-unit layers (sized when a test compared batch costs; kept: the int8 tests use it)
    return sklearn_onnx(
        tmp_path_factory.mktemp("mlp"), "bc-mlp", "breast_cancer", hidden=(256, 256)
    )


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return torch_program(
        tmp_path_factory.mktemp("torch"), "wine-torch", "wine", epochs=20, hidden=512
    )


class RecordingSink:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []
        self.artifacts: dict[str, Path] = {}
        self.profiles: dict[str, Profile] = {}

    def planned(self, plans: Any) -> None:
        self.events.extend((p.id, QUEUED, "") for p in plans)

    def status(self, plan: VariantPlan, status: str, error: str = "") -> None:
        self.events.append((plan.id, status, error))

    def artifact(self, plan: VariantPlan, path: Path) -> None:
        self.artifacts[plan.id] = path

    def ready(self, plan: VariantPlan, profile: Profile) -> None:
        self.events.append((plan.id, READY, ""))
        self.profiles[plan.id] = profile

    def final(self) -> dict[str, tuple[str, str]]:
        return {variant: (status, error) for variant, status, error in self.events}


def _source(trained: Trained, fmt: str = "onnx", input_name: str = INPUT) -> ModelSource:
    return ModelSource(
        model_id="m",
        format=fmt,
        path=trained.path,
        input_name=input_name,
        output_name=OUTPUT if fmt == "onnx" else "",
        inputs=trained.inputs,
        labels=trained.labels,
    )


def test_cpu_variants_of_an_onnx_mlp(mlp: Trained, tmp_path: Path) -> None:
    sink = RecordingSink()
    settings = dataclasses.replace(FAST, int8_speed_tolerance=1000.0)  # keep int8 if accurate
    report = build_and_profile(_source(mlp), settings, sink, tmp_path)
    expected = onnx_accuracy(mlp.path, mlp.inputs, mlp.labels)
    assert sorted(report.ready) == [
        "m.onnx-fp32.cpu-t1",
        "m.onnx-fp32.cpu-t2",
        "m.onnx-int8-dynamic.cpu-t1",
        "m.onnx-int8-dynamic.cpu-t2",
        "m.onnx-int8-static.cpu-t1",
        "m.onnx-int8-static.cpu-t2",
    ]
    for variant, profile in report.ready.items():
        assert profile.metric == "top1"
        assert sorted(profile.latency_ms) == [1, 64]
        # both measured (how the two compare is timing, which a loaded machine skews: the
        # profiling benchmark's business, not a test's)
        assert profile.latency_ms[1] > 0
        assert profile.latency_ms[64] > 0
        assert profile.latency_p99_ms[64] >= profile.latency_ms[64]
        assert profile.max_batch == 64
        assert profile.cores >= 1
        if "fp32" in variant:
            assert profile.accuracy == pytest.approx(expected, abs=0.005)
        else:
            assert profile.accuracy >= expected - 0.05
    # every variant went queued -> generating -> profiling -> ready, in that order
    for variant in report.ready:
        assert [s for v, s, _ in sink.events if v == variant] == [
            QUEUED,
            GENERATING,
            PROFILING,
            READY,
        ]
    assert report.notes == ["torch variants need a torch.export upload"]
    # thread variants share one artifact
    assert sink.artifacts["m.onnx-fp32.cpu-t1"] == sink.artifacts["m.onnx-fp32.cpu-t2"]


def test_accuracy_is_measured_once_per_artifact_not_per_thread_count(
    mlp: Trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Thread variants run the same graph with the same options: one accuracy pass for
    each artifact (the int8 gate's pass counts for its variants), the same figure for
    each of its thread counts."""
    from workers import registration

    passes: list[int] = []

    def counted(predict: Any, inputs: np.ndarray, labels: np.ndarray, batch: int = 64) -> float:
        passes.append(len(inputs))
        return real(predict, inputs, labels, batch)

    real = profiler.top1_accuracy
    monkeypatch.setattr(profiler, "top1_accuracy", counted)
    monkeypatch.setattr(registration, "top1_accuracy", counted)
    settings = dataclasses.replace(FAST, int8_speed_tolerance=1000.0)  # keep int8 if accurate
    report = build_and_profile(_source(mlp), settings, RecordingSink(), tmp_path)
    assert len(report.ready) == 6  # fp32, int8 dynamic and static, each at 1 and 2 threads
    assert len(passes) == 3
    for recipe in ("onnx-fp32", "onnx-int8-dynamic", "onnx-int8-static"):
        one, two = (report.ready[f"m.{recipe}.cpu-t{t}"].accuracy for t in (1, 2))
        assert one == two


def test_int8_is_not_kept_when_it_loses_accuracy(mlp: Trained, tmp_path: Path) -> None:
    sink = RecordingSink()
    settings = dataclasses.replace(
        FAST, cores=1, int8_max_accuracy_drop=-1.0, int8_speed_tolerance=1000.0
    )
    report = build_and_profile(_source(mlp), settings, sink, tmp_path)
    assert sorted(report.ready) == ["m.onnx-fp32.cpu-t1"]
    for variant in ("m.onnx-int8-dynamic.cpu-t1", "m.onnx-int8-static.cpu-t1"):
        status, reason = sink.final()[variant]
        assert status == FAILED
        assert reason.startswith("not kept: int8 accuracy")


def test_int8_is_not_kept_when_slower(mlp: Trained, tmp_path: Path) -> None:
    sink = RecordingSink()
    settings = dataclasses.replace(FAST, cores=1, int8_speed_tolerance=-0.99)
    build_and_profile(_source(mlp), settings, sink, tmp_path)
    status, reason = sink.final()["m.onnx-int8-dynamic.cpu-t1"]
    assert status == FAILED
    assert "not kept: int8 is slower than fp32" in reason


def test_a_variant_that_fails_is_marked_and_the_others_become_ready(
    mlp: Trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_build = builders.build_artifact
    real_profile = profiler.profile_variant

    def build(recipe: str, *args: Any, **kwargs: Any) -> Path:
        if recipe == ONNX_INT8_DYNAMIC:
            raise WorkerError("int8 dynamic quantisation failed: broken on purpose")
        return real_build(recipe, *args, **kwargs)

    calls = {"n": 0}

    def profile(*args: Any, **kwargs: Any) -> Profile:
        calls["n"] += 1
        if calls["n"] == 2:  # the second variant profiled: fp32 at 2 threads
            raise RuntimeError("the runtime crashed")
        return real_profile(*args, **kwargs)

    monkeypatch.setattr("workers.registration.build_artifact", build)
    monkeypatch.setattr("workers.registration.profile_variant", profile)
    sink = RecordingSink()
    settings = dataclasses.replace(FAST, int8_speed_tolerance=1000.0)
    report = build_and_profile(_source(mlp), settings, sink, tmp_path)
    final = sink.final()
    assert final["m.onnx-fp32.cpu-t2"] == (FAILED, "RuntimeError: the runtime crashed")
    for threads in (1, 2):
        assert final[f"m.onnx-int8-dynamic.cpu-t{threads}"] == (
            FAILED,
            "int8 dynamic quantisation failed: broken on purpose",
        )
    # int8 static at 2 threads has no fp32 reference to be measured against
    assert final["m.onnx-int8-static.cpu-t2"][0] == FAILED
    assert "reference m.onnx-fp32.cpu-t2 is not ready" in final["m.onnx-int8-static.cpu-t2"][1]
    assert sorted(report.ready) == ["m.onnx-fp32.cpu-t1", "m.onnx-int8-static.cpu-t1"]


def test_cpu_variants_of_a_torch_program(program: Trained, tmp_path: Path) -> None:
    import torch

    sink = RecordingSink()
    report = build_and_profile(_source(program, "torch", "x"), FAST, sink, tmp_path)
    assert sorted(report.ready) == ["m.torch-fp32.cpu-t1", "m.torch-fp32.cpu-t2"]
    module = torch.export.load(str(program.path)).module()
    with torch.inference_mode():
        predicted = module(torch.from_numpy(program.inputs)).argmax(1).numpy()
    expected = float((predicted == program.labels).mean())
    for profile in report.ready.values():
        assert profile.accuracy == pytest.approx(expected, abs=0.005)
        assert sorted(profile.latency_ms) == [1, 64]
        assert min(profile.latency_ms.values()) > 0
    assert report.notes == ["onnxruntime and int8 variants need an ONNX upload"]


@needs_cuda  # may skip: see tests/hardware.py
def test_gpu_variants_of_a_torch_program(program: Trained, tmp_path: Path) -> None:
    sink = RecordingSink()
    settings = dataclasses.replace(FAST, hardware="gpu")
    report = build_and_profile(_source(program, "torch", "x"), settings, sink, tmp_path)
    assert {"m.torch-fp32.gpu", "m.torch-fp16.gpu"} <= set(report.ready)
    for variant, profile in report.ready.items():
        assert profile.profiled_on != "no CUDA device", variant
        assert profile.memory_mb > 0
    fp32 = report.ready["m.torch-fp32.gpu"]
    for variant, profile in report.ready.items():
        assert profile.accuracy == pytest.approx(fp32.accuracy, abs=0.02), variant


# -- the whole registration on SQLite and a folder ---------------------------------------


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    with Catalog(f"sqlite:///{tmp_path / 'catalog.db'}") as opened:
        opened.create_app(
            App("bc", "classification", InputSignature(INPUT, "float32", (-1, 30)), num_classes=2)
        )
        yield opened


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def _context(catalog: Catalog, store: LocalStore, cores: int = 1) -> BuildContext:
    return BuildContext(catalog=catalog, store=store, prices=PriceTable.default(), cores=cores)


def _upload(trained: Trained, **changes: Any) -> Upload:
    upload = Upload(
        app="bc",
        model_id="bc-mlp",
        model_path=trained.path,
        validation_path=trained.validation,
        options=RegistrationOptions(0.02, (1, 8, 64)),
        metadata={"trained_on": "breast cancer"},
    )
    return dataclasses.replace(upload, **changes)


def test_a_registration_from_upload_to_ready_variants(
    mlp: Trained, catalog: Catalog, store: LocalStore
) -> None:
    registration = accept_upload(catalog, store, _upload(mlp))
    assert registration.status == "queued"
    model = catalog.get_model("bc-mlp")
    assert (model.status, model.format, model.output_name) == (QUEUED, "onnx", OUTPUT)
    assert model.metadata == {"trained_on": "breast cancer"}
    assert model.artifact_key == f"models/bc-mlp/{registration.id}/source.onnx"
    seen: list[tuple[str, str]] = []
    ready = run_registration(
        registration.id,
        _context(catalog, store),
        progress=lambda variant, status: seen.append((variant, status)),
    )
    assert "bc-mlp.onnx-fp32.cpu-t1" in [v.id for v in ready]
    assert catalog.get_model("bc-mlp").status == READY
    done = RegistrationStore(catalog).get(registration.id)
    assert done.status == "ready"
    assert done.finished
    variants = {v.id: v for v in catalog.list_variants(model_id="bc-mlp")}
    assert {v.variant: v.status for v in done.variants} == {
        v.id: v.status for v in variants.values()
    }
    fp32 = variants["bc-mlp.onnx-fp32.cpu-t1"]
    assert fp32.profile is not None
    assert fp32.profile.accuracy == pytest.approx(
        onnx_accuracy(mlp.path, mlp.inputs, mlp.labels), abs=0.005
    )
    assert sorted(fp32.profile.latency_ms) == [1, 8, 64]
    assert (fp32.instance_class, fp32.cost_per_hour) == ("m5.2xlarge", 0.048)
    assert fp32.artifact_key == "models/bc-mlp/artifacts/onnx-fp32.onnx"
    assert store.exists(fp32.artifact_key)
    assert ("bc-mlp.onnx-fp32.cpu-t1", READY) in seen
    # deleting removes the model, its variants, its registrations and all its files
    deleted = remove_model(catalog, store, "bc-mlp")
    assert {v.id for v in deleted} == set(variants)
    assert catalog.list_models() == []
    assert catalog.list_variants() == []
    assert RegistrationStore(catalog).all() == []
    assert store.list() == []


def _trace(catalog: Catalog, store: LocalStore) -> tuple[Any, ...]:
    snapshot = catalog.snapshot()
    return (
        snapshot.revision,
        snapshot.models,
        snapshot.variants,
        RegistrationStore(catalog).all(),
        store.list(),
    )


def _lying_validation_set(path: Path, declared_rows: int) -> Path:
    """An .npz whose ``inputs`` header claims ``declared_rows`` rows over 256 bytes."""
    header = {"descr": "<f4", "fortran_order": False, "shape": (declared_rows, 30)}
    with zipfile.ZipFile(path, "w") as archive:
        with archive.open("inputs.npy", "w") as member:
            np.lib.format.write_array_header_1_0(member, header)
            member.write(bytes(256))
        with archive.open("labels.npy", "w") as member:
            np.lib.format.write_array(member, np.zeros(2, np.int64))
    return path


def test_refused_uploads_change_nothing(
    mlp: Trained, catalog: Catalog, store: LocalStore, tmp_path: Path
) -> None:
    accept_upload(catalog, store, _upload(mlp, model_id="taken"))
    before = _trace(catalog, store)
    text = tmp_path / "notes.onnx"
    text.write_text("not a model")
    short = tmp_path / "short.npz"
    np.savez(short, inputs=mlp.inputs, labels=mlp.labels[:-1])
    lying = _lying_validation_set(tmp_path / "lying.npz", declared_rows=2**40)
    refusals: list[tuple[Upload, type[InfaasError]]] = [
        (_upload(mlp, app="nope"), UnknownApp),
        (_upload(mlp, model_id="taken"), Conflict),
        (_upload(mlp, model_id="Not An Id"), InvalidRequest),
        (_upload(mlp, model_path=text), InvalidModel),
        (_upload(mlp, validation_path=short), InvalidValidationSet),
        (_upload(mlp, validation_path=lying), InvalidValidationSet),
        (_upload(mlp, hardware=("tpu",)), InvalidRequest),
        (_upload(mlp, metadata={"big": "x" * 70_000}), InvalidRequest),
    ]
    for upload, error in refusals:
        with pytest.raises(error):
            accept_upload(catalog, store, upload)
        assert _trace(catalog, store) == before


def test_a_failed_record_removes_the_stored_files(
    mlp: Trained, catalog: Catalog, store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise Conflict("model 'bc-mlp' already exists (a racing upload won)")

    monkeypatch.setattr(catalog, "add_model", refuse)
    with pytest.raises(Conflict, match="racing upload"):
        accept_upload(catalog, store, _upload(mlp))
    assert store.list() == []


def test_a_registration_whose_files_are_gone_is_failed_with_the_reason(
    mlp: Trained, catalog: Catalog, store: LocalStore
) -> None:
    registration = accept_upload(catalog, store, _upload(mlp))
    store.delete(catalog.get_model("bc-mlp").artifact_key)
    with pytest.raises(ObjectMissing):
        run_registration(registration.id, _context(catalog, store))
    done = RegistrationStore(catalog).get(registration.id)
    task = done.task("cpu")
    assert task is not None
    assert task.status == "failed"
    assert "source.onnx" in task.error
    assert done.status == "failed"
    assert catalog.get_model("bc-mlp").status == FAILED


def test_a_registration_whose_worker_was_lost_too_often_is_failed(
    mlp: Trained, catalog: Catalog, store: LocalStore
) -> None:
    registration = accept_upload(catalog, store, _upload(mlp))
    registrations = RegistrationStore(catalog)
    for worker in ("w1", "w2", "w3"):  # each started it and died: the broker redelivered
        registrations.start_task(registration.id, "cpu", worker)
    assert run_registration(registration.id, _context(catalog, store)) == []
    done = registrations.get(registration.id)
    task = done.task("cpu")
    assert task is not None
    assert (task.status, task.attempts) == ("failed", 3)
    assert "lost 3 times (last on w3)" in task.error
    assert done.status == "failed"
    assert done.variants == ()
    assert catalog.get_model("bc-mlp").status == FAILED
    assert catalog.list_variants(model_id="bc-mlp") == []


@pytest.mark.parametrize(
    ("status", "attempts", "given_up"),
    [
        ("running", 3, True),
        ("running", 4, True),
        ("running", 2, False),  # lost twice: one more try
        ("queued", 0, False),
        ("failed", 3, False),  # finished (a sweeper or user may send it again)
        ("done", 5, False),
    ],
)
def test_lost_too_often(status: str, attempts: int, given_up: bool) -> None:
    task = TaskProgress(hardware="cpu", status=status, attempts=attempts)
    assert (lost_too_often(task, MAX_REGISTRATION_ATTEMPTS) is not None) is given_up
    assert lost_too_often(None, MAX_REGISTRATION_ATTEMPTS) is None


def test_a_registration_of_a_deleted_model_stops_quietly(
    mlp: Trained, catalog: Catalog, store: LocalStore
) -> None:
    registration = accept_upload(catalog, store, _upload(mlp))
    catalog.delete_model("bc-mlp")
    assert run_registration(registration.id, _context(catalog, store)) == []
    RegistrationStore(catalog).delete_for_model("bc-mlp")
    assert run_registration(registration.id, _context(catalog, store)) == []


def test_generate_and_profile_registers_an_existing_model_again(
    mlp: Trained, catalog: Catalog, store: LocalStore
) -> None:
    accept_upload(catalog, store, _upload(mlp))
    ready = generate_and_profile(
        "bc-mlp",
        dataclasses.replace(_context(catalog, store), batch_sizes=(1, 4), budget_s_per_batch=0.02),
    )
    assert "bc-mlp.onnx-fp32.cpu-t1" in [v.id for v in ready]
    registrations = RegistrationStore(catalog).for_model("bc-mlp")
    assert [r.status for r in registrations] == ["queued", "ready"]
    assert registrations[1].options == RegistrationOptions(0.02, (1, 4))

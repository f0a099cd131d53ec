"""Variant generation: the plan (pure), the int8 verdict (pure), and the artifacts built
from real small models. GPU builders run wherever their library and a GPU are present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from queues.errors import WorkerError
from tests.hardware import (
    NO_ORT_GPU,
    NO_TENSORRT,
    TENSORRT_NO_CUDA,
    cuda_available,
    needs_cuda,
)
from tests.registration_models import Trained, sklearn_onnx, torch_program
from workers.builders import (
    ONNX_FP32,
    ONNX_INT8_DYNAMIC,
    ONNX_INT8_STATIC,
    ONNX_SOURCE,
    TENSORRT_FP16,
    TORCH_PROGRAM,
    Capabilities,
    build_artifact,
    cpu_thread_counts,
    detect_capabilities,
    int8_verdict,
    plan_variants,
)
from workers.quantize import quantized_op_types
from workers.runtimes.base import RuntimeSpec, load_runtime


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return sklearn_onnx(tmp_path_factory.mktemp("mlp"), "bc-mlp", "breast_cancer")


@pytest.fixture(scope="module")
def logreg(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return sklearn_onnx(tmp_path_factory.mktemp("logreg"), "wine-logreg", "wine", kind="logreg")


# -- the plan -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cores", "expected"),
    [(1, [1]), (2, [1, 2]), (3, [1, 2]), (8, [1, 2, 4, 8]), (64, [1, 2, 4, 8])],
)
def test_cpu_thread_counts(cores: int, expected: list[int]) -> None:
    assert cpu_thread_counts(cores) == expected


def test_cpu_onnx_plan_fp32_first_then_int8_against_the_same_threads() -> None:
    caps = Capabilities(quantizable=True, calibration_rows=100)
    plans, notes = plan_variants("m", "onnx", "cpu", 2, caps)
    assert [p.id for p in plans] == [
        "m.onnx-fp32.cpu-t1",
        "m.onnx-fp32.cpu-t2",
        "m.onnx-int8-dynamic.cpu-t1",
        "m.onnx-int8-dynamic.cpu-t2",
        "m.onnx-int8-static.cpu-t1",
        "m.onnx-int8-static.cpu-t2",
    ]
    assert [p.recipe for p in plans] == [ONNX_FP32] * 2 + [ONNX_INT8_DYNAMIC] * 2 + [
        ONNX_INT8_STATIC
    ] * 2
    int8 = [p for p in plans if p.precision == "int8"]
    assert [p.reference for p in int8] == ["m.onnx-fp32.cpu-t1", "m.onnx-fp32.cpu-t2"] * 2
    assert {p.opt for p in int8} == {"dynamic", "static"}
    assert all(p.suffix == ".onnx" for p in plans)
    assert notes == ["torch variants need a torch.export upload"]


def test_cpu_plan_without_quantizable_ops_or_calibration_rows_says_why() -> None:
    plans, notes = plan_variants("m", "onnx", "cpu", 1, Capabilities(quantizable=False))
    assert [p.id for p in plans] == ["m.onnx-fp32.cpu-t1"]
    assert any("int8: the graph has none of MatMul" in n for n in notes)
    plans, notes = plan_variants(
        "m", "onnx", "cpu", 1, Capabilities(quantizable=True, calibration_rows=5)
    )
    assert [p.id for p in plans] == ["m.onnx-fp32.cpu-t1", "m.onnx-int8-dynamic.cpu-t1"]
    assert any("5 validation rows, fewer than the 16" in n for n in notes)


def test_cpu_torch_plan() -> None:
    plans, notes = plan_variants("m", "torch", "cpu", 2, Capabilities())
    assert [(p.id, p.recipe, p.runtime) for p in plans] == [
        ("m.torch-fp32.cpu-t1", TORCH_PROGRAM, "torch"),
        ("m.torch-fp32.cpu-t2", TORCH_PROGRAM, "torch"),
    ]
    assert notes == ["onnxruntime and int8 variants need an ONNX upload"]


def test_gpu_onnx_plan_follows_the_installed_libraries() -> None:
    plans, notes = plan_variants("m", "onnx", "gpu", 8, Capabilities())
    assert plans == []
    assert any("onnxruntime-gpu is not installed" in n for n in notes)
    assert any("TensorRT" in n for n in notes)
    caps = Capabilities(cuda=True, onnx_cuda=True, tensorrt=True)
    plans, _ = plan_variants("m", "onnx", "gpu", 8, caps)
    assert [(p.id, p.recipe) for p in plans] == [
        ("m.onnx-fp32.gpu", ONNX_SOURCE),
        ("m.tensorrt-fp16.gpu", TENSORRT_FP16),
    ]


def test_gpu_torch_plan() -> None:
    plans, notes = plan_variants("m", "torch", "gpu", 8, Capabilities(cuda=False))
    assert plans == []
    assert notes == ["torch CUDA: torch sees no CUDA device on this worker"]
    plans, notes = plan_variants("m", "torch", "gpu", 8, Capabilities(cuda=True, bf16=False))
    assert [p.id for p in plans] == [
        "m.torch-fp32.gpu",
        "m.torch-fp16.gpu",
        "m.torch-fp32-compiled.gpu",
        "m.torch-fp16-compiled.gpu",
    ]
    assert any("bfloat16" in n for n in notes)
    plans, _ = plan_variants("m", "torch", "gpu", 8, Capabilities(cuda=True, bf16=True))
    assert plans[-1].id == "m.torch-bf16-compiled.gpu"
    assert plans[-1].opt == "compiled"


def test_unknown_hardware_or_format_is_an_error() -> None:
    with pytest.raises(WorkerError, match="unknown hardware"):
        plan_variants("m", "onnx", "tpu", 1, Capabilities())
    with pytest.raises(WorkerError, match="unknown model format"):
        plan_variants("m", "tflite", "cpu", 1, Capabilities())


# -- the int8 verdict --------------------------------------------------------------------


def _verdict(fp32_acc: float, int8_acc: float, fp32_ms: float, int8_ms: float) -> str:
    return int8_verdict(
        fp32_accuracy=fp32_acc,
        int8_accuracy=int8_acc,
        fp32_p50_ms=fp32_ms,
        int8_p50_ms=int8_ms,
        max_accuracy_drop=0.05,
        speed_tolerance=0.05,
    )


def test_int8_kept_when_accurate_and_not_slower() -> None:
    assert _verdict(0.98, 0.97, 1.0, 0.6) == ""
    assert _verdict(0.98, 0.94, 1.0, 1.04) == ""  # within both tolerances


def test_int8_dropped_when_accuracy_collapses_or_slower() -> None:
    assert "accuracy 0.0978 is more than 0.05 below fp32's 0.9867" in _verdict(
        0.9867, 0.0978, 1.0, 0.5
    )
    assert "slower than fp32 (p50 2.000 ms against 1.000 ms" in _verdict(0.98, 0.98, 1.0, 2.0)


# -- artifacts ---------------------------------------------------------------------------


def _run(path: Path, precision: str, inputs: np.ndarray) -> np.ndarray:
    spec = RuntimeSpec("onnx", precision, "cpu", 1, input_name="input", output_name="probabilities")
    runtime = load_runtime(spec, path)
    try:
        return runtime.predict(inputs)
    finally:
        runtime.close()


def test_onnx_fp32_and_int8_artifacts_of_an_mlp(mlp: Trained, tmp_path: Path) -> None:
    caps = detect_capabilities("cpu", "onnx", mlp.path, len(mlp.inputs))
    assert caps == Capabilities(quantizable=True, calibration_rows=len(mlp.inputs))
    reference = _run(mlp.path, "fp32", mlp.inputs)
    fp32 = build_artifact(ONNX_FP32, mlp.path, tmp_path, input_name="input")
    np.testing.assert_allclose(_run(fp32, "fp32", mlp.inputs), reference, rtol=1e-4, atol=1e-5)
    dynamic = build_artifact(ONNX_INT8_DYNAMIC, mlp.path, tmp_path, input_name="input")
    assert "MatMulInteger" in quantized_op_types(dynamic)
    static = build_artifact(
        ONNX_INT8_STATIC, mlp.path, tmp_path, input_name="input", calibration=mlp.inputs[:64]
    )
    assert "DequantizeLinear" in quantized_op_types(static)
    for artifact in (dynamic, static):
        quantized = _run(artifact, "int8", mlp.inputs)
        assert quantized.shape == reference.shape
        # int8 changes the numbers a little, not the answers
        assert (quantized.argmax(1) == reference.argmax(1)).mean() >= 0.95
        assert not np.array_equal(quantized, reference)


def test_graphs_without_quantizable_ops_are_not_quantized(logreg: Trained, tmp_path: Path) -> None:
    caps = detect_capabilities("cpu", "onnx", logreg.path, len(logreg.inputs))
    assert not caps.quantizable
    with pytest.raises(WorkerError, match="int8 dynamic"):
        build_artifact(ONNX_INT8_DYNAMIC, logreg.path, tmp_path, input_name="input")


def test_static_int8_needs_calibration_rows(mlp: Trained, tmp_path: Path) -> None:
    with pytest.raises(WorkerError, match="calibration rows"):
        build_artifact(ONNX_INT8_STATIC, mlp.path, tmp_path, input_name="input")


def test_torch_program_artifact_is_the_sanitized_program(tmp_path: Path) -> None:
    trained = torch_program(tmp_path / "src", "wine-torch", "wine", epochs=5)
    artifact = build_artifact(TORCH_PROGRAM, trained.path, tmp_path / "out", input_name="x")
    assert artifact.suffix == ".pt2"
    spec = RuntimeSpec("torch", "fp32", "cpu", 1)
    runtime = load_runtime(spec, artifact)
    try:
        out = runtime.predict(trained.inputs)
    finally:
        runtime.close()
    assert out.shape == (len(trained.inputs), 3)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)


# -- GPU builders: run only where the library and a GPU are present -----------------------


@needs_cuda  # may skip: see tests/hardware.py
def test_gpu_capabilities_see_the_device(mlp: Trained) -> None:
    caps = detect_capabilities("gpu", "onnx", mlp.path, len(mlp.inputs))
    assert caps.cuda


def test_tensorrt_engine_matches_onnx(mlp: Trained, tmp_path: Path) -> None:
    # may skip, in CI too: TensorRT's wheels install only on a CUDA host (tests/hardware.py)
    pytest.importorskip("tensorrt", reason=NO_TENSORRT)
    if not cuda_available():
        pytest.skip(TENSORRT_NO_CUDA)  # may skip in CI: no CUDA device (tests/hardware.py)
    engine = build_artifact(TENSORRT_FP16, mlp.path, tmp_path, input_name="input", max_batch=64)
    spec = RuntimeSpec("tensorrt", "fp16", "gpu", input_name="input", output_name="probabilities")
    runtime = load_runtime(spec, engine)
    try:
        out = runtime.predict(mlp.inputs[:32])
    finally:
        runtime.close()
    reference = _run(mlp.path, "fp32", mlp.inputs[:32])
    assert (out.argmax(1) == reference.argmax(1)).mean() >= 0.95


def test_onnxruntime_cuda_variant_matches_cpu(mlp: Trained, tmp_path: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip(NO_ORT_GPU)  # may skip in CI: only a CUDA host has it (tests/hardware.py)
    artifact = build_artifact(ONNX_SOURCE, mlp.path, tmp_path, input_name="input")
    spec = RuntimeSpec("onnx", "fp32", "gpu", 1, input_name="input", output_name="probabilities")
    runtime = load_runtime(spec, artifact)
    try:
        out = runtime.predict(mlp.inputs)
    finally:
        runtime.close()
    np.testing.assert_allclose(out, _run(mlp.path, "fp32", mlp.inputs), rtol=1e-3, atol=1e-4)

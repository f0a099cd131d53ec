"""The ONNX backend on small scikit-learn models converted with skl2onnx."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.linear_model import LogisticRegression

from queues.errors import InvalidInput, WorkerError
from workers.runtimes.base import RuntimeSpec, load_runtime
from workers.runtimes.onnx_backend import OnnxRuntime

CPU = RuntimeSpec(runtime="onnx", precision="fp32", hardware="cpu", threads=1)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, LogisticRegression]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1).astype(np.int64)
    clf = LogisticRegression(max_iter=500).fit(x, y)
    onx = convert_sklearn(
        clf,
        initial_types=[("input", FloatTensorType([None, 4]))],
        options={id(clf): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    path = tmp_path_factory.mktemp("onnx") / "logreg.onnx"
    path.write_bytes(onx.SerializeToString())
    return path, clf


def _inputs(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 4)).astype(np.float32)


def test_picks_the_probabilities_output(classifier: tuple[Path, LogisticRegression]) -> None:
    path, clf = classifier
    runtime = OnnxRuntime(CPU, path)
    assert runtime.output_name == "probabilities"
    x = _inputs(16)
    out = runtime.predict(x)
    assert out.dtype == np.float32
    assert out.shape == (16, 3)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out, clf.predict_proba(x), atol=1e-4)
    runtime.close()


def test_named_output_is_returned_as_float32_rows(
    classifier: tuple[Path, LogisticRegression],
) -> None:
    path, clf = classifier
    spec = RuntimeSpec("onnx", "fp32", "cpu", input_name="input", output_name="label")
    runtime = OnnxRuntime(spec, path)
    x = _inputs(10)
    out = runtime.predict(x)
    assert out.dtype == np.float32
    assert out.shape == (10,)
    np.testing.assert_array_equal(out.astype(np.int64), clf.predict(x))


def test_unknown_input_or_output_name_is_a_worker_error(
    classifier: tuple[Path, LogisticRegression],
) -> None:
    path, _ = classifier
    with pytest.raises(WorkerError, match="no output 'scores'"):
        OnnxRuntime(RuntimeSpec("onnx", "fp32", "cpu", output_name="scores"), path)
    with pytest.raises(WorkerError, match="no input 'pixels'"):
        OnnxRuntime(RuntimeSpec("onnx", "fp32", "cpu", input_name="pixels"), path)


def test_casts_float64_input(classifier: tuple[Path, LogisticRegression]) -> None:
    path, _ = classifier
    runtime = OnnxRuntime(CPU, path)
    x = _inputs(8)
    np.testing.assert_array_equal(runtime.predict(x.astype(np.float64)), runtime.predict(x))
    np.testing.assert_array_equal(runtime.predict(x.tolist()), runtime.predict(x))


def test_wrong_shape_is_invalid_input(classifier: tuple[Path, LogisticRegression]) -> None:
    path, _ = classifier
    runtime = OnnxRuntime(CPU, path)
    with pytest.raises(InvalidInput, match=r"expects shape \[-1, 4\]"):
        runtime.predict(np.zeros((2, 5), np.float32))
    with pytest.raises(InvalidInput):
        runtime.predict(np.zeros(4, np.float32))


def test_input_signature(classifier: tuple[Path, LogisticRegression]) -> None:
    path, _ = classifier
    assert OnnxRuntime(CPU, path).input_signature() == ("input", "float32", (-1, 4))


def test_bad_artifact_is_a_worker_error(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"this is not an ONNX model, just some bytes")
    with pytest.raises(WorkerError, match=r"could not load model\.onnx as an ONNX model") as info:
        OnnxRuntime(CPU, bad)
    assert info.value.code == "worker_error"
    with pytest.raises(WorkerError, match="does not exist"):
        OnnxRuntime(CPU, tmp_path / "missing.onnx")


def test_gpu_without_onnxruntime_gpu(classifier: tuple[Path, LogisticRegression]) -> None:
    path, _ = classifier
    spec = RuntimeSpec("onnx", "fp32", "gpu")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        runtime = OnnxRuntime(spec, path)
        assert runtime.predict(_inputs(2)).shape == (2, 3)
    else:
        with pytest.raises(WorkerError, match="onnxruntime-gpu is not installed"):
            OnnxRuntime(spec, path)


def test_load_runtime_dispatches_and_close(classifier: tuple[Path, LogisticRegression]) -> None:
    path, _ = classifier
    runtime = load_runtime(RuntimeSpec("onnx", "fp32", "cpu", threads=2), path)
    assert isinstance(runtime, OnnxRuntime)
    assert runtime.memory_bytes() >= 0
    runtime.close()
    with pytest.raises(WorkerError, match="closed"):
        runtime.predict(_inputs(1))


def test_predict_from_four_threads(classifier: tuple[Path, LogisticRegression]) -> None:
    path, _ = classifier
    runtime = OnnxRuntime(CPU, path)
    batches = [_inputs(1 + i % 7, seed=i) for i in range(40)]
    expected = [runtime.predict(b) for b in batches]
    errors: list[BaseException] = []
    mismatches: list[int] = []

    def work(offset: int) -> None:
        try:
            for round_ in range(25):
                i = (offset * 11 + round_) % len(batches)
                if not np.array_equal(runtime.predict(batches[i]), expected[i]):
                    mismatches.append(i)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert not mismatches

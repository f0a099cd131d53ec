"""``memory_mb`` is the resident memory a loaded variant holds: never below its weights,
int8 below fp32 by about its weights, not by the noise of who was loaded first."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from registry.types import Profile
from workers.builders import ONNX_FP32, ONNX_INT8_DYNAMIC, build_artifact
from workers.profiler import loaded_bytes, profile_variant
from workers.runtimes.base import Runtime, RuntimeSpec, load_runtime
from workers.runtimes.onnx_backend import initializer_bytes

MIB = 2**20


class Holding:
    """A runtime that holds ``size`` bytes once it has run a batch (a known answer)."""

    spec = RuntimeSpec("onnx", "fp32", "cpu")

    def __init__(self, size: int) -> None:
        self.size = size
        self.held: np.ndarray | None = None

    def predict(self, batch: np.ndarray) -> np.ndarray:
        self.held = np.ones(self.size, dtype=np.uint8)  # touched, so resident
        return np.zeros((len(batch), 2), dtype=np.float32)

    def memory_bytes(self) -> int:
        return 0

    def close(self) -> None:
        self.held = None


def test_loaded_bytes_measures_what_a_copy_holds() -> None:
    sample = np.zeros((4, 3), dtype=np.float32)
    held = loaded_bytes(lambda: Holding(16 * MIB), sample)
    assert 15 * MIB <= held <= 20 * MIB
    assert loaded_bytes(lambda: Holding(0), sample) < 2 * MIB


@dataclass(frozen=True)
class Mlp:
    path: Path
    inputs: np.ndarray
    labels: np.ndarray


FEATURES, HIDDEN, CLASSES = 64, 512, 10


@pytest.fixture(scope="module")
def wide_mlp(tmp_path_factory: pytest.TempPathFactory) -> Mlp:
    """A 64-512-512-10 MLP with random weights (memory does not care how well it was
    trained): ~1.2 MB of fp32 weights outweigh a session's own few hundred kB."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    sizes = (FEATURES, HIDDEN, HIDDEN, CLASSES)
    nodes, weights, last = [], [], "input"
    for i, (rows, cols) in enumerate(pairwise(sizes)):
        w = (rng.standard_normal((rows, cols)) / np.sqrt(rows)).astype(np.float32)
        weights += [
            numpy_helper.from_array(w, f"w{i}"),
            numpy_helper.from_array(np.zeros(cols, np.float32), f"b{i}"),
        ]
        nodes += [
            helper.make_node("MatMul", [last, f"w{i}"], [f"m{i}"]),
            helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"]),
        ]
        last = f"a{i}"
        if cols != CLASSES:
            nodes.append(helper.make_node("Relu", [last], [f"r{i}"]))
            last = f"r{i}"
    nodes.append(helper.make_node("Softmax", [last], ["probabilities"], axis=1))
    graph = helper.make_graph(
        nodes,
        "wide-mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, FEATURES])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, CLASSES])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    path = tmp_path_factory.mktemp("memory") / "wide-mlp.onnx"
    onnx.save(model, str(path))
    inputs = rng.standard_normal((64, FEATURES)).astype(np.float32)
    return Mlp(path, inputs, rng.integers(0, CLASSES, 64))


def _profile(model: Mlp, artifact: Path, precision: str, threads: int) -> Profile:
    spec = RuntimeSpec("onnx", precision, "cpu", threads, input_name="input")
    return profile_variant(
        lambda: load_runtime(spec, artifact),
        artifact.stat().st_size,
        model.inputs,
        model.labels,
        batch_sizes=(1, 64),
        budget_s_per_batch=0.01,
        min_runs_per_batch=3,
    )


def test_fp32_holds_its_weights_and_int8_less_of_the_same_order(
    wide_mlp: Mlp, tmp_path: Path
) -> None:
    fp32 = build_artifact(ONNX_FP32, wide_mlp.path, tmp_path, input_name="input")
    int8 = build_artifact(ONNX_INT8_DYNAMIC, wide_mlp.path, tmp_path, input_name="input")
    weights = {"fp32": initializer_bytes(fp32), "int8": initializer_bytes(int8)}
    assert weights["int8"] < weights["fp32"] / 3  # int8 weights are a quarter, plus scales
    # the order the demo profiles in: fp32 first (it paid the process's first-load costs)
    profiles = {
        (precision, threads): _profile(wide_mlp, path, precision, threads)
        for precision, path in (("fp32", fp32), ("int8", int8))
        for threads in (1, 2)
    }
    for (precision, _), profile in profiles.items():
        assert profile.memory_mb * MIB >= weights[precision]
        assert profile.memory_mb * MIB >= profile.artifact_bytes
    for threads in (1, 2):
        full, small = profiles["fp32", threads].memory_mb, profiles["int8", threads].memory_mb
        assert full / 8 <= small < full, (threads, full, small)


def test_onnx_runtime_reports_its_weights(wide_mlp: Mlp) -> None:
    runtime: Runtime = load_runtime(RuntimeSpec("onnx", "fp32", "cpu"), wide_mlp.path)
    try:
        weights = runtime.memory_bytes()
    finally:
        runtime.close()
    sizes = (FEATURES, HIDDEN, HIDDEN, CLASSES)
    floats = sum(rows * cols + cols for rows, cols in pairwise(sizes))
    assert weights == 4 * floats

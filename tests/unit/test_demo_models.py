"""The demo app's models, as the run's one build made them (tests/demo_build.py: trained
at most once per version of their code, about half a minute on two cores). How long the
build takes is a figure for a benchmark, not a test."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from infaas import demo_models
from infaas.demo_models import DemoSet, load_validation, prepare_demo_models
from tests.demo_build import DemoBuild
from workers.profiler import measure_latency, top1_accuracy
from workers.runtimes.base import RuntimeSpec
from workers.runtimes.onnx_backend import OnnxRuntime

pytestmark = pytest.mark.slow

# What prepare_demo_models promises (seed 0), top-1 on the held-out quarter of digits.
ACCURACY_RANGES = {
    "digits-logreg": (0.95, 0.975),
    "digits-mlp-small": (0.965, 0.99),
    "digits-mlp-large": (0.965, 0.99),
    "digits-svc": (0.975, 0.995),
    "digits-forest": (0.97, 0.995),
    "digits-cnn": (0.985, 1.0),
}
CPU1 = RuntimeSpec("onnx", "fp32", "cpu", threads=1)


@pytest.fixture(scope="module")
def built(demo_build: DemoBuild) -> tuple[DemoSet, Path, float]:
    assert any("digits-cnn" in m for m in demo_build.messages)
    return demo_build.demo, demo_build.folder, demo_build.build_s


@pytest.fixture(scope="module")
def accuracies(built: tuple[DemoSet, Path, float]) -> dict[str, float]:
    demo, _, _ = built
    inputs, labels = load_validation(demo.validation_path)
    result = {}
    for model in demo.models:
        runtime = OnnxRuntime(CPU1, model.path)
        result[model.id] = top1_accuracy(runtime.predict, inputs, labels)
        runtime.close()
    return result


def test_build_trains_every_model_and_says_so(
    built: tuple[DemoSet, Path, float], demo_build: DemoBuild
) -> None:
    demo, out, elapsed = built
    assert elapsed > 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["build_seconds"] >= 0
    messages = demo_build.messages
    for model in demo.models:
        assert any(m.startswith(f"{model.id}: trained and exported") for m in messages), model.id
    assert any(m.startswith("demo models ready in") for m in messages), messages


def test_models_are_valid_onnx(built: tuple[DemoSet, Path, float]) -> None:
    demo, out, _ = built
    assert len(demo.models) >= 6
    assert [m.id for m in demo.models] == list(ACCURACY_RANGES)
    for model in demo.models:
        assert model.path == out / f"{model.id}.onnx"
        assert model.description
        onnx.checker.check_model(onnx.load(str(model.path)))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["code_version"] == demo_models.CODE_VERSION
    assert {m["id"] for m in manifest["models"]} == set(ACCURACY_RANGES)


def test_validation_split(built: tuple[DemoSet, Path, float]) -> None:
    demo, _, _ = built
    inputs, labels = load_validation(demo.validation_path)
    with np.load(demo.validation_path) as raw:
        assert raw["inputs"].dtype == np.float32
        assert raw["labels"].dtype == np.int64
    assert inputs.shape == (450, 64)
    assert labels.shape == (450,)
    assert inputs.min() == 0.0
    assert inputs.max() == 16.0  # raw pixels, no scaling outside the graphs
    assert set(labels.tolist()) == set(range(demo.num_classes))


def test_all_models_share_one_input_and_output_probabilities(
    built: tuple[DemoSet, Path, float],
) -> None:
    demo, _, _ = built
    inputs, _ = load_validation(demo.validation_path)
    for model in demo.models:
        runtime = OnnxRuntime(CPU1, model.path)
        assert runtime.input_signature() == (demo.input_name, "float32", (-1, 64))
        assert runtime.output_name == model.output_name
        probs = runtime.predict(inputs[:37])
        assert probs.shape == (37, demo.num_classes), model.id
        assert probs.dtype == np.float32
        assert (probs >= 0).all(), model.id
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4, err_msg=model.id)
        runtime.close()


def test_accuracies_are_as_promised_and_distinct(accuracies: dict[str, float]) -> None:
    for model_id, (low, high) in ACCURACY_RANGES.items():
        assert low <= accuracies[model_id] <= high, (model_id, accuracies[model_id])
    for a, b in itertools.combinations(accuracies, 2):
        assert accuracies[a] != accuracies[b], (a, b, accuracies[a])


def test_latencies_span_two_orders_of_magnitude(built: tuple[DemoSet, Path, float]) -> None:
    demo, _, _ = built
    inputs, _ = load_validation(demo.validation_path)
    p50 = {}
    for model in demo.models:
        runtime = OnnxRuntime(CPU1, model.path)
        p50[model.id] = measure_latency(runtime.predict, inputs[:1], budget_s=0.2).p50_ms
        runtime.close()
    # medians, so a busy machine moves both ends alike; no absolute figure
    assert min(p50.values()) / max(p50.values()) <= 1 / 100, p50
    assert max(p50, key=lambda k: p50[k]) == "digits-cnn"


def test_second_call_is_cached(built: tuple[DemoSet, Path, float]) -> None:
    demo, out, _ = built
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    messages: list[str] = []
    again = prepare_demo_models(out, progress=messages.append)
    assert messages == [f"demo models in {out} are up to date"]  # trained nothing
    assert again == demo
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes


def test_cache_notices_damage_and_other_seeds(
    built: tuple[DemoSet, Path, float], tmp_path: Path
) -> None:
    _, out, _ = built
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    assert demo_models._cached(copy, 0)
    assert not demo_models._cached(copy, 1)
    damaged = copy / "digits-logreg.onnx"
    damaged.write_bytes(damaged.read_bytes()[:-1])
    assert not demo_models._cached(copy, 0)
    (copy / "manifest.json").unlink()
    assert not demo_models._cached(copy, 0)

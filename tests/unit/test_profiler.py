"""The profiler: pure helpers on hand-made numbers, then a real (tiny) ONNX variant."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.linear_model import LogisticRegression

from queues.errors import WorkerError
from workers import profiler
from workers.profiler import (
    MEMORY_LOADS,
    LatencyStats,
    choose_best_batch,
    fit_latency,
    measure_latency,
    profile_variant,
    top1_accuracy,
)
from workers.runtimes.base import Runtime, RuntimeSpec
from workers.runtimes.onnx_backend import OnnxRuntime

# -- fit_latency ------------------------------------------------------------------------


def test_fit_latency_exact_line() -> None:
    slope, intercept = fit_latency({b: 0.5 * b + 2.0 for b in (1, 4, 8, 16, 32)})
    assert slope == pytest.approx(0.5)
    assert intercept == pytest.approx(2.0)


def test_fit_latency_two_points_and_one_point() -> None:
    assert fit_latency({2: 3.0, 4: 7.0}) == pytest.approx((2.0, -1.0))
    assert fit_latency({8: 4.2}) == (0.0, 4.2)
    with pytest.raises(ValueError, match="no latencies"):
        fit_latency({})


def test_fit_latency_noisy_matches_least_squares() -> None:
    rng = np.random.default_rng(3)
    sizes = [1, 2, 4, 8, 16, 32, 64]
    data = {b: 0.8 * b + 5.0 + float(rng.normal(0, 0.3)) for b in sizes}
    slope, intercept = fit_latency(data)
    ref_slope, ref_intercept = np.polyfit(sizes, [data[b] for b in sizes], 1)
    assert slope == pytest.approx(ref_slope)
    assert intercept == pytest.approx(ref_intercept)
    assert slope == pytest.approx(0.8, abs=0.05)
    assert intercept == pytest.approx(5.0, abs=0.5)


# -- choose_best_batch -------------------------------------------------------------------


def test_choose_best_batch_saturating_throughput() -> None:
    # throughput: 1000, 2000, 2105, 2133, 2148 queries/s
    latency = {1: 1.0, 4: 2.0, 8: 3.8, 16: 7.5, 32: 14.9}
    assert choose_best_batch(latency) == 8  # 2105 is within 5 % of 2148, 2000 is not
    assert choose_best_batch(latency, tolerance=0.01) == 16
    assert choose_best_batch(latency, tolerance=0.0) == 32


def test_choose_best_batch_extremes() -> None:
    assert choose_best_batch({1: 5.0, 8: 5.0, 32: 5.0}) == 32  # batching is free
    assert choose_best_batch({1: 1.0, 8: 10.0, 32: 50.0}) == 1  # batching only hurts
    assert choose_best_batch({16: 3.0}) == 16
    with pytest.raises(ValueError, match="no latencies"):
        choose_best_batch({})
    with pytest.raises(ValueError, match="tolerance"):
        choose_best_batch({1: 1.0}, tolerance=1.5)


# -- measure_latency ---------------------------------------------------------------------


def test_measure_latency_of_a_known_sleep() -> None:
    calls = 0

    def predict(batch: np.ndarray) -> np.ndarray:
        nonlocal calls
        calls += 1
        time.sleep(0.002)
        return batch

    stats = measure_latency(predict, np.zeros((1, 4)), min_runs=20, budget_s=0.1, warmup=3)
    assert isinstance(stats, LatencyStats)
    # a busy machine only makes a sleep longer: no upper bound on its latency here (the
    # exact figures are checked on a clock the test drives, below)
    assert stats.p50_ms >= 2.0
    assert stats.p99_ms >= stats.p50_ms
    assert 20 <= stats.runs <= 51  # 0.1 s of calls of 2 ms or more, never below min_runs
    assert calls == stats.runs + 3


def test_measure_latency_on_a_clock_the_test_drives(monkeypatch: pytest.MonkeyPatch) -> None:
    """Exact figures: each call takes 2 ms of a fake clock, the 10th and 20th take 12 ms."""
    now_ns = 0
    calls = 0

    def predict(batch: np.ndarray) -> np.ndarray:
        nonlocal now_ns, calls
        calls += 1
        timed = calls - 3  # after the three warm-up calls
        now_ns += 12_000_000 if timed in (10, 20) else 2_000_000
        return batch

    monkeypatch.setattr(profiler, "time", SimpleNamespace(perf_counter_ns=lambda: now_ns))
    stats = measure_latency(predict, np.zeros((1, 4)), min_runs=20, budget_s=0.1, warmup=3)
    # 0.1 s of budget: 18 calls of 2 ms and 2 of 12 ms are 60 ms, then 20 more of 2 ms
    assert stats.runs == 40
    assert calls == 43
    assert stats.p50_ms == pytest.approx(2.0)
    assert stats.p99_ms == pytest.approx(float(np.percentile([2.0] * 38 + [12.0] * 2, 99)))


def test_measure_latency_run_limits() -> None:
    def instant(batch: np.ndarray) -> np.ndarray:
        return batch

    assert measure_latency(instant, np.zeros(1), max_runs=50, budget_s=10.0).runs == 50
    assert measure_latency(instant, np.zeros(1), min_runs=7, max_runs=7, budget_s=0.0).runs == 7
    assert measure_latency(instant, np.zeros(1), min_runs=5, budget_s=0.0).runs == 5
    with pytest.raises(ValueError, match="min_runs"):
        measure_latency(instant, np.zeros(1), min_runs=10, max_runs=5)


# -- top1_accuracy -----------------------------------------------------------------------


def test_top1_accuracy_on_a_fake_model() -> None:
    inputs = np.arange(10, dtype=np.float32).reshape(10, 1) % 4
    seen: list[int] = []

    def predict(batch: np.ndarray) -> np.ndarray:
        seen.append(len(batch))
        rows: np.ndarray = np.eye(4, dtype=np.float32)[batch[:, 0].astype(int)]
        return rows

    labels = inputs[:, 0].astype(np.int64)
    labels[[2, 5, 9]] = (labels[[2, 5, 9]] + 1) % 4  # three wrong
    assert top1_accuracy(predict, inputs, labels, batch=3) == pytest.approx(0.7)
    assert seen == [3, 3, 3, 1]
    with pytest.raises(ValueError, match="labels"):
        top1_accuracy(predict, inputs, labels[:5])
    with pytest.raises(ValueError, match="no validation inputs"):
        top1_accuracy(predict, inputs[:0], labels[:0])


# -- profile_variant on a tiny ONNX model ----------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(200, 6)).astype(np.float32)
    y = (x[:, 0] - x[:, 1] + rng.normal(0, 0.7, size=200) > 0).astype(np.int64)
    clf = LogisticRegression().fit(x, y)
    onx = convert_sklearn(
        clf,
        initial_types=[("input", FloatTensorType([None, 6]))],
        options={"zipmap": False},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    path.write_bytes(onx.SerializeToString())
    return path, x, y


def test_profile_variant_on_a_tiny_onnx_model(
    tiny_model: tuple[Path, np.ndarray, np.ndarray],
) -> None:
    path, x, y = tiny_model
    spec = RuntimeSpec("onnx", "fp32", "cpu", threads=1)
    loaded: list[OnnxRuntime] = []

    def load() -> Runtime:
        runtime = OnnxRuntime(spec, path)
        loaded.append(runtime)
        return runtime

    reference = OnnxRuntime(spec, path)
    expected_accuracy = float((reference.predict(x).argmax(axis=1) == y).mean())
    assert 0.6 < expected_accuracy < 1.0

    sizes = (1, 4, 8, 16, 32)
    profile = profile_variant(
        load, path.stat().st_size, x, y, batch_sizes=sizes, budget_s_per_batch=0.05
    )
    assert profile.accuracy == pytest.approx(expected_accuracy)
    assert profile.metric == "top1"
    assert sorted(profile.latency_ms) == list(sizes)
    assert sorted(profile.latency_p99_ms) == list(sizes)
    for b in sizes:
        assert 0.0 < profile.latency_ms[b] <= profile.latency_p99_ms[b]
    assert profile.saturation_qps == pytest.approx(
        max(1000.0 * b / lat for b, lat in profile.latency_ms.items())
    )
    assert profile.saturation_qps > 0
    assert profile.max_batch == max(sizes)
    assert profile.best_batch == choose_best_batch(profile.latency_ms)
    slope, intercept = fit_latency(profile.latency_ms)
    assert (profile.latency_slope_ms, profile.latency_intercept_ms) == (slope, intercept)
    assert profile.artifact_bytes == path.stat().st_size
    assert profile.memory_mb >= profile.artifact_bytes / 2**20
    assert profile.load_ms > 0
    assert profile.cores >= 1
    assert profile.profiled_on
    # The profiled copy and the copies its memory is measured on are closed at the end.
    assert len(loaded) == 1 + MEMORY_LOADS
    for runtime in loaded:
        with pytest.raises(WorkerError, match="closed"):
            runtime.predict(x[:1])


def test_profile_variant_with_fewer_rows_than_the_batch(
    tiny_model: tuple[Path, np.ndarray, np.ndarray],
) -> None:
    path, x, y = tiny_model
    spec = RuntimeSpec("onnx", "fp32", "cpu")
    profile = profile_variant(
        lambda: OnnxRuntime(spec, path),
        path.stat().st_size,
        x[:5],
        y[:5],
        batch_sizes=(1, 32),
        budget_s_per_batch=0.02,
    )
    assert sorted(profile.latency_ms) == [1, 32]
    assert 0.0 <= profile.accuracy <= 1.0


def test_profile_variant_runs_each_batch_size_at_least_min_runs_times(
    tiny_model: tuple[Path, np.ndarray, np.ndarray],
) -> None:
    """With a budget already spent after the first run, ``min_runs_per_batch`` alone sets
    how many timed runs each batch size gets (plus measure_latency's warm-up)."""
    path, x, y = tiny_model
    spec = RuntimeSpec("onnx", "fp32", "cpu", threads=1)
    calls: dict[int, int] = {}

    class Counting(OnnxRuntime):
        def predict(self, batch: np.ndarray) -> np.ndarray:
            calls[len(batch)] = calls.get(len(batch), 0) + 1
            return super().predict(batch)

    def runs_per_size(min_runs: int) -> dict[int, int]:
        calls.clear()
        profile_variant(
            lambda: Counting(spec, path),
            path.stat().st_size,
            x,
            y,
            batch_sizes=(4, 16),  # sizes the accuracy pass (200 rows in 64s) never uses
            budget_s_per_batch=0.0,
            min_runs_per_batch=min_runs,
        )
        return {b: calls[b] for b in (4, 16)}

    warmup = 3  # measure_latency's untimed calls before timing
    memory = MEMORY_LOADS  # the largest size once per copy its memory is measured on
    assert runs_per_size(2) == {4: 2 + warmup, 16: 2 + warmup + memory}
    assert runs_per_size(9) == {4: 9 + warmup, 16: 9 + warmup + memory}
    with pytest.raises(ValueError, match="min_runs"):
        runs_per_size(0)


def test_profile_variant_takes_an_accuracy_measured_already(
    tiny_model: tuple[Path, np.ndarray, np.ndarray],
) -> None:
    """A variant that differs from a profiled one only in its thread count computes the
    same outputs: given that accuracy, the profile reports it and never runs the
    validation set through the model (the accuracy pass predicts in batches of 64)."""
    path, x, y = tiny_model
    spec = RuntimeSpec("onnx", "fp32", "cpu", threads=2)
    sizes_seen: set[int] = set()

    class Counting(OnnxRuntime):
        def predict(self, batch: np.ndarray) -> np.ndarray:
            sizes_seen.add(len(batch))
            return super().predict(batch)

    def profile(accuracy: float | None) -> float:
        sizes_seen.clear()
        return profile_variant(
            lambda: Counting(spec, path),
            path.stat().st_size,
            x,
            y,
            batch_sizes=(1, 4),
            budget_s_per_batch=0.0,
            min_runs_per_batch=1,
            accuracy=accuracy,
        ).accuracy

    measured = profile(None)
    assert 64 in sizes_seen  # the accuracy pass ran
    assert profile(measured) == measured
    assert 64 not in sizes_seen  # it did not run again

"""Batch grouping, input conversion and identifiers."""

from __future__ import annotations

import numpy as np
import pytest

from api_gateway.inputs import to_batch
from queues.errors import BatchTooLarge, EmptyBatch, InvalidInput, InvalidRequest
from registry.names import check_id, parse_variant_id, variant_id
from registry.types import InputSignature
from workers.batching import batch_wait_ms, consumer_prefetch, group_rows

SIG = InputSignature("input", "float32", (-1, 4))


@pytest.mark.parametrize(
    ("sizes", "limit", "expected"),
    [
        ([1, 1, 1], 2, [(0, 2), (2, 3)]),
        ([1] * 5, 8, [(0, 5)]),
        ([3, 3, 3], 6, [(0, 2), (2, 3)]),
        ([10, 1], 4, [(0, 1), (1, 2)]),  # an oversized query runs on its own
        ([], 4, []),
    ],
)
def test_group_rows(sizes: list[int], limit: int, expected: list[tuple[int, int]]) -> None:
    assert [(g.start, g.stop) for g in group_rows(sizes, limit)] == expected


def test_group_rows_refuses_a_zero_limit() -> None:
    with pytest.raises(ValueError, match="max_rows"):
        group_rows([1], 0)


@pytest.mark.parametrize(("max_batch", "expected"), [(0, 1), (8, 8), (1000, 256)])
def test_consumer_prefetch_is_bounded(max_batch: int, expected: int) -> None:
    assert consumer_prefetch(max_batch) == expected


def test_to_batch_accepts_the_app_shape() -> None:
    batch = to_batch([[1, 2, 3, 4], [5, 6, 7, 8]], SIG, 64)
    assert batch.shape == (2, 4)
    assert batch.dtype == np.float32


@pytest.mark.parametrize(
    ("inputs", "error", "match"),
    [
        ([], EmptyBatch, "empty"),
        ([[1, 2, 3]], InvalidInput, r"expects \[n, 4\]"),
        ([[1, 2, 3, 4], [1, 2]], InvalidInput, "numbers of shape"),
        ([["a", "b", "c", "d"]], InvalidInput, "numbers of shape"),
        ([[1, 2, 3, float("nan")]], InvalidInput, "NaN"),
        ([[0, 0, 0, 0]] * 3, BatchTooLarge, "at most 2"),
    ],
)
def test_to_batch_refuses_bad_inputs(
    inputs: list[object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        to_batch(inputs, SIG, 2)


@pytest.mark.parametrize("good", ["digits", "a", "resnet-50", "x" * 64])
def test_good_ids(good: str) -> None:
    assert check_id("app", good) == good


@pytest.mark.parametrize("bad", ["", "Digits", "-a", "a-", "a_b", "a.b", "x" * 65])
def test_bad_ids(bad: str) -> None:
    with pytest.raises(InvalidRequest, match="not valid"):
        check_id("app", bad)


def test_variant_ids_round_trip() -> None:
    vid = variant_id("digits-mlp", "onnx", "int8", "cpu", threads=2, opt="static")
    assert vid == "digits-mlp.onnx-int8-static.cpu-t2"
    parsed = parse_variant_id(vid)
    assert (parsed.model, parsed.runtime, parsed.precision, parsed.opt) == (
        "digits-mlp",
        "onnx",
        "int8",
        "static",
    )
    assert (parsed.hardware, parsed.threads) == ("cpu", 2)
    assert variant_id("resnet50", "torch", "fp16", "gpu", opt="compiled") == (
        "resnet50.torch-fp16-compiled.gpu"
    )


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("m", "caffe", "fp32", "cpu", 1), "runtime"),
        (("m", "onnx", "fp32", "tpu", 1), "hardware"),
        (("m", "onnx", "fp32", "cpu", 0), "thread count"),
    ],
)
def test_bad_variant_ids(args: tuple[str, str, str, str, int], match: str) -> None:
    with pytest.raises(InvalidRequest, match=match):
        variant_id(*args)
    with pytest.raises(InvalidRequest, match="not of the form"):
        parse_variant_id("not-a-variant")


def _sublinear(batch: int) -> float:
    return 1.0 + 0.1 * batch  # 1.1 ms alone, 1.8 ms for 8: batching pays


def _wait(**overrides: object) -> float:
    args: dict[str, object] = {
        "now_ms": 1000.0,
        "rows": 2,
        "limit": 8,
        "slo_deadlines_ms": [],
        "latency_ms": _sublinear,
        "arrival_qps": 3000.0,
        "max_wait_ms": 2.0,
    }
    args.update(overrides)
    return batch_wait_ms(**args)  # type: ignore[arg-type]


def test_batch_wait_fills_at_the_arrival_rate_up_to_the_cap() -> None:
    assert _wait() == pytest.approx(2.0)  # 6 more rows at 3,000/s need 2 ms
    assert _wait(arrival_qps=6000.0) == pytest.approx(1.0)
    assert _wait(max_wait_ms=0.5, arrival_qps=4000.0) == pytest.approx(0.5)


@pytest.mark.parametrize(
    "overrides",
    [
        {"rows": 8},
        {"arrival_qps": 0.0},
        {"max_wait_ms": 0.0},
        {"arrival_qps": 300.0},  # less than one arrival expected within the wait
        {"latency_ms": lambda b: 1.0 * b},  # per-input cost flat: waiting only costs
        {"latency_ms": lambda b: 0.01 + 0.001 * b},  # tiny model: saves µs, costs ms
    ],
)
def test_no_wait_when_full_idle_disabled_or_not_worth_it(overrides: dict[str, object]) -> None:
    assert _wait(**overrides) == 0.0


def test_wait_never_costs_the_earliest_objective() -> None:
    # earliest objective at 1004.5 ms, a full batch takes 1.8 ms: at most 2.7 ms of waiting
    assert _wait(slo_deadlines_ms=[1010.0, 1004.5, 0.0], max_wait_ms=5.0) == pytest.approx(2.0)
    assert _wait(slo_deadlines_ms=[1003.0], max_wait_ms=5.0) == pytest.approx(1.2)
    assert _wait(slo_deadlines_ms=[1001.0]) == 0.0

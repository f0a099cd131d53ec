"""Queue names, queue arguments and the wire format of queries and replies."""

from __future__ import annotations

import numpy as np
import pytest

from queues import topology
from queues.errors import (
    DeadlineExceeded,
    InfaasError,
    NoEligibleVariant,
    QueueFull,
    WorkerError,
    error_codes,
    error_from_code,
)
from queues.messages import (
    Query,
    Reply,
    decode_query,
    decode_reply,
    encode_query,
    encode_reply,
    error_reply,
)


@pytest.mark.parametrize(
    ("app", "variant", "expected"),
    [
        ("digits", "digits-mlp.onnx-fp32.cpu-t1", "infaas.digits.digits-mlp.onnx-fp32.cpu-t1"),
        ("a", "m.torch-fp16-compiled.gpu", "infaas.a.m.torch-fp16-compiled.gpu"),
    ],
)
def test_variant_queue_names(app: str, variant: str, expected: str) -> None:
    assert topology.variant_queue("infaas", app, variant) == expected
    assert topology.parse_variant_queue("infaas", expected) == (app, variant)


@pytest.mark.parametrize(
    "name",
    ["infaas.digits.batch", "infaas.control.cpu", "other.digits.v", "infaas.digits", "infaas."],
)
def test_other_queues_are_not_variant_queues(name: str) -> None:
    assert topology.parse_variant_queue("infaas", name) is None


@pytest.mark.parametrize("bad", ["Digits", "has space", "", "a/b", "x" * 300])
def test_bad_queue_parts_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="cannot be part of a queue name"):
        topology.variant_queue("infaas", bad, "v")


@pytest.mark.parametrize("bad", ["", "UPPER", "-x", "a.b", "x" * 40])
def test_bad_prefixes_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="queue prefix"):
        topology.check_prefix(bad)


def test_batch_and_control_queues() -> None:
    assert topology.batch_queue("p", "digits") == "p.digits.batch"
    assert topology.control_queue("p", "gpu") == "p.control.gpu.quorum"
    assert topology.control_queue_arguments() == {"x-queue-type": "quorum"}
    assert topology.parse_variant_queue("p", topology.control_queue("p", "cpu")) is None
    assert topology.dead_letter_exchange("p") == "p.dlx"


def test_variant_queue_arguments_bound_length_and_dead_letter() -> None:
    args = topology.variant_queue_arguments("p", 500)
    assert args == {
        "x-max-length": 500,
        "x-overflow": "reject-publish",
        "x-dead-letter-exchange": "p.dlx",
    }
    with pytest.raises(ValueError, match="at least 1"):
        topology.variant_queue_arguments("p", 0)


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64", "uint8"])
def test_query_round_trip(dtype: str) -> None:
    inputs = np.arange(12, dtype=dtype).reshape(3, 4)
    query = Query("rid", "digits", "v", inputs, deadline_ms=1_700_000_000_123.456, sent_ms=5.5)
    body, headers = encode_query(query)
    assert all(not isinstance(v, float) for v in headers.values())  # AMQP-safe headers
    back = decode_query(body, headers)
    assert back.request_id == "rid"
    assert back.variant == "v"
    np.testing.assert_array_equal(back.inputs, inputs)
    assert back.inputs.dtype == np.dtype(dtype)
    assert back.deadline_ms == pytest.approx(query.deadline_ms, abs=1e-3)
    assert back.sent_ms == pytest.approx(5.5)


def test_reply_round_trip_ok_and_error() -> None:
    outputs = np.random.default_rng(0).random((2, 10), dtype=np.float32)
    reply = Reply("r", True, outputs, model_ms=1.25, worker="w", batch_size=7, queued_ms=0.5)
    back = decode_reply(*encode_reply(reply))
    assert back.ok
    assert back.outputs is not None
    np.testing.assert_array_equal(back.outputs, outputs)
    assert (back.model_ms, back.worker, back.batch_size) == (1.25, "w", 7)
    err = decode_reply(*encode_reply(error_reply("r", "deadline_exceeded", "late", "w")))
    assert not err.ok
    assert err.outputs is None
    assert (err.error_code, err.error_message) == ("deadline_exceeded", "late")


@pytest.mark.parametrize(
    ("headers", "match"),
    [
        ({"dtype": "object", "shape": [1]}, "unsupported dtype"),
        ({"dtype": "float32", "shape": [2, 4]}, "holds"),
    ],
)
def test_malformed_query_is_refused(headers: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        decode_query(np.zeros(4, dtype=np.float32).tobytes(), headers)


def test_error_codes_round_trip_through_replies() -> None:
    assert isinstance(error_from_code("queue_full", "m"), QueueFull)
    assert isinstance(error_from_code("deadline_exceeded", "m"), DeadlineExceeded)
    assert isinstance(error_from_code("no_eligible_variant", "m"), NoEligibleVariant)
    unknown = error_from_code("something_new", "boom")
    assert isinstance(unknown, WorkerError)
    assert "something_new" in unknown.message


def test_error_codes_are_unique_and_carry_http_statuses() -> None:
    codes = error_codes()
    assert codes["queue_full"] == 429
    assert codes["no_worker"] == 503
    assert codes["unknown_app"] == 404
    assert all(400 <= status < 600 for status in codes.values())
    err = QueueFull("full")
    assert err.headers["Retry-After"] == "1"
    assert err.to_dict() == {"error": {"code": "queue_full", "message": "full"}}
    assert issubclass(QueueFull, InfaasError)

"""The messages gateway and workers exchange, encoded without JSON on the hot path.

A query travels as the raw bytes of its input array (C order) with its shape, dtype,
ids and deadline in the AMQP headers; the reply carries the output array the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

CONTENT_TYPE = "application/x-infaas-ndarray"
ALLOWED_DTYPES = frozenset({"float32", "float64", "int64", "int32", "uint8", "float16"})


def now_ms() -> float:
    """Wall-clock milliseconds since the epoch (deadlines cross processes)."""
    return time.time() * 1000.0


@dataclass(frozen=True, slots=True)
class Query:
    request_id: str
    app: str
    variant: str
    inputs: np.ndarray
    deadline_ms: float
    sent_ms: float
    slo_deadline_ms: float = 0.0  # when the latency objective runs out; 0: no objective


@dataclass(frozen=True, slots=True)
class Reply:
    request_id: str
    ok: bool
    outputs: np.ndarray | None
    error_code: str = ""
    error_message: str = ""
    model_ms: float = 0.0
    worker: str = ""
    batch_size: int = 0
    queued_ms: float = 0.0


def _to_us(value_ms: float) -> int:
    """AMQP header tables carry no floats in every client (pika has none): send integer µs."""
    return round(value_ms * 1000.0)


def _from_us(value: object) -> float:
    return int(value) / 1000.0 if isinstance(value, int | str) else 0.0


def _array_headers(array: np.ndarray) -> dict[str, Any]:
    return {"dtype": array.dtype.name, "shape": list(array.shape)}


def _array_from(body: bytes, headers: dict[str, Any]) -> np.ndarray:
    dtype = str(headers.get("dtype", ""))
    if dtype not in ALLOWED_DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}")
    shape = tuple(int(d) for d in headers.get("shape", ()))
    array = np.frombuffer(body, dtype=dtype)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"body holds {array.size} values, shape {shape} needs {np.prod(shape)}")
    return array.reshape(shape)


def encode_query(query: Query) -> tuple[bytes, dict[str, Any]]:
    array = np.ascontiguousarray(query.inputs)
    headers = _array_headers(array)
    headers.update(
        request_id=query.request_id,
        app=query.app,
        variant=query.variant,
        deadline_us=_to_us(query.deadline_ms),
        sent_us=_to_us(query.sent_ms),
        slo_us=_to_us(query.slo_deadline_ms),
    )
    return array.tobytes(), headers


def decode_query(body: bytes, headers: dict[str, Any]) -> Query:
    return Query(
        request_id=str(headers.get("request_id", "")),
        app=str(headers.get("app", "")),
        variant=str(headers.get("variant", "")),
        inputs=_array_from(body, headers),
        deadline_ms=_from_us(headers.get("deadline_us", 0)),
        sent_ms=_from_us(headers.get("sent_us", 0)),
        slo_deadline_ms=_from_us(headers.get("slo_us", 0)),
    )


def encode_reply(reply: Reply) -> tuple[bytes, dict[str, Any]]:
    headers: dict[str, Any] = {
        "request_id": reply.request_id,
        "ok": reply.ok,
        "model_us": _to_us(reply.model_ms),
        "worker": reply.worker,
        "batch_size": int(reply.batch_size),
        "queued_us": _to_us(reply.queued_ms),
    }
    if reply.ok and reply.outputs is not None:
        array = np.ascontiguousarray(reply.outputs)
        headers.update(_array_headers(array))
        return array.tobytes(), headers
    headers["error_code"] = reply.error_code
    headers["error_message"] = reply.error_message
    return b"", headers


def decode_reply(body: bytes, headers: dict[str, Any]) -> Reply:
    ok = bool(headers.get("ok", False))
    return Reply(
        request_id=str(headers.get("request_id", "")),
        ok=ok,
        outputs=_array_from(body, headers) if ok else None,
        error_code=str(headers.get("error_code", "")),
        error_message=str(headers.get("error_message", "")),
        model_ms=_from_us(headers.get("model_us", 0)),
        worker=str(headers.get("worker", "")),
        batch_size=int(headers.get("batch_size", 0)),
        queued_ms=_from_us(headers.get("queued_us", 0)),
    )


def error_reply(request_id: str, code: str, message: str, worker: str = "") -> Reply:
    return Reply(
        request_id=request_id,
        ok=False,
        outputs=None,
        error_code=code,
        error_message=message,
        worker=worker,
    )

"""The messages gateway and workers exchange, encoded without JSON on the hot path.

A query travels as the raw bytes of its input array (C order) with its shape, dtype,
ids and deadline in the AMQP headers; the reply carries the output array the same way.

A gateway may pack queries for the same variant that arrive together into one message
(:func:`pack_queries`): its rows are theirs, one after the other, its ``parts`` header
the row count of each. A worker runs it as one query of that many rows and counts it
as ``len(parts)`` queries; its one reply is split back by the gateway
(:func:`split_reply`), which alone knows whose rows are whose.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from queues.errors import WorkerError

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
    parts: tuple[int, ...] = ()  # a packed message: the rows of each query in it

    @property
    def count(self) -> int:
        """How many queries this message carries (one unless packed)."""
        return len(self.parts) or 1


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
    if query.parts:
        headers["parts"] = list(query.parts)
    return array.tobytes(), headers


def decode_query(body: bytes, headers: dict[str, Any]) -> Query:
    inputs = _array_from(body, headers)
    return Query(
        request_id=str(headers.get("request_id", "")),
        app=str(headers.get("app", "")),
        variant=str(headers.get("variant", "")),
        inputs=inputs,
        deadline_ms=_from_us(headers.get("deadline_us", 0)),
        sent_ms=_from_us(headers.get("sent_us", 0)),
        slo_deadline_ms=_from_us(headers.get("slo_us", 0)),
        parts=_parts(headers.get("parts"), rows=len(inputs) if inputs.ndim else 1),
    )


def message_count(headers: dict[str, Any]) -> int:
    """The queries a query message carries, from its headers alone (one unless packed)."""
    parts = headers.get("parts")
    return len(parts) if isinstance(parts, list | tuple) and parts else 1


def _parts(value: object, *, rows: int) -> tuple[int, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple) or not all(isinstance(n, int) for n in value):
        raise ValueError(f"parts must be a list of row counts, not {value!r}")
    parts = tuple(int(n) for n in value)
    if any(n < 1 for n in parts) or sum(parts) != rows:
        raise ValueError(f"parts {list(parts)} do not add up to the message's {rows} rows")
    return parts


def pack_queries(queries: Sequence[Query], request_id: str) -> Query:
    """One message for ``queries`` (same app, variant, dtype and row shape): their rows in
    order, alive until the last of their deadlines (each query's own wait ends at its
    own), as urgent as the most urgent objective, sent when the first was."""
    first = queries[0]
    slos = [q.slo_deadline_ms for q in queries if q.slo_deadline_ms]
    return Query(
        request_id=request_id,
        app=first.app,
        variant=first.variant,
        inputs=np.concatenate([q.inputs for q in queries]),
        deadline_ms=max(q.deadline_ms for q in queries),
        sent_ms=min(q.sent_ms for q in queries),
        slo_deadline_ms=min(slos) if slos else 0.0,
        parts=tuple(len(q.inputs) for q in queries),
    )


def split_reply(reply: Reply, members: Sequence[tuple[str, int]]) -> list[Reply]:
    """The reply to a packed message as each member's own: ``members`` are the request
    ids and row counts in the order they were packed. An error is everyone's error."""
    if not reply.ok or reply.outputs is None:
        return [replace(reply, request_id=rid) for rid, _ in members]
    total = sum(rows for _, rows in members)
    if len(reply.outputs) != total:
        error = f"a worker answered {len(reply.outputs)} rows for a packed message of {total}"
        broken = replace(
            reply, ok=False, outputs=None, error_code=WorkerError.code, error_message=error
        )
        return [replace(broken, request_id=rid) for rid, _ in members]
    replies, offset = [], 0
    for rid, rows in members:
        replies.append(
            replace(reply, request_id=rid, outputs=reply.outputs[offset : offset + rows])
        )
        offset += rows
    return replies


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

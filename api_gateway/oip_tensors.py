"""Tensors of the Open Inference Protocol (KServe v2) as numpy arrays, and back (pure).

A request tensor is ``{name, shape, datatype, data}`` with ``data`` flat or nested in
row-major order; it becomes the app's input array only when its name, datatype and
shape are the app's (the batch dimension, ``-1`` in the signature, is free) and its
data holds exactly the values its shape says. Values are never cast silently across
kinds: ``1.5`` is not an INT32 and ``300`` is not a UINT8. Every refusal is an
:class:`~queues.errors.InvalidInput` whose message says what the app takes.

A tensor's data comes as JSON values (``data``) or as raw bytes: the binary tensor
extension on REST and ``raw_input_contents`` on gRPC, both flat, row-major and
little-endian. Raw bytes must hold exactly shape × datatype size; they are read in place
(no copy), and refused on the same terms as JSON values (booleans other than 0 and 1,
floats that are not finite).
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod
from typing import Any

import numpy as np

from queues.errors import InvalidInput
from registry.types import InputSignature

DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
_BY_DTYPE = {dtype: name for name, dtype in DATATYPES.items()}
# the kinds of values (as numpy infers them from JSON) each kind of datatype accepts
_ACCEPTS = {"b": "b", "u": "iu", "i": "iu", "f": "iuf"}


def datatype_of(dtype: str | np.dtype[Any]) -> str:
    """The protocol's name of a numpy dtype (``float32`` -> ``FP32``)."""
    found = _BY_DTYPE.get(np.dtype(dtype))
    if found is None:
        raise InvalidInput(
            f"dtype {np.dtype(dtype)} has no datatype in this server's Open Inference "
            f"Protocol; it handles {', '.join(DATATYPES)}"
        )
    return found


def tensor_metadata(name: str, dtype: str | np.dtype[Any], shape: Sequence[int]) -> dict[str, Any]:
    return {"name": name, "datatype": datatype_of(dtype), "shape": list(shape)}


def _shape_text(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _values(data: list[Any], datatype: str) -> np.ndarray:
    """``data`` as numpy infers it, refused unless every value fits ``datatype``."""
    target = DATATYPES[datatype]
    what = "true/false values" if target.kind == "b" else "numbers"
    try:
        values = np.asarray(data)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(
            f"data of {datatype} must be {what}, flat or nested in equal-length lists "
            f"(row-major); these are ragged ({exc})"
        ) from exc
    if values.size == 0:
        return values.astype(target)
    if values.dtype.kind not in _ACCEPTS[target.kind]:
        got = {"b": "booleans", "f": "non-integer numbers", "U": "strings"}.get(
            values.dtype.kind, "values of mixed or unsupported types"
        )
        raise InvalidInput(f"data of {datatype} must be {what}; got {got}")
    if target.kind in "iu":
        info = np.iinfo(target)
        low, high = int(values.min()), int(values.max())
        if low < info.min or high > info.max:
            raise InvalidInput(
                f"data holds {low if low < info.min else high}, out of the range of "
                f"{datatype} ({info.min} to {info.max})"
            )
    with np.errstate(over="ignore", invalid="ignore"):  # refused just below
        array = values.astype(target)
    if target.kind == "f" and not np.isfinite(array).all():
        raise InvalidInput(
            f"data holds values that are not finite as {datatype} (too large, NaN or "
            "infinite); send finite numbers in its range"
        )
    return array


def _wanted(signature: InputSignature) -> str:
    return (
        f"{signature.name!r}: {datatype_of(signature.dtype)}, shape {_shape_text(signature.shape)}"
    )


def _check_tensor(
    name: str, shape: Sequence[int], datatype: str, signature: InputSignature
) -> None:
    """Name, datatype and shape are the app's (its batch dimension free), or InvalidInput.
    The messages are built only on a refusal: this runs on every query."""
    if name != signature.name:
        raise InvalidInput(
            f"input {name!r} is not an input of this model; it takes one input, "
            f"{_wanted(signature)}"
        )
    if datatype not in DATATYPES:
        raise InvalidInput(
            f"input {name!r} has datatype {datatype!r}, which this server does not take "
            f"(one of {', '.join(DATATYPES)}); this model takes {_wanted(signature)}"
        )
    if datatype != datatype_of(signature.dtype):
        raise InvalidInput(
            f"input {name!r} has datatype {datatype}; this model takes {_wanted(signature)}"
        )
    item = signature.item_shape
    if len(shape) != len(signature.shape) or tuple(shape[1:]) != item or min(shape) < 0:
        raise InvalidInput(
            f"input {name!r} has shape {_shape_text(shape)}; this model takes "
            f"{_wanted(signature)} (-1: any batch size)"
        )


def decode_input(
    name: str, shape: Sequence[int], datatype: str, data: list[Any], signature: InputSignature
) -> np.ndarray:
    """The app's input array (``signature``) from one request tensor, or InvalidInput."""
    _check_tensor(name, shape, datatype, signature)
    values = _values(data, datatype)
    if values.size != prod(shape):
        raise InvalidInput(
            f"input {name!r} has shape {_shape_text(shape)}, which holds {prod(shape)} "
            f"values; its data holds {values.size}"
        )
    if values.ndim > 1 and values.shape != tuple(shape):
        raise InvalidInput(
            f"input {name!r}: nested data of shape {_shape_text(values.shape)} does not "
            f"match its shape {_shape_text(shape)}; nest it as the shape says, or send it flat"
        )
    return values.reshape(tuple(shape))


def encode_output(name: str, array: np.ndarray) -> dict[str, Any]:
    """A response tensor, data flat in row-major order (serialized by orjson as is)."""
    return {
        "name": name,
        "datatype": datatype_of(array.dtype),
        "shape": list(array.shape),
        "data": np.ascontiguousarray(array).reshape(-1),
    }


def raw_size(shape: Sequence[int], datatype: str) -> int | None:
    """Bytes of a tensor's raw data; None when the datatype is not one this server takes
    or a dimension is negative (refused when the tensor is decoded)."""
    dtype = DATATYPES.get(datatype)
    if dtype is None or any(d < 0 for d in shape):
        return None
    return prod(shape) * dtype.itemsize


def decode_raw_input(
    name: str,
    shape: Sequence[int],
    datatype: str,
    raw: bytes | memoryview,
    signature: InputSignature,
) -> np.ndarray:
    """The app's input array from a tensor's raw bytes (read in place), or InvalidInput."""
    _check_tensor(name, shape, datatype, signature)
    dtype = DATATYPES[datatype]
    size = prod(shape) * dtype.itemsize
    if len(raw) != size:
        raise InvalidInput(
            f"input {name!r} has shape {_shape_text(shape)} of {datatype}, which takes "
            f"{size} bytes; its raw data holds {len(raw)} bytes"
        )
    array = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).reshape(tuple(shape))
    if dtype.kind == "b" and array.size and int(array.view(np.uint8).max()) > 1:
        raise InvalidInput(f"input {name!r}: raw BOOL data must be bytes 0 or 1")
    if dtype.kind == "f" and not np.isfinite(array).all():
        raise InvalidInput(
            f"input {name!r}: raw data holds values that are not finite (NaN or infinite); "
            "send finite numbers"
        )
    return array


def raw_output(array: np.ndarray) -> bytes:
    """A response tensor's data as raw bytes: flat, row-major, little-endian."""
    datatype_of(array.dtype)  # refuses what the protocol cannot name
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()

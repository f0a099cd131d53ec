"""Turning a query's JSON inputs into the app's input array, with clear 422s (pure)."""

from __future__ import annotations

from typing import Any

import numpy as np

from queues.errors import BatchTooLarge, EmptyBatch, InvalidInput
from registry.types import InputSignature


def expected_shape(signature: InputSignature) -> str:
    return "[n, " + ", ".join(str(d) for d in signature.item_shape) + "]"


def check_batch_size(size: int, max_batch: int) -> None:
    if size == 0:
        raise EmptyBatch("inputs is empty; send at least one input")
    if size > max_batch:
        raise BatchTooLarge(
            f"{size} inputs in one query; at most {max_batch} are allowed "
            "(INFAAS_MAX_BATCH); split the query or submit a batch job",
            details={"max_batch": max_batch},
        )


def to_batch(
    inputs: list[Any] | np.ndarray, signature: InputSignature, max_batch: int
) -> np.ndarray:
    check_batch_size(len(inputs), max_batch)
    try:
        array = np.asarray(inputs, dtype=signature.dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidInput(
            f"inputs must be numbers of shape {expected_shape(signature)} "
            f"({signature.dtype}); got something else ({exc})",
            details={"expected_shape": [-1, *signature.item_shape]},
        ) from exc
    if array.shape[1:] != signature.item_shape:
        raise InvalidInput(
            f"inputs have shape {list(array.shape)}; app input {signature.name!r} expects "
            f"{expected_shape(signature)}",
            details={"expected_shape": [-1, *signature.item_shape]},
        )
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InvalidInput("inputs hold NaN or infinite values; send finite numbers")
    return array

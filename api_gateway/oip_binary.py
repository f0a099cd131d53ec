"""The binary tensor data extension of the protocol's REST, as Triton's clients use it (pure).

A request body is a JSON header, then the raw bytes of some inputs, back to back: the
``Inference-Header-Content-Length`` header says how long the JSON is, and each such
input says its length in ``parameters.binary_data_size`` (in the order of ``inputs``).
A response is built the same way when the client asks for binary outputs
(``binary_data`` on a requested output, or ``binary_data_output`` on the request).

Every length is checked against the bytes actually received before anything is sliced
or allocated: the body itself is already within ``INFAAS_MAX_BODY_MB``, so a length
that claims more (2 GB, say) is refused from the claim alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from api_gateway.oip_tensors import raw_size
from queues.errors import InvalidRequest

HEADER_LENGTH = "Inference-Header-Content-Length"


@dataclass(frozen=True, slots=True)
class BinaryClaim:
    """What one input of the JSON header says about its data."""

    name: str
    shape: tuple[int, ...]
    datatype: str
    size: int | None  # parameters.binary_data_size, None when its data is JSON
    has_data: bool


def split_body(body: bytes, header_length: str | None) -> tuple[memoryview, memoryview]:
    """The JSON header and the binary section of a body (all of it JSON without the
    ``Inference-Header-Content-Length`` header)."""
    view = memoryview(body)
    if header_length is None:
        return view, view[len(view) :]
    text = header_length.strip()
    if not text.isdigit():
        raise InvalidRequest(
            f"{HEADER_LENGTH} must be the length of the JSON header in bytes, a whole "
            f"number of 0 or more; got {header_length[:40]!r}"
        )
    length = int(text)
    if length > len(body):
        raise InvalidRequest(
            f"{HEADER_LENGTH} says the JSON header is {length} bytes, but the whole body "
            f"is {len(body)}; send the header's own length"
        )
    return view[:length], view[length:]


def slice_inputs(claims: Sequence[BinaryClaim], binary: memoryview) -> list[memoryview | None]:
    """Each input's raw bytes (None for one whose data is JSON), in place, or
    InvalidRequest when a claim does not add up."""
    sliced: list[memoryview | None] = []
    offset = 0
    for claim in claims:
        if claim.size is None:
            sliced.append(None)
            continue
        if claim.has_data:
            raise InvalidRequest(
                f"input {claim.name!r} has both data and parameters.binary_data_size; "
                "send its values one way"
            )
        expected = (
            raw_size(claim.shape, claim.datatype) if min(claim.shape, default=0) >= 0 else None
        )
        if expected is not None and expected != claim.size:
            raise InvalidRequest(
                f"input {claim.name!r}: binary_data_size is {claim.size} bytes, but shape "
                f"{list(claim.shape)} of {claim.datatype} takes {expected}"
            )
        left = len(binary) - offset
        if claim.size > left:
            raise InvalidRequest(
                f"input {claim.name!r} claims {claim.size} bytes of binary data, but only "
                f"{left} follow the JSON header; check binary_data_size and "
                f"{HEADER_LENGTH}"
            )
        sliced.append(binary[offset : offset + claim.size])
        offset += claim.size
    if offset != len(binary):
        raise InvalidRequest(
            f"{len(binary) - offset} bytes follow the JSON header that no input claims "
            f"(binary_data_size); check {HEADER_LENGTH}"
        )
    return sliced

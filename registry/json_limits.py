"""JSON from outside, parsed within limits (pure).

Python's ``json`` recurses once per nesting level, so a document nested 100,000 deep
raises ``RecursionError`` (a bare 500), and what it builds may be too deep for orjson to
render again (254 levels). Here the depth is measured on the raw bytes first, with the
strings blanked out, in bounded slices (no object is built for a too-deep document);
then orjson parses it, which also refuses numbers that overflow a double (``1e400``,
an integer of 400 digits) instead of handing out an ``inf`` or an unbounded int.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import orjson

MAX_JSON_DEPTH = 32  # request bodies and metadata: a [n, c, h, w] input is 5 deep
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_SLICE = 1 << 20
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
_STEP = np.zeros(256, np.int32)  # what each byte does to the nesting level
_STEP[[ord("["), ord("{")]] = 1
_STEP[[ord("]"), ord("}")]] = -1


class JSONRefused(ValueError):
    """The document is not JSON, or is deeper than allowed; the message says which."""


def nesting_depth(raw: bytes) -> int:
    """The deepest level of arrays and objects in ``raw`` (brackets inside strings do
    not count); beyond the brackets themselves, memory stays within one 1 MiB slice."""
    text = _STRING.sub(b'""', raw).translate(None, _NOT_BRACKETS)
    level = deepest = 0
    for start in range(0, len(text), _SLICE):
        codes = np.frombuffer(text, np.uint8, count=min(_SLICE, len(text) - start), offset=start)
        levels = np.cumsum(_STEP[codes]) + level
        if len(levels):
            deepest = max(deepest, int(levels.max()))
            level = int(levels[-1])
    return deepest


def check_depth(raw: bytes, *, max_depth: int, what: str) -> None:
    depth = nesting_depth(raw)
    if depth > max_depth:
        raise JSONRefused(
            f"{what} is JSON nested {depth} levels deep; at most {max_depth} are allowed"
        )


def loads(raw: bytes | str, *, max_depth: int = MAX_JSON_DEPTH, what: str = "the body") -> Any:
    """``raw`` parsed, or :class:`JSONRefused` saying what is wrong with it."""
    data = raw.encode() if isinstance(raw, str) else raw
    check_depth(data, max_depth=max_depth, what=what)
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise JSONRefused(f"{what} is not valid JSON ({exc})") from exc

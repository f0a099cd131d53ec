"""Object keys, key prefixes and bucket names that every backend can hold unchanged.

The rules are the union of what a folder and S3 accept, so a key that works in the
embedded default also works in production, and no key can escape the store's folder.
"""

from __future__ import annotations

import re

from queues.errors import InvalidRequest

# reserved for unfinished writes: a reader never sees these
TMP_PREFIX = ".infaas-tmp-"
_MAX_KEY_BYTES = 1024
_MAX_PART_BYTES = 255
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IPV4_RE = re.compile(r"\d{1,3}(\.\d{1,3}){3}")


def _path_problem(value: str, *, is_prefix: bool) -> str | None:
    if not value:
        return None if is_prefix else "it is empty"
    try:
        value.encode()
    except UnicodeEncodeError:
        return "it is not valid Unicode text (a lone surrogate)"
    # A prefix may end in '/' or in part of a name; only its whole parts must be sound.
    parts = value.split("/")[:-1] if is_prefix else value.split("/")
    problems = [
        (value.startswith("/"), "it starts with '/'; keys are relative, like 'models/m/v1.onnx'"),
        (".." in value, "it contains '..'"),
        ("\\" in value, "it contains a backslash; separate parts with '/'"),
        ("\x00" in value, "it contains a NUL character"),
        (len(value.encode()) > _MAX_KEY_BYTES, f"it is longer than {_MAX_KEY_BYTES} bytes"),
        (
            any(part in ("", ".") for part in parts),
            "it has an empty or '.' part ('//', '/./' or a trailing '/')",
        ),
        (
            any(len(part.encode()) > _MAX_PART_BYTES for part in parts),
            f"a part between '/' is longer than {_MAX_PART_BYTES} bytes",
        ),
        (
            any(part.startswith(TMP_PREFIX) for part in parts),
            f"parts starting with {TMP_PREFIX!r} are reserved for unfinished writes",
        ),
    ]
    return next((message for failed, message in problems if failed), None)


def check_key(key: str) -> str:
    """Return ``key`` if every backend can hold it unchanged, else raise a clear 422.

    The rules are the union of what a folder and S3 accept, so a key that works in the
    embedded default also works in production, and no key can escape the store's folder.
    """
    problem = _path_problem(key, is_prefix=False)
    if problem:
        raise InvalidRequest(f"object key {key!r} is not valid: {problem}")
    return key


def check_prefix(prefix: str) -> str:
    problem = _path_problem(prefix, is_prefix=True)
    if problem:
        raise InvalidRequest(f"key prefix {prefix!r} is not valid: {problem}")
    return prefix


def check_bucket_name(name: str) -> str:
    """S3's rules, applied to folders too, so a local setup never names an S3-invalid bucket."""
    if (
        not _BUCKET_RE.fullmatch(name)
        or any(pair in name for pair in ("..", ".-", "-."))
        or _IPV4_RE.fullmatch(name)
    ):
        raise InvalidRequest(
            f"bucket name {name!r} is not valid: use 3-63 characters of lowercase letters, "
            "digits, '-' and '.', starting and ending with a letter or digit, "
            "not shaped like an IP address"
        )
    return name

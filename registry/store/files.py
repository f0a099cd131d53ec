"""Writing a local file so that readers see the old content or the new, never a part
(both backends download into local files this way; the folder store keeps its objects so)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from registry.store.keys import TMP_PREFIX

# the size of one read when copying a file or a download
COPY_CHUNK_BYTES = 1024 * 1024


def write_atomically(dest: Path, fill: Callable[[BinaryIO], object]) -> None:
    """Readers see the old object or the new one, never a part.

    The bytes go to a temp file in the destination's own folder (so the rename stays on
    one filesystem, where it is atomic) and ``os.replace`` swaps it in once complete.
    """
    tmp = dest.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex}")
    fd = _create_new(tmp)
    try:
        with os.fdopen(fd, "wb") as out:
            fill(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _create_new(path: Path) -> int:
    # A concurrent delete may prune the (empty) folder between mkdir and open; retry then.
    attempts = 3
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileNotFoundError:
            attempts -= 1
            if not attempts:
                raise

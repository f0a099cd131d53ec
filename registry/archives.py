"""Reading zip archives from outside (``.npz``, ``.pt2``) within a size budget (pure I/O
helpers, no catalog).

A zip's central directory says how large each member unpacks to, and Python's zipfile
never hands out more than that (it stops, and the CRC check fails); so the sizes are
checked from the directory before any member is read, then members are streamed in
blocks, never read whole unless they are small by construction. An ``.npy`` member's
header (shape, dtype) is checked against the member's real size, so a header that claims
2**40 rows over 256 bytes is refused before numpy allocates anything.

Every problem raises :class:`ArchiveRefused` with a message; callers turn it into their
own error (``invalid_validation_set``, ``input_unreadable``, ``invalid_model``).
"""

from __future__ import annotations

import math
import shutil
import zipfile
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

BLOCK = 1 << 20
MB = 1e6


class ArchiveRefused(ValueError):
    """The archive is refused; the message says why (it is shown to the user)."""


def unpacked_bytes(archive: zipfile.ZipFile, max_bytes: int, what: str) -> int:
    """The total unpacked size the directory declares, refused over ``max_bytes``."""
    total = sum(member.file_size for member in archive.infolist())
    if total > max_bytes:
        raise ArchiveRefused(
            f"{what} unpacks to {total / MB:.0f} MB, more than {max_bytes / MB:.0f} MB"
        )
    return total


def unsafe_name(name: str) -> bool:
    """An entry name that could point outside the folder it is unpacked into."""
    if not name or name.startswith("/") or "\\" in name or ":" in name:
        return True
    return any(part in ("..", ".") for part in name.split("/"))


def read_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, max_bytes: int) -> bytes:
    """A member that must be small (a JSON file): refused from its declared size, and
    read in blocks that stop at the limit."""
    if member.file_size > max_bytes:
        raise ArchiveRefused(
            f"{member.filename} unpacks to {member.file_size / MB:.1f} MB, more than "
            f"{max_bytes / MB:.1f} MB"
        )
    chunks: list[bytes] = []
    read = 0
    with archive.open(member) as handle:
        while block := handle.read(min(BLOCK, max_bytes + 1 - read)):
            chunks.append(block)
            read += len(block)
            if read > max_bytes:
                raise ArchiveRefused(f"{member.filename} unpacks past {max_bytes / MB:.1f} MB")
    return b"".join(chunks)


def copy_member(
    archive: zipfile.ZipFile, member: zipfile.ZipInfo, out: zipfile.ZipFile, name: str
) -> None:
    """Stream one member into another archive under ``name``, a block at a time."""
    entry = zipfile.ZipInfo(name, date_time=member.date_time)
    entry.compress_type = zipfile.ZIP_STORED
    with (
        archive.open(member) as source,
        out.open(entry, "w", force_zip64=member.file_size >= zipfile.ZIP64_LIMIT) as dest,
    ):
        shutil.copyfileobj(source, dest, BLOCK)


@dataclass(frozen=True, slots=True)
class NpyHeader:
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    data_bytes: int  # what the header's shape and dtype need


def read_npy_header(handle: IO[bytes]) -> tuple[tuple[int, ...], np.dtype[Any]]:
    """(shape, dtype) from an ``.npy`` stream's header alone (numpy's own parser, which
    evaluates nothing and caps the header's length)."""
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        shape, _fortran, dtype = np.lib.format.read_array_header_1_0(handle)
    elif version == (2, 0):
        shape, _fortran, dtype = np.lib.format.read_array_header_2_0(handle)
    else:
        raise ArchiveRefused(f".npy format {version} is not read here; save it with numpy.savez")
    return tuple(int(d) for d in shape), np.dtype(dtype)


def npy_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, what: str) -> NpyHeader:
    """The header of an ``.npy`` member, checked against the member's real size: the
    data its shape and dtype need must be exactly what the member holds after it.
    Sizes are Python integers, so no shape overflows."""
    with archive.open(member) as handle:
        shape, dtype = read_npy_header(handle)
        offset = handle.tell()
    if dtype.hasobject:
        raise ArchiveRefused(
            f"{what} holds Python objects: they cannot be read without unpickling, and "
            "uploads are never unpickled; save numbers"
        )
    if any(d < 0 for d in shape):
        raise ArchiveRefused(f"{what} declares a negative dimension {list(shape)}")
    needed = math.prod(shape) * dtype.itemsize
    held = member.file_size - offset
    if needed != held:
        raise ArchiveRefused(
            f"{what} declares shape {list(shape)} of {dtype} ({needed:,} bytes) but holds "
            f"{held:,} bytes; save it again with numpy.savez"
        )
    return NpyHeader(shape, dtype, needed)

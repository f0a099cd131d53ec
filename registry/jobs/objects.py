"""A batch job's objects in the store: its inputs (found and checked at submission), its
output location (probed), an uploaded input, and the manifest of a finished job.

Inputs are checked by their ``.npy`` headers inside each ``.npz`` (shape and dtype),
without loading the arrays: cheap, and a file that would unpickle objects is refused
before any of it is read.
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from pathlib import Path
from typing import IO, Any

import numpy as np

from queues.errors import InfaasError, InputUnreadable, InvalidInput, OutputNotWritable
from registry.archives import ArchiveRefused, npy_member
from registry.jobs.chunking import InputObject
from registry.jobs.locations import Location, manifest_key
from registry.jobs.status import CHUNK_DONE, JOB_RUNNING
from registry.jobs.store import JobStore
from registry.jobs.views import build_manifest
from registry.store import ObjectStore
from registry.types import InputSignature

INPUT_ARRAY = "inputs"
INPUT_SUFFIX = ".npz"
UPLOAD_NAME = "inputs.npz"
_NUMERIC_KINDS = frozenset("biuf")
# the largest array ``inputs`` one object may unpack to: a worker loads it whole; the
# gateway passes INFAAS_JOB_MAX_UPLOAD_MB (this is its default)
DEFAULT_MAX_UNPACKED_BYTES = 256 * 1024 * 1024


def store_for(store: ObjectStore, location: Location) -> ObjectStore:
    """The store holding ``location``: its bucket, or the system's own store."""
    return store.bucket(location.bucket) if location.bucket else store


def upload_location(job_id: str) -> Location:
    """Where an input uploaded with a job is kept (in the system's own store)."""
    return Location("", f"jobs/{job_id}/input")


# ------------------------------------------------------------------------- headers


def read_npz_header(
    source: str | Path | IO[bytes],
    where: str,
    *,
    max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES,
) -> tuple[tuple[int, ...], np.dtype[Any]]:
    """(shape, dtype) of the array ``inputs`` in an ``.npz``, from its header alone,
    checked against the member's real size and the unpacked-size cap."""
    member = f"{INPUT_ARRAY}.npy"
    try:
        with zipfile.ZipFile(source) as archive:
            names = archive.namelist()
            if member not in names:
                arrays = sorted(n.removesuffix(".npy") for n in names)
                raise InputUnreadable(
                    f"{where} has no array {INPUT_ARRAY!r} (it holds {arrays}); save the "
                    f"inputs with numpy.savez(path, {INPUT_ARRAY}=array)"
                )
            info = archive.getinfo(member)
            if info.file_size > max_unpacked_bytes:
                raise InputUnreadable(
                    f"{where}: array {INPUT_ARRAY!r} unpacks to {info.file_size / 1e6:.0f} MB, "
                    f"more than {max_unpacked_bytes / 1e6:.0f} MB (INFAAS_JOB_MAX_UPLOAD_MB); "
                    "split the inputs into several .npz files"
                )
            header = npy_member(archive, info, f"{where}: array {INPUT_ARRAY!r}")
    except InfaasError:
        raise
    except ArchiveRefused as exc:
        raise InputUnreadable(str(exc)) from exc
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise InputUnreadable(
            f"{where} is not a readable .npz ({type(exc).__name__}: {exc}); save the inputs "
            f"with numpy.savez(path, {INPUT_ARRAY}=array)"
        ) from exc
    return header.shape, header.dtype


def check_header(
    shape: tuple[int, ...], dtype: np.dtype[Any], signature: InputSignature, where: str
) -> int:
    """The number of rows, if the array fits the app's input signature."""
    expected = [-1, *signature.item_shape]
    if dtype.hasobject:
        raise InputUnreadable(
            f"{where}: array {INPUT_ARRAY!r} holds Python objects, which are never unpickled "
            f"here; save numbers ({signature.dtype})"
        )
    target = np.dtype(signature.dtype)
    if dtype.kind not in _NUMERIC_KINDS or not np.can_cast(dtype, target, casting="same_kind"):
        raise InvalidInput(
            f"{where}: array {INPUT_ARRAY!r} has dtype {dtype}, which does not convert to the "
            f"app's {target}; save it as {target}",
            details={"expected_dtype": str(target), "expected_shape": expected},
        )
    if len(shape) != len(signature.shape) or shape[1:] != signature.item_shape:
        raise InvalidInput(
            f"{where}: array {INPUT_ARRAY!r} has shape {list(shape)}; app input "
            f"{signature.name!r} expects {expected} (-1: any number of rows)",
            details={"expected_shape": expected},
        )
    return shape[0]


# -------------------------------------------------------------------------- inputs


def discover_inputs(
    store: ObjectStore,
    location: Location,
    signature: InputSignature,
    *,
    max_objects: int,
    max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES,
) -> list[InputObject]:
    """Every ``.npz`` under the location (or the one object it names), in key order,
    each checked against the app's input signature."""
    source = store_for(store, location)
    if location.prefix.endswith(INPUT_SUFFIX) and source.exists(location.prefix):
        keys = [location.prefix]
    else:
        keys = [k for k in source.list(location.folder()) if k.endswith(INPUT_SUFFIX)]
    if not keys:
        raise InputUnreadable(
            f"no {INPUT_SUFFIX} objects under {location.url}; put the inputs there as .npz "
            f"files, each with an array {INPUT_ARRAY!r} of shape [n, ...] (or upload one)"
        )
    if len(keys) > max_objects:
        raise InputUnreadable(
            f"{len(keys)} input objects under {location.url}, more than the limit of "
            f"{max_objects} (INFAAS_JOB_MAX_INPUT_OBJECTS); merge them into fewer files"
        )
    found: list[InputObject] = []
    with tempfile.TemporaryDirectory(prefix="infaas-job-input-") as tmp:
        for key in keys:
            path = source.get_file(key, Path(tmp) / "object.npz")
            where = f"input object {key!r} of {location.url}"
            shape, dtype = read_npz_header(path, where, max_unpacked_bytes=max_unpacked_bytes)
            rows = check_header(shape, dtype, signature, where)
            found.append(InputObject(key=key, rows=rows, size_bytes=path.stat().st_size))
    return found


def check_upload(
    path: Path,
    signature: InputSignature,
    job_id: str,
    *,
    max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES,
) -> InputObject:
    """An uploaded ``.npz``, checked like a stored one, under the key it will be kept at."""
    where = "the uploaded file"
    shape, dtype = read_npz_header(path, where, max_unpacked_bytes=max_unpacked_bytes)
    rows = check_header(shape, dtype, signature, where)
    key = upload_location(job_id).key(UPLOAD_NAME)
    return InputObject(key=key, rows=rows, size_bytes=path.stat().st_size)


# ------------------------------------------------------------------------- outputs


def check_output_writable(store: ObjectStore, location: Location) -> None:
    """Write and delete a probe object under the location, or say why it cannot be."""
    try:
        store_for(store, location).check_writable(location.folder())
    except InfaasError as exc:
        raise OutputNotWritable(
            f"the output location {location.url} cannot be written ({exc.message}); give "
            "a location on this system's object store that it may write to"
        ) from exc


def finalize_job(jobs: JobStore, store: ObjectStore, job_id: str) -> bool:
    """Write the manifest of a running job whose chunks are all done and mark it
    succeeded; False when there is nothing to do. Safe to repeat: the manifest's content
    depends only on the catalog's rows."""
    job, chunks = jobs.get_with_chunks(job_id)
    if job.status != JOB_RUNNING or any(c.status != CHUNK_DONE for c in chunks):
        return False
    key = manifest_key(job.output, job.id)
    body = json.dumps(build_manifest(job, chunks), indent=2, sort_keys=True).encode()
    store_for(store, job.output).put_bytes(key, body, "application/json")
    return jobs.succeed(job_id, key)

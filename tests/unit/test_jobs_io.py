"""A job's objects in a local store: inputs checked by their .npy headers, the output
location probed, chunk outputs encoded."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from queues.errors import InputUnreadable, InvalidInput, OutputNotWritable
from registry.jobs.locations import Location
from registry.jobs.objects import (
    check_header,
    check_output_writable,
    check_upload,
    discover_inputs,
    read_npz_header,
    store_for,
)
from registry.store import LocalStore
from registry.types import InputSignature
from workers.jobs import encode_outputs

SIGNATURE = InputSignature("input", "float32", (-1, 8, 8))


def _npz(compressed: bool = False, **arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    if compressed:
        np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
    else:
        np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


@pytest.mark.parametrize("compressed", [False, True])
def test_headers_are_read_without_loading_the_array(compressed: bool) -> None:
    data = _npz(compressed, inputs=np.zeros((5, 8, 8), np.float64), labels=np.zeros(5))
    shape, dtype = read_npz_header(io.BytesIO(data), "x")
    assert shape == (5, 8, 8)
    assert dtype == np.float64
    assert check_header(shape, dtype, SIGNATURE, "x") == 5


def test_big_arrays_use_the_version_2_header() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive, archive.open("inputs.npy", "w") as member:
        np.lib.format.write_array(member, np.zeros((3, 8, 8), np.float32), version=(2, 0))
    shape, dtype = read_npz_header(io.BytesIO(buffer.getvalue()), "x")
    assert shape == (3, 8, 8)
    assert dtype == np.dtype(np.float32)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"not a zip at all", "is not a readable .npz"),
        (_npz(rows=np.zeros((2, 8, 8))), "has no array 'inputs' (it holds ['rows'])"),
        (b"PK\x03\x04" + b"\x00" * 40, "is not a readable .npz"),
    ],
)
def test_unreadable_inputs_are_refused(data: bytes, says: str) -> None:
    with pytest.raises(InputUnreadable) as caught:
        read_npz_header(io.BytesIO(data), "the input")
    assert says in caught.value.message


def test_a_pickled_array_is_never_loaded() -> None:
    objects = np.empty(2, dtype=object)
    objects[:] = [{"a": 1}, {"b": 2}]
    buffer = io.BytesIO()
    np.savez(buffer, inputs=objects)
    with pytest.raises(InputUnreadable, match="cannot be read without unpickling"):
        read_npz_header(io.BytesIO(buffer.getvalue()), "x")  # refused from its header
    with pytest.raises(InputUnreadable, match="never unpickled"):
        check_header((2,), np.dtype(object), SIGNATURE, "x")


@pytest.mark.parametrize(
    ("shape", "dtype", "says"),
    [
        ((5, 64), np.float32, "expects [-1, 8, 8]"),
        ((5, 8, 7), np.float32, "expects [-1, 8, 8]"),
        ((8, 8), np.float32, "expects [-1, 8, 8]"),
        ((5, 8, 8), np.complex64, "does not convert"),
        ((5, 8, 8), np.dtype("U3"), "does not convert"),
    ],
)
def test_inputs_that_do_not_fit_the_app_are_refused(
    shape: tuple[int, ...], dtype: np.dtype[np.generic], says: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_header(shape, np.dtype(dtype), SIGNATURE, "the input")
    assert says in caught.value.message
    assert caught.value.code == "invalid_input"


@pytest.mark.parametrize("dtype", [np.float64, np.int64, np.uint8, np.bool_, np.float16])
def test_numbers_that_convert_are_accepted(dtype: type[np.generic]) -> None:
    assert check_header((3, 8, 8), np.dtype(dtype), SIGNATURE, "x") == 3


def test_inputs_are_every_npz_under_the_prefix_in_key_order(store: LocalStore) -> None:
    bucket = store.bucket("jobs-in")
    bucket.put_bytes("run/b.npz", _npz(inputs=np.zeros((3, 8, 8), np.float32)))
    bucket.put_bytes("run/a.npz", _npz(inputs=np.zeros((4, 8, 8), np.float32)))
    bucket.put_bytes("run/README.txt", b"not an input")
    bucket.put_bytes("run2/c.npz", _npz(inputs=np.zeros((9, 8, 8), np.float32)))
    found = discover_inputs(store, Location("jobs-in", "run"), SIGNATURE, max_objects=10)
    assert [(o.key, o.rows) for o in found] == [("run/a.npz", 4), ("run/b.npz", 3)]
    assert found[0].size_bytes == bucket.size("run/a.npz")
    one = discover_inputs(store, Location("jobs-in", "run/b.npz"), SIGNATURE, max_objects=10)
    assert [(o.key, o.rows) for o in one] == [("run/b.npz", 3)]
    with pytest.raises(InputUnreadable, match="more than the limit of 1"):
        discover_inputs(store, Location("jobs-in", "run"), SIGNATURE, max_objects=1)


@pytest.mark.parametrize(
    "location", [Location("jobs-in", "nothing-here"), Location("no-such-bucket", "run")]
)
def test_an_empty_input_location_is_refused(store: LocalStore, location: Location) -> None:
    with pytest.raises(InputUnreadable, match=r"no \.npz objects under"):
        discover_inputs(store, location, SIGNATURE, max_objects=10)


def test_a_bad_object_among_good_ones_names_itself(store: LocalStore) -> None:
    bucket = store.bucket("jobs-in")
    bucket.put_bytes("run/a.npz", _npz(inputs=np.zeros((4, 8, 8), np.float32)))
    bucket.put_bytes("run/b.npz", _npz(inputs=np.zeros((4, 64), np.float32)))
    with pytest.raises(InvalidInput, match=r"input object 'run/b.npz' of s3://jobs-in/run"):
        discover_inputs(store, Location("jobs-in", "run"), SIGNATURE, max_objects=10)


def test_uploads_are_checked_and_keyed_by_job(tmp_path: Path) -> None:
    path = tmp_path / "up.npz"
    path.write_bytes(_npz(inputs=np.ones((6, 8, 8), np.float32)))
    found = check_upload(path, SIGNATURE, "j1")
    assert (found.key, found.rows) == ("jobs/j1/input/inputs.npz", 6)


def test_the_output_probe_leaves_nothing_behind(store: LocalStore) -> None:
    check_output_writable(store, Location("jobs-out", "daily"))
    assert store.bucket("jobs-out").list() == []
    assert not (store.buckets / "jobs-out" / "daily").exists()


def test_an_output_location_that_cannot_be_written_is_refused(store: LocalStore) -> None:
    store.buckets.mkdir(parents=True, exist_ok=True)
    (store.buckets / "blocked").write_text("a file where the bucket's folder would be")
    with pytest.raises(OutputNotWritable, match=r"s3://blocked/x cannot be written"):
        check_output_writable(store, Location("blocked", "x"))


def test_store_for_picks_the_bucket_or_the_systems_own(store: LocalStore) -> None:
    assert store_for(store, Location("", "jobs/j1")) is store
    other = store_for(store, Location("jobs-out", ""))
    assert isinstance(other, LocalStore)
    assert other.root == store.buckets / "jobs-out"


def test_chunk_outputs_carry_outputs_labels_and_item_indices() -> None:
    outputs = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]], dtype=np.float64)
    with np.load(io.BytesIO(encode_outputs(outputs, 1000)), allow_pickle=False) as got:
        assert got["outputs"].dtype == np.float32
        np.testing.assert_allclose(got["outputs"], outputs.astype(np.float32))
        assert got["labels"].tolist() == [1, 0, 1]
        assert got["index"].tolist() == [1000, 1001, 1002]


def _lying_npz(declared_rows: int, data_bytes: int) -> bytes:
    """An .npz whose ``inputs`` header claims ``declared_rows`` rows of [8, 8] float32
    over ``data_bytes`` bytes of data."""
    buffer = io.BytesIO()
    header = {"descr": "<f4", "fortran_order": False, "shape": (declared_rows, 8, 8)}
    with zipfile.ZipFile(buffer, "w") as archive, archive.open("inputs.npy", "w") as member:
        np.lib.format.write_array_header_1_0(member, header)
        member.write(bytes(data_bytes))
    return buffer.getvalue()


@pytest.mark.parametrize("declared_rows", [2_000_000, 2**60, 0])
def test_a_header_is_checked_against_the_real_size(
    store: LocalStore, tmp_path: Path, declared_rows: int
) -> None:
    data = _lying_npz(declared_rows, 256)
    with pytest.raises(InputUnreadable, match=r"declares shape \[\d+, 8, 8\] of float32"):
        read_npz_header(io.BytesIO(data), "the input")
    upload = tmp_path / "upload.npz"
    upload.write_bytes(data)
    with pytest.raises(InputUnreadable, match="holds 256 bytes"):
        check_upload(upload, SIGNATURE, "job-1")
    store.put_bytes("in/a.npz", data, "application/octet-stream")
    before = store.list()
    with pytest.raises(InputUnreadable, match="holds 256 bytes"):
        discover_inputs(store, Location("", "in"), SIGNATURE, max_objects=10)
    assert store.list() == before


def test_inputs_over_the_unpacked_cap_are_refused(store: LocalStore) -> None:
    data = _npz(True, inputs=np.zeros((20_000, 8, 8), np.float32))  # 5 MB, deflated
    assert len(data) < 100_000
    with pytest.raises(InputUnreadable, match="unpacks to 5 MB, more than 1 MB"):
        read_npz_header(io.BytesIO(data), "the input", max_unpacked_bytes=1_000_000)
    store.put_bytes("in/a.npz", data, "application/octet-stream")
    with pytest.raises(InputUnreadable, match="INFAAS_JOB_MAX_UPLOAD_MB"):
        discover_inputs(
            store, Location("", "in"), SIGNATURE, max_objects=10, max_unpacked_bytes=1_000_000
        )
    shape, _dtype = read_npz_header(io.BytesIO(data), "the input", max_unpacked_bytes=6_000_000)
    assert shape == (20_000, 8, 8)

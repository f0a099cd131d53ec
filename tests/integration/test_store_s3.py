"""The S3 object store against a real S3 endpoint (the session's moto server).

The shared behaviour comes from :class:`StoreContract`, which the local store passes
too; the tests here cover what only S3 has: buckets made on demand, races to make
them, content types and an endpoint that is down.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from minio import Minio

from queues.errors import StoreUnavailable
from registry.store import ObjectStore, S3Store, StoreLocation, open_store, parse_store_url
from tests.services import free_port
from tests.unit.test_store_local import StoreContract

pytestmark = pytest.mark.integration


def raw_client(location: StoreLocation) -> Minio:
    """A plain client, to look at the endpoint without going through the code under test."""
    return Minio(
        location.endpoint,
        access_key=location.access_key,
        secret_key=location.secret_key,
        secure=False,
        region=location.region,
    )


class TestS3Store(StoreContract):
    @pytest.fixture
    def store(self, s3_store_url: str) -> ObjectStore:
        return open_store(s3_store_url)

    def test_bucket_is_made_by_the_first_write_only(self, s3_store_url: str) -> None:
        location = parse_store_url(s3_store_url)
        store = open_store(s3_store_url).bucket(f"infaas-lazy-{uuid.uuid4().hex[:8]}")
        assert isinstance(store, S3Store)
        raw = raw_client(location)
        assert store.list() == []
        assert not store.exists("k")
        store.delete("k")
        store.check_writable("jobs/")  # the probe makes the bucket: it is a write
        assert raw.bucket_exists(store.location.bucket)
        untouched = store.bucket(f"infaas-lazy-{uuid.uuid4().hex[:8]}")
        untouched.list()
        assert not raw.bucket_exists(untouched.location.bucket)

    def test_content_type_is_kept(self, s3_store_url: str) -> None:
        store = open_store(s3_store_url)
        store.put_bytes("reports/r.json", b"{}", content_type="application/json")
        store.put_bytes("blob", b"\x00")
        raw = raw_client(parse_store_url(s3_store_url))
        bucket = parse_store_url(s3_store_url).bucket
        assert raw.stat_object(bucket, "reports/r.json").content_type == "application/json"
        assert raw.stat_object(bucket, "blob").content_type == "application/octet-stream"

    @pytest.mark.parametrize("region", ["", "eu-west-1"], ids=["default-region", "eu-west-1"])
    def test_stores_racing_to_make_the_bucket_all_succeed(
        self, s3_store_url: str, region: str
    ) -> None:
        # Outside us-east-1 a second CreateBucket answers BucketAlreadyOwnedByYou (moto, like
        # AWS and MinIO); in us-east-1 moto answers 200 again.
        url = f"{s3_store_url}?region={region}" if region else s3_store_url
        stores = [open_store(url) for _ in range(8)]  # separate clients, as in 8 processes
        start = threading.Barrier(len(stores))
        failures: list[BaseException] = []

        def write(i: int) -> None:
            start.wait()
            try:
                stores[i].put_bytes(f"writer-{i}", b"x")
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=write, args=(i,)) for i in range(len(stores))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
        assert stores[0].list() == [f"writer-{i}" for i in range(len(stores))]


STORE_CALLS: dict[str, Callable[[ObjectStore, Path], object]] = {
    "put_bytes": lambda store, _tmp: store.put_bytes("k", b"x"),
    "put_file": lambda store, tmp: store.put_file("k", tmp / "src.bin"),
    "get_bytes": lambda store, _tmp: store.get_bytes("k"),
    "get_file": lambda store, tmp: store.get_file("k", tmp / "dest.bin"),
    "exists": lambda store, _tmp: store.exists("k"),
    "size": lambda store, _tmp: store.size("k"),
    "delete": lambda store, _tmp: store.delete("k"),
    "delete_prefix": lambda store, _tmp: store.delete_prefix("jobs/"),
    "list": lambda store, _tmp: store.list(),
    "check_writable": lambda store, _tmp: store.check_writable("jobs/"),
}


@pytest.mark.parametrize("call", STORE_CALLS.values(), ids=STORE_CALLS.keys())
def test_unreachable_endpoint_is_store_unavailable_quickly(
    tmp_path: Path, call: Callable[[ObjectStore, Path], object]
) -> None:
    secret = "SuperSecret42"
    port = free_port()  # bound then closed: nothing listens there
    store = open_store(f"s3://testing:{secret}@127.0.0.1:{port}/infaas-down")
    (tmp_path / "src.bin").write_bytes(b"x")
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as caught:
        call(store, tmp_path)
    assert time.monotonic() - started < 5
    assert f"s3://127.0.0.1:{port}/infaas-down" in caught.value.message
    assert secret not in caught.value.message
    assert not (tmp_path / "dest.bin").exists()

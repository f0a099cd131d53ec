"""The S3 object store against a real S3 endpoint (the session's moto server).

The shared behaviour comes from :class:`StoreContract`, which the local store passes
too; the tests here cover what only S3 has: buckets made on demand, races to make
them, content types and an endpoint that is down.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import urllib3
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


# S3Store's defaults: one try and two retries, each connection given 3 s at most
UNREACHABLE_ATTEMPTS = 3
CONNECT_TIMEOUT_S = 3.0
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
    tmp_path: Path, call: Callable[[ObjectStore, Path], object], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Quickly by construction, not by a stopwatch a busy machine can miss: the store gives
    up after its few connection attempts, each with its short connect time-out (minio's
    own client would retry for minutes)."""
    attempts: list[float | None] = []
    connect = urllib3.util.connection.create_connection

    def counted(address: tuple[str, int], timeout: Any = None, **kwargs: Any) -> Any:
        attempts.append(timeout)
        return connect(address, timeout, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", counted)
    secret = "SuperSecret42"
    port = free_port()  # bound then closed: nothing listens there
    store = open_store(f"s3://testing:{secret}@127.0.0.1:{port}/infaas-down")
    (tmp_path / "src.bin").write_bytes(b"x")
    with pytest.raises(StoreUnavailable) as caught:
        call(store, tmp_path)
    assert 1 <= len(attempts) <= UNREACHABLE_ATTEMPTS, attempts
    assert all(t is not None and t <= CONNECT_TIMEOUT_S for t in attempts), attempts
    assert f"s3://127.0.0.1:{port}/infaas-down" in caught.value.message
    assert secret not in caught.value.message
    assert not (tmp_path / "dest.bin").exists()

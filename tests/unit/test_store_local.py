"""The local object store, the key rules and the store URL.

:class:`StoreContract` holds the behaviour every backend must share; the S3 tests in
``tests/integration/test_store_s3.py`` run the same class against a real S3 endpoint.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from queues.errors import ConfigError, Conflict, InvalidRequest, ObjectMissing, StoreUnavailable
from registry.store import (
    LocalStore,
    ObjectStore,
    S3Store,
    StoreLocation,
    open_store,
    parse_store_url,
)

MIB = 1024 * 1024
SECRET = "SuperSecret42"

BAD_KEYS = [
    pytest.param("", "empty", id="empty"),
    pytest.param("/models/m", "starts with '/'", id="absolute"),
    pytest.param("models/../etc/passwd", "'..'", id="dotdot"),
    pytest.param("..", "'..'", id="only-dotdot"),
    pytest.param("models\\m", "backslash", id="backslash"),
    pytest.param("models/m\x00.onnx", "NUL", id="nul"),
    pytest.param("models//m", "empty or '.' part", id="double-slash"),
    pytest.param("models/", "empty or '.' part", id="trailing-slash"),
    pytest.param("models/./m", "empty or '.' part", id="dot-part"),
    pytest.param("a/.infaas-tmp-123", "reserved", id="temp-name"),
    pytest.param("k" * 1025, "longer than 1024 bytes", id="too-long"),
    pytest.param("a/" + "p" * 256, "longer than 255 bytes", id="part-too-long"),
    pytest.param("bad\udc80key", "Unicode", id="lone-surrogate"),
]

BAD_PREFIXES = ["/models", "models/../x", "models\\", "models//m", "a\x00"]

KEY_OPERATIONS: dict[str, Callable[[ObjectStore, str, Path], object]] = {
    "put_bytes": lambda store, key, _tmp: store.put_bytes(key, b"x"),
    "put_file": lambda store, key, tmp: store.put_file(key, tmp / "src.bin"),
    "get_bytes": lambda store, key, _tmp: store.get_bytes(key),
    "get_file": lambda store, key, tmp: store.get_file(key, tmp / "dest.bin"),
    "exists": lambda store, key, _tmp: store.exists(key),
    "size": lambda store, key, _tmp: store.size(key),
    "delete": lambda store, key, _tmp: store.delete(key),
}


def put_many(store: ObjectStore, keys: list[str]) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda key: store.put_bytes(key, key.encode()), keys))


class StoreContract:
    """What every ObjectStore does; a subclass supplies the ``store`` fixture."""

    def test_put_and_get_bytes_round_trip(self, store: ObjectStore) -> None:
        store.put_bytes("models/digits/v1.onnx", b"first")
        assert store.get_bytes("models/digits/v1.onnx") == b"first"
        store.put_bytes("models/digits/v1.onnx", b"second, longer")
        assert store.get_bytes("models/digits/v1.onnx") == b"second, longer"
        store.put_bytes("empty", b"")
        assert store.get_bytes("empty") == b""
        assert store.size("empty") == 0

    def test_size_and_exists(self, store: ObjectStore) -> None:
        assert not store.exists("models/m/v1")
        store.put_bytes("models/m/v1", b"12345")
        assert store.exists("models/m/v1")
        assert store.size("models/m/v1") == 5
        assert not store.exists("models/m"), "a prefix of keys is not an object"

    @pytest.mark.parametrize(
        "read", [lambda s: s.get_bytes("nope/x"), lambda s: s.size("nope/x")], ids=["get", "size"]
    )
    def test_missing_object_raises_object_missing(
        self, store: ObjectStore, read: Callable[[ObjectStore], object]
    ) -> None:
        with pytest.raises(ObjectMissing, match="nope/x"):
            read(store)  # the store was never written: no folder, no bucket
        store.put_bytes("other", b"x")
        with pytest.raises(ObjectMissing, match="nope/x"):
            read(store)

    def test_a_prefix_of_keys_is_not_an_object(self, store: ObjectStore) -> None:
        store.put_bytes("models/a/1", b"x")
        with pytest.raises(ObjectMissing):
            store.get_bytes("models/a")
        with pytest.raises(ObjectMissing):
            store.size("models/a")
        store.delete("models/a")
        assert store.list() == ["models/a/1"]

    def test_put_file_and_get_file_round_trip(self, store: ObjectStore, tmp_path: Path) -> None:
        src = tmp_path / "src.bin"
        src.write_bytes(b"model bytes")
        store.put_file("models/m/model.onnx", src)
        dest = tmp_path / "cache" / "deep" / "model.onnx"
        assert store.get_file("models/m/model.onnx", dest) == dest
        assert dest.read_bytes() == b"model bytes"
        dest.write_bytes(b"stale copy that is longer than the object")
        store.get_file("models/m/model.onnx", dest)
        assert dest.read_bytes() == b"model bytes"
        assert sorted(os.listdir(dest.parent)) == ["model.onnx"], "no temp file left behind"

    def test_get_file_of_missing_object_leaves_nothing(
        self, store: ObjectStore, tmp_path: Path
    ) -> None:
        dest = tmp_path / "dl" / "model.onnx"
        dest.parent.mkdir()
        with pytest.raises(ObjectMissing):
            store.get_file("models/none", dest)
        assert os.listdir(dest.parent) == []

    def test_put_file_of_missing_source_stores_nothing(
        self, store: ObjectStore, tmp_path: Path
    ) -> None:
        with pytest.raises(FileNotFoundError):
            store.put_file("models/m", tmp_path / "absent.bin")
        assert not store.exists("models/m")

    @pytest.mark.parametrize("size", [5 * MIB, 5 * MIB + 1], ids=["5MiB", "5MiB+1"])
    def test_large_object_round_trip(self, store: ObjectStore, tmp_path: Path, size: int) -> None:
        data = os.urandom(size)
        store.put_bytes("big/bytes", data)
        assert store.size("big/bytes") == size
        assert store.get_bytes("big/bytes") == data
        src = tmp_path / "big.bin"
        src.write_bytes(data[::-1])
        store.put_file("big/file", src)
        assert store.get_file("big/file", tmp_path / "back.bin").read_bytes() == data[::-1]

    def test_delete_is_idempotent(self, store: ObjectStore) -> None:
        store.delete("never/written")
        store.put_bytes("models/m", b"x")
        store.delete("models/m")
        store.delete("models/m")
        assert not store.exists("models/m")
        assert store.list() == []

    def test_list_is_sorted_recursive_and_by_prefix(self, store: ObjectStore) -> None:
        keys = ["other", "models/b", "models/ab/1", "models/a/2", "models/a/1", "jobs/j1/in.jsonl"]
        for key in keys:
            store.put_bytes(key, b"x")
        assert store.list() == sorted(keys)
        assert store.list("models/a/") == ["models/a/1", "models/a/2"]
        assert store.list("models/a") == ["models/a/1", "models/a/2", "models/ab/1"]
        assert store.list("mod") == ["models/a/1", "models/a/2", "models/ab/1", "models/b"]
        assert store.list("models/b") == ["models/b"]
        assert store.list("nothing/") == []

    def test_list_of_never_written_store_is_empty(self, store: ObjectStore) -> None:
        assert store.list() == []
        assert store.delete_prefix("") == 0

    def test_delete_prefix_counts_and_spares_neighbours(self, store: ObjectStore) -> None:
        for key in ["models/a/1", "models/a/2", "models/ab/1", "other"]:
            store.put_bytes(key, b"x")
        assert store.delete_prefix("models/a/") == 2
        assert store.list() == ["models/ab/1", "other"]
        assert store.delete_prefix("models/a/") == 0

    def test_many_keys_list_and_delete(self, store: ObjectStore) -> None:
        keys = [f"many/{i:05d}" for i in range(1001)]  # more than one S3 listing page (1000)
        put_many(store, [*keys, "manz"])
        assert store.list("many/") == keys
        assert len(store.list()) == 1002
        assert store.delete_prefix("many/") == 1001
        assert store.list() == ["manz"]

    @pytest.mark.parametrize(("key", "problem"), BAD_KEYS)
    def test_bad_keys_are_refused_by_every_operation(
        self, store: ObjectStore, tmp_path: Path, key: str, problem: str
    ) -> None:
        (tmp_path / "src.bin").write_bytes(b"x")
        for name, operation in KEY_OPERATIONS.items():
            with pytest.raises(InvalidRequest) as caught:
                operation(store, key, tmp_path)
            assert problem in caught.value.message, name
        assert store.list() == []

    @pytest.mark.parametrize("prefix", BAD_PREFIXES)
    def test_bad_prefixes_are_refused(self, store: ObjectStore, prefix: str) -> None:
        for operation in (store.list, store.delete_prefix, store.check_writable):
            with pytest.raises(InvalidRequest, match="not valid"):
                operation(prefix)

    def test_other_bucket_is_separate(self, store: ObjectStore) -> None:
        other = store.bucket(f"infaas-other-{uuid.uuid4().hex[:8]}")
        assert other.list() == []
        store.put_bytes("k", b"mine")
        other.put_bytes("k", b"theirs")
        assert store.get_bytes("k") == b"mine"
        assert other.get_bytes("k") == b"theirs"
        assert other.describe() != store.describe()

    @pytest.mark.parametrize("name", ["ab", "Upper", "under_score", "a..b", "-ab", "10.0.0.1"])
    def test_bad_bucket_names_are_refused(self, store: ObjectStore, name: str) -> None:
        with pytest.raises(InvalidRequest, match="bucket name"):
            store.bucket(name)

    @pytest.mark.parametrize("prefix", ["", "jobs", "jobs/"])
    def test_check_writable_leaves_nothing(self, store: ObjectStore, prefix: str) -> None:
        store.check_writable(prefix)
        assert store.list() == []


class TestLocalStore(StoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> LocalStore:
        return LocalStore(tmp_path / "stores" / "infaas")

    def test_nothing_is_created_until_written(self, store: LocalStore) -> None:
        store.list()
        store.exists("a")
        store.delete("a")
        store.delete_prefix("a")
        with pytest.raises(ObjectMissing):
            store.get_bytes("a")
        other = store.bucket("other-bucket")
        assert not store.root.parent.exists()
        other.put_bytes("k", b"x")
        assert (store.root.parent / "buckets" / "other-bucket" / "k").read_bytes() == b"x"
        assert not store.root.exists()

    def test_buckets_are_folders_of_their_own_beside_the_store(self, store: LocalStore) -> None:
        other = store.bucket("infaas-jobs")
        assert isinstance(other, LocalStore)
        assert other.root == store.root.parent / "buckets" / "infaas-jobs"
        assert other.describe() == str(store.root.parent / "buckets" / "infaas-jobs")
        # a bucket's buckets are the same folders, not folders inside it
        assert other.bucket("xyz").root == store.root.parent / "buckets" / "xyz"
        assert (store.bucket_name, other.bucket_name) == ("infaas", "infaas-jobs")

    def test_no_bucket_reaches_what_the_system_keeps_beside_its_store(
        self, store: LocalStore
    ) -> None:
        cache = store.root.parent / "cache"
        cache.mkdir(parents=True)
        (cache / "artifact").write_bytes(b"secret")
        assert not store.bucket("cache").exists("artifact")
        assert store.bucket(store.bucket_name).root != store.root

    def test_write_goes_to_a_temp_file_then_replaces(
        self, store: LocalStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        store.put_bytes("models/m", b"old")
        seen: list[tuple[str, str]] = []
        real_replace = os.replace

        def checking_replace(src: str | Path, dst: str | Path) -> None:
            # at the moment of the swap the new bytes are complete, the old ones untouched
            assert Path(src).parent == Path(dst).parent
            assert Path(src).read_bytes() == b"new"
            assert Path(dst).read_bytes() == b"old"
            seen.append((str(src), str(dst)))
            real_replace(src, dst)

        monkeypatch.setattr(os, "replace", checking_replace)
        store.put_bytes("models/m", b"new")
        assert len(seen) == 1
        assert seen[0][1] == str(store.root / "models" / "m")
        assert store.get_bytes("models/m") == b"new"

    def test_failed_write_keeps_the_old_object(
        self, store: LocalStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        store.put_bytes("models/m", b"old")

        def full_disk(fd: int) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "fsync", full_disk)
        with pytest.raises(StoreUnavailable, match="No space left") as caught:
            store.put_bytes("models/m", b"new")
        assert str(store.root) in caught.value.message
        monkeypatch.undo()
        assert store.get_bytes("models/m") == b"old"
        assert os.listdir(store.root / "models") == ["m"], "the temp file is removed"

    def test_readers_never_see_part_of_an_object(self, store: LocalStore) -> None:
        versions = [b"a" * MIB, b"b" * MIB]
        store.put_bytes("models/m", versions[0])
        done = threading.Event()

        def writer() -> None:
            for i in range(40):
                store.put_bytes("models/m", versions[i % 2])
            done.set()

        thread = threading.Thread(target=writer)
        thread.start()
        reads = 0
        try:
            while not done.is_set() or reads == 0:
                assert store.get_bytes("models/m") in versions
                reads += 1
        finally:
            thread.join()

    def test_list_ignores_unfinished_writes(self, store: LocalStore) -> None:
        store.put_bytes("models/m", b"x")
        (store.root / "models" / ".infaas-tmp-crashed").write_bytes(b"half")
        assert store.list() == ["models/m"]

    def test_key_below_an_object_conflicts(self, store: LocalStore) -> None:
        store.put_bytes("a", b"x")
        with pytest.raises(Conflict, match="'a/b'"):
            store.put_bytes("a/b", b"x")
        store.put_bytes("d/e", b"x")
        with pytest.raises(Conflict, match="'d'"):
            store.put_bytes("d", b"x")
        store.delete("d/e")
        store.put_bytes("d", b"now an object")  # the emptied folder was removed
        assert store.list() == ["a", "d"]

    def test_unwritable_root_is_store_unavailable(self, tmp_path: Path) -> None:
        (tmp_path / "a-file").write_bytes(b"not a folder")
        store = LocalStore(tmp_path / "a-file" / "store")
        with pytest.raises(StoreUnavailable) as caught:
            store.check_writable("jobs/")
        assert str(store.root) in caught.value.message
        with pytest.raises(StoreUnavailable):
            store.put_bytes("k", b"x")


# --- the store URL -------------------------------------------------------------------


def s3(
    endpoint: str, bucket: str, secret: str = "SK", *, secure: bool = False, region: str = ""
) -> StoreLocation:
    return StoreLocation(
        kind="s3",
        endpoint=endpoint,
        access_key="AK",
        secret_key=secret,
        bucket=bucket,
        secure=secure,
        region=region or None,
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("s3://AK:SK@minio:9000/infaas", s3("minio:9000", "infaas")),
        ("  s3://AK:SK@minio:9000/infaas/ ", s3("minio:9000", "infaas")),
        ("S3://AK:SK@MinIO:9000/infaas", s3("minio:9000", "infaas")),
        ("s3://AK:SK@s3.example.com/b.x-1", s3("s3.example.com", "b.x-1")),
        (
            "s3://AK:SK@s3.example.com:443/infaas?secure=true&region=eu-west-1",
            s3("s3.example.com:443", "infaas", secure=True, region="eu-west-1"),
        ),
        ("s3://AK:SK@minio:9000/infaas?secure=false", s3("minio:9000", "infaas")),
        (
            "s3://AK:wJal%2FrX%2BU%40t%3F@10.0.0.5:9000/infaas",
            s3("10.0.0.5:9000", "infaas", "wJal/rX+U@t?"),
        ),
        (
            "s3://AK:wJal/rX+U@t?@10.0.0.5:9000/infaas",
            s3("10.0.0.5:9000", "infaas", "wJal/rX+U@t?"),
        ),
        ("s3://AK:SK@[::1]:9000/infaas", s3("[::1]:9000", "infaas")),
    ],
)
def test_parse_s3_url(url: str, expected: StoreLocation) -> None:
    assert parse_store_url(url) == expected


@pytest.mark.parametrize(
    ("url", "folder"),
    [
        ("/srv/infaas/store", "/srv/infaas/store"),
        ("/srv/infaas/../infaas/store/", "/srv/infaas/store"),
        ("file:///srv/infaas/store", "/srv/infaas/store"),
        ("file://localhost/srv/my%20store", "/srv/my store"),
        ("relative/store", "{cwd}/relative/store"),
        ("~/store", "{home}/store"),
    ],
)
def test_parse_local_url(
    url: str, folder: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    expected = Path(folder.format(cwd=tmp_path, home=tmp_path / "home"))
    location = parse_store_url(url)
    assert location == StoreLocation(kind="local", bucket=expected.name, path=expected)
    store = open_store(url)
    assert isinstance(store, LocalStore)
    assert store.root == expected
    assert store.describe() == str(expected)


S3_FORM = "s3://ACCESS:SECRET@host:port/bucket"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (f"s3://AK:{SECRET}@minio:9000", "no bucket"),
        (f"s3://AK:{SECRET}@minio:9000/", "no bucket"),
        ("s3://minio:9000/infaas", "no credentials"),
        (f"s3://AK:{SECRET}/minio:9000/infaas", "no credentials"),
        ("s3://AK@minio:9000/infaas", "access key and a secret"),
        ("s3://AK:@minio:9000/infaas", "access key and a secret"),
        (f"s3://:{SECRET}@minio:9000/infaas", "access key and a secret"),
        (f"s3://AK:{SECRET}@minio:abc/infaas", "bad port"),
        (f"s3://AK:{SECRET}@minio:70000/infaas", "bad port"),
        (f"s3://AK:{SECRET}@minio:0/infaas", "bad port"),
        (f"s3://AK:{SECRET}@minio:/infaas", "bad port"),
        (f"s3://AK:{SECRET}@/infaas", "no host"),
        (f"s3://AK:{SECRET}@minio:9000/infaas/models", "one bucket"),
        (f"s3://AK:{SECRET}@minio:9000/Bad_Bucket", "bucket name"),
        (f"s3://AK:{SECRET}@minio:9000/infaas?secure=maybe", "not understood"),
        (f"s3://AK:{SECRET}@minio:9000/infaas?tls=true", "not understood"),
    ],
)
def test_bad_s3_url_says_the_form_and_hides_the_secret(url: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_store_url(url)
    assert problem in caught.value.message
    assert S3_FORM in caught.value.message
    assert SECRET not in caught.value.message
    assert SECRET not in repr(caught.value.__cause__)
    assert SECRET not in repr(caught.value.__context__)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("", "empty"),
        ("   ", "empty"),
        (f"https://AK:{SECRET}@minio:9000/infaas", "scheme 'https' is not supported"),
        ("gs://bucket", "scheme 'gs' is not supported"),
        ("file://otherhost/srv/store", "names a host"),
    ],
)
def test_bad_store_url(url: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as caught:
        open_store(url)
    assert SECRET not in caught.value.message


def test_location_and_store_never_show_the_secret() -> None:
    url = f"s3://AK:{SECRET}@minio.internal:9000/infaas?secure=true"
    location = parse_store_url(url)
    assert location.secret_key == SECRET
    assert SECRET not in repr(location)
    assert SECRET not in str(location)
    store = open_store(url)  # builds a client, contacts nothing
    assert isinstance(store, S3Store)
    assert store.describe() == "s3://minio.internal:9000/infaas?secure=true"
    other = store.bucket("infaas-jobs")
    assert other.describe() == "s3://minio.internal:9000/infaas-jobs?secure=true"
    assert SECRET not in other.describe()

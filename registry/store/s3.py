"""The object store on S3 or MinIO: one bucket, through the minio client."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

import certifi
import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import MinioException, S3Error

from queues.errors import ConfigError, ObjectMissing, StoreUnavailable
from registry.store.files import COPY_CHUNK_BYTES, write_atomically
from registry.store.keys import check_bucket_name, check_key, check_prefix
from registry.store.protocol import probe
from registry.store.urls import StoreLocation

_NOT_FOUND = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchObject", "ResourceNotFound"})
_BUCKET_TAKEN = frozenset({"BucketAlreadyOwnedByYou", "BucketAlreadyExists"})


def _http_client(
    connect_timeout_s: float, read_timeout_s: float, retries: int
) -> urllib3.PoolManager:
    """minio's own client waits 5 minutes and retries 5 times: far too long to notice a
    store that is down, so a request here fails within seconds instead."""
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=connect_timeout_s, read=read_timeout_s),
        maxsize=10,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=urllib3.Retry(
            total=retries, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]
        ),
    )


class S3Store:
    """One bucket on an S3 endpoint, created on the first write that finds it missing."""

    def __init__(
        self,
        location: StoreLocation,
        *,
        connect_timeout_s: float = 3.0,
        read_timeout_s: float = 60.0,
        retries: int = 2,
        client: Minio | None = None,
    ) -> None:
        if location.kind != "s3":
            raise ConfigError(f"S3Store needs an s3:// location, not {location.describe()}")
        check_bucket_name(location.bucket)
        self.location = location
        self._client = client or Minio(
            location.endpoint,
            access_key=location.access_key,
            secret_key=location.secret_key,
            secure=location.secure,
            region=location.region,
            http_client=_http_client(connect_timeout_s, read_timeout_s, retries),
        )

    def put_bytes(
        self, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> None:
        check_key(key)
        self._upload(
            key,
            lambda: self._client.put_object(
                self.location.bucket, key, io.BytesIO(data), len(data), content_type
            ),
        )

    def put_file(self, key: str, path: Path) -> None:
        check_key(key)
        path.stat()  # a missing source is the caller's error, raised as OSError by both stores
        self._upload(key, lambda: self._client.fput_object(self.location.bucket, key, str(path)))

    def get_bytes(self, key: str) -> bytes:
        check_key(key)
        with self._translate("read", key):
            response = self._client.get_object(self.location.bucket, key)
            try:
                return bytes(response.read())
            finally:
                response.close()
                response.release_conn()

    def get_file(self, key: str, dest: Path) -> Path:
        check_key(key)
        with self._translate("read", key):
            response = self._client.get_object(self.location.bucket, key)
            try:
                write_atomically(dest, lambda out: _copy(response.stream(COPY_CHUNK_BYTES), out))
            finally:
                response.close()
                response.release_conn()
        return dest

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except ObjectMissing:
            return False
        return True

    def size(self, key: str) -> int:
        check_key(key)
        with self._translate("read", key):
            info = self._client.stat_object(self.location.bucket, key)
        return int(info.size or 0)

    def delete(self, key: str) -> None:
        check_key(key)
        with self._translate("delete", key), _unless_missing():
            self._client.remove_object(self.location.bucket, key)

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list(prefix)
        if not keys:
            return 0
        with self._translate("delete", prefix):
            failed = list(
                self._client.remove_objects(
                    self.location.bucket, (DeleteObject(key) for key in keys)
                )
            )
        if failed:
            raise self._unavailable(
                "delete",
                prefix,
                f"{len(failed)} of {len(keys)} objects were not deleted, "
                f"e.g. {failed[0].name!r}: {failed[0].code} {failed[0].message}",
            )
        return len(keys)

    def list(self, prefix: str = "") -> list[str]:
        check_prefix(prefix)
        keys: list[str] = []
        with self._translate("list", prefix), _unless_missing():
            for item in self._client.list_objects(
                self.location.bucket, prefix=prefix or None, recursive=True
            ):
                if item.object_name and not item.is_dir:
                    keys.append(item.object_name)
        return sorted(keys)

    def bucket(self, name: str) -> S3Store:
        return S3Store(replace(self.location, bucket=check_bucket_name(name)), client=self._client)

    def check_writable(self, prefix: str) -> None:
        probe(self, prefix)

    def describe(self) -> str:
        return self.location.describe()

    @property
    def bucket_name(self) -> str:
        return self.location.bucket

    def _upload(self, key: str, send: Callable[[], object]) -> None:
        with self._translate("write", key):
            try:
                send()
            except S3Error as exc:
                if exc.code != "NoSuchBucket":
                    raise
                self._make_bucket()
                send()

    def _make_bucket(self) -> None:
        # Two processes may both find the bucket missing; the loser's "already yours" is fine.
        try:
            self._client.make_bucket(self.location.bucket, self.location.region)
        except S3Error as exc:
            if exc.code not in _BUCKET_TAKEN:
                raise

    @contextlib.contextmanager
    def _translate(self, action: str, key: str) -> Iterator[None]:
        try:
            yield
        except S3Error as exc:
            if action == "read" and exc.code in _NOT_FOUND:
                raise ObjectMissing(f"object {key!r} is not in {self.describe()}") from exc
            raise self._unavailable(action, key, f"{exc.code}: {exc.message}") from exc
        except (MinioException, urllib3.exceptions.HTTPError) as exc:
            raise self._unavailable(action, key, f"{type(exc).__name__}: {exc}") from exc

    def _unavailable(self, action: str, key: str, reason: str) -> StoreUnavailable:
        secret = self.location.secret_key
        if secret:
            reason = reason.replace(secret, "***")
        return StoreUnavailable(
            f"cannot {action} {key!r} in the object store {self.describe()}: {reason}"
        )


@contextlib.contextmanager
def _unless_missing() -> Iterator[None]:
    """Deleting or listing what is not there is a no-op, as a never-written bucket is empty."""
    try:
        yield
    except S3Error as exc:
        if exc.code not in _NOT_FOUND:
            raise


def _copy(chunks: Iterable[bytes], out: BinaryIO) -> None:
    for chunk in chunks:
        out.write(chunk)

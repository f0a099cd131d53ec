"""The object store: model files, validation sets and batch-job data, by key.

Two backends sit behind one small interface so that the embedded default (a folder)
and production (S3 / MinIO) behave the same for every caller: the same key rules, the
same errors (:class:`ObjectMissing` for an absent key, :class:`StoreUnavailable` when
the store cannot be reached or written), and writes that readers never see half done.
Both backends refuse the same keys, so code tested on a folder does not break on S3.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import stat
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO, Literal, Protocol, runtime_checkable
from urllib.parse import parse_qsl, unquote, urlsplit

import certifi
import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import MinioException, S3Error

from queues.errors import (
    ConfigError,
    Conflict,
    InfaasError,
    InvalidRequest,
    ObjectMissing,
    StoreUnavailable,
)

_TMP_PREFIX = ".infaas-tmp-"
_PROBE_PREFIX = ".infaas-probe-"
_CHUNK = 1024 * 1024
_MAX_KEY_BYTES = 1024
_MAX_PART_BYTES = 255
_S3_FORM = "s3://ACCESS:SECRET@host:port/bucket[?secure=true&region=REGION]"
_STORE_FORMS = f"{_S3_FORM}, a folder path, or file:///absolute/folder"
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IPV4_RE = re.compile(r"\d{1,3}(\.\d{1,3}){3}")
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_NOT_FOUND = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchObject", "ResourceNotFound"})
_BUCKET_TAKEN = frozenset({"BucketAlreadyOwnedByYou", "BucketAlreadyExists"})


@runtime_checkable
class ObjectStore(Protocol):
    """What the rest of the system needs from a store; keys are '/'-separated."""

    def put_bytes(
        self, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> None: ...
    def put_file(self, key: str, path: Path) -> None: ...
    def get_bytes(self, key: str) -> bytes: ...
    def get_file(self, key: str, dest: Path) -> Path: ...
    def exists(self, key: str) -> bool: ...
    def size(self, key: str) -> int: ...
    def delete(self, key: str) -> None: ...
    def delete_prefix(self, prefix: str) -> int: ...
    def list(self, prefix: str = "") -> list[str]: ...
    def bucket(self, name: str) -> ObjectStore: ...
    def check_writable(self, prefix: str) -> None: ...
    def describe(self) -> str: ...


# --- names ------------------------------------------------------------------------


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
            any(part.startswith(_TMP_PREFIX) for part in parts),
            f"parts starting with {_TMP_PREFIX!r} are reserved for unfinished writes",
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


# --- the store URL --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoreLocation:
    """A parsed ``INFAAS_STORE_URL``; the secret is kept out of ``repr`` so logs stay clean."""

    kind: Literal["s3", "local"]
    endpoint: str = ""
    access_key: str = ""
    secret_key: str = field(default="", repr=False)
    bucket: str = ""
    secure: bool = False
    region: str | None = None
    path: Path | None = None

    def describe(self) -> str:
        if self.kind == "local":
            return str(self.path)
        query = "?secure=true" if self.secure else ""
        return f"s3://{self.endpoint}/{self.bucket}{query}"


def parse_store_url(url: str) -> StoreLocation:
    """Read the store setting; errors say the expected form and never repeat the secret."""
    text = url.strip()
    if not text:
        raise ConfigError(f"INFAAS_STORE_URL is empty: give {_STORE_FORMS}")
    scheme = _SCHEME_RE.match(text)
    if scheme is None:
        return _local_location(Path(text))
    name = scheme.group(1).lower()
    if name == "s3":
        return _parse_s3_url(text[scheme.end() :])
    if name == "file":
        parts = urlsplit(text)
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(
                f"file URL {text!r} names a host; give file:///absolute/folder or a folder path"
            )
        return _local_location(Path(unquote(parts.path)))
    raise ConfigError(f"store URL scheme {name!r} is not supported: give {_STORE_FORMS}")


def _local_location(path: Path) -> StoreLocation:
    # Absolute now, so a later chdir cannot move the store.
    folder = Path(os.path.abspath(path.expanduser()))
    return StoreLocation(kind="local", bucket=folder.name, path=folder)


def _parse_s3_url(rest: str) -> StoreLocation:
    # Split at the last '@': hosts and buckets never hold one, while a pasted secret may
    # hold '/', '+', ':' or '@' unencoded; a bad URL is described by its parts after '@'.
    credentials, at, place = rest.rpartition("@")
    if not at:
        raise ConfigError(f"the S3 store URL has no credentials: expected {_S3_FORM}")
    access_raw, colon, secret_raw = credentials.partition(":")
    access_key, secret_key = unquote(access_raw), unquote(secret_raw)
    if not colon or not access_key or not secret_key:
        raise ConfigError(
            f"the S3 store URL needs both an access key and a secret: expected {_S3_FORM} "
            "(URL-encode special characters)"
        )
    address, _, query = place.partition("?")
    endpoint, _, bucket = address.partition("/")
    endpoint = endpoint.lower()
    _check_endpoint(endpoint)
    bucket = bucket.removesuffix("/")
    if not bucket:
        raise ConfigError(f"the S3 store URL for {endpoint} has no bucket: expected {_S3_FORM}")
    if "/" in bucket:
        raise ConfigError(
            f"the S3 store URL names the path {bucket!r}; give one bucket: expected {_S3_FORM}"
        )
    try:
        check_bucket_name(bucket)
    except InvalidRequest as exc:
        raise ConfigError(
            f"the S3 store URL for {endpoint}: {exc.message}; expected {_S3_FORM}"
        ) from None
    secure, region = _parse_s3_query(query)
    return StoreLocation(
        kind="s3",
        endpoint=endpoint,
        access_key=access_key,
        secret_key=secret_key,
        bucket=bucket,
        secure=secure,
        region=region,
    )


def _check_endpoint(endpoint: str) -> None:
    try:
        parts = urlsplit(f"//{endpoint}")
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = endpoint or None, 0
    if not host:
        raise ConfigError(f"the S3 store URL has no host: expected {_S3_FORM}")
    if port == 0 or (port is None and endpoint.endswith(":")):
        raise ConfigError(
            f"the S3 store URL endpoint {endpoint!r} has a bad port (a number 1-65535 is "
            f"needed): expected {_S3_FORM}"
        )


def _parse_s3_query(query: str) -> tuple[bool, str | None]:
    secure, region = False, None
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == "secure" and value.lower() in _TRUE | _FALSE:
            secure = value.lower() in _TRUE
        elif name == "region" and value:
            region = value
        else:
            raise ConfigError(
                f"the S3 store URL option {name}={value!r} is not understood: use "
                "secure=true|false and region=NAME, as in " + _S3_FORM
            )
    return secure, region


def open_store(url: str) -> ObjectStore:
    """The store an ``INFAAS_STORE_URL`` names; nothing is contacted until first use."""
    location = parse_store_url(url)
    if location.kind == "s3":
        return S3Store(location)
    assert location.path is not None
    return LocalStore(location.path)


# --- shared pieces ------------------------------------------------------------------------


def _write_atomically(dest: Path, fill: Callable[[BinaryIO], object]) -> None:
    """Readers see the old object or the new one, never a part.

    The bytes go to a temp file in the destination's own folder (so the rename stays on
    one filesystem, where it is atomic) and ``os.replace`` swaps it in once complete.
    """
    tmp = dest.with_name(f"{_TMP_PREFIX}{uuid.uuid4().hex}")
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


def _probe(store: ObjectStore, prefix: str) -> None:
    """Fail at start-up, with the location, rather than on a user's first upload."""
    folder = check_prefix(prefix)
    if folder and not folder.endswith("/"):
        folder += "/"
    key = check_key(f"{folder}{_PROBE_PREFIX}{uuid.uuid4().hex}")
    try:
        store.put_bytes(key, b"probe", "text/plain")
        store.delete(key)
    except (InfaasError, OSError) as exc:
        reason = exc.message if isinstance(exc, InfaasError) else str(exc)
        raise StoreUnavailable(
            f"the object store {store.describe()} is not writable under {prefix!r}: {reason}"
        ) from exc


# --- a local folder -----------------------------------------------------------------------


class LocalStore:
    """A folder standing in for one bucket.

    Other buckets are sibling folders (``root.parent / name``), not sub-folders, so a
    bucket can never collide with a key of this one.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.abspath(root))

    def put_bytes(
        self, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> None:
        del content_type  # a folder keeps no metadata; whoever stores bytes knows what they are
        self._write(check_key(key), lambda out: out.write(data))

    def put_file(self, key: str, path: Path) -> None:
        check_key(key)
        with open(path, "rb") as src:
            self._write(key, lambda out: shutil.copyfileobj(src, out, _CHUNK))

    def get_bytes(self, key: str) -> bytes:
        with self._reading(check_key(key)):
            return (self.root / key).read_bytes()

    def get_file(self, key: str, dest: Path) -> Path:
        src = self._open(check_key(key))
        with src:
            _write_atomically(dest, lambda out: shutil.copyfileobj(src, out, _CHUNK))
        return dest

    def exists(self, key: str) -> bool:
        return (self.root / check_key(key)).is_file()

    def size(self, key: str) -> int:
        with self._reading(check_key(key)):
            info = (self.root / key).stat()
        if not stat.S_ISREG(info.st_mode):
            raise ObjectMissing(f"object {key!r} is not in {self.root} (it is a folder of keys)")
        return info.st_size

    def delete(self, key: str) -> None:
        path = self.root / check_key(key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return
        except OSError as exc:
            raise self._unavailable("delete", key, exc) from exc
        self._prune(path.parent)

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list(prefix)
        for key in keys:
            self.delete(key)
        return len(keys)

    def list(self, prefix: str = "") -> list[str]:
        check_prefix(prefix)
        head = prefix.rpartition("/")[0]
        keys: list[str] = []
        for folder, _, files in os.walk(self.root / head, onerror=self._walk_error):
            relative = Path(folder).relative_to(self.root).as_posix()
            for name in files:
                key = name if relative == "." else f"{relative}/{name}"
                if key.startswith(prefix) and not name.startswith(_TMP_PREFIX):
                    keys.append(key)
        return sorted(keys)

    def bucket(self, name: str) -> LocalStore:
        return LocalStore(self.root.parent / check_bucket_name(name))

    def check_writable(self, prefix: str) -> None:
        _probe(self, prefix)

    def describe(self) -> str:
        return str(self.root)

    def _write(self, key: str, fill: Callable[[BinaryIO], object]) -> None:
        try:
            _write_atomically(self.root / key, fill)
        except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
            if not self.root.is_dir():
                raise self._unavailable("write", key, exc) from exc
            raise Conflict(
                f"cannot store {key!r} in {self.root}: a folder of keys already has that "
                "name, or a leading part of the key is already an object"
            ) from exc
        except OSError as exc:
            raise self._unavailable("write", key, exc) from exc

    def _open(self, key: str) -> BinaryIO:
        with self._reading(key):
            return open(self.root / key, "rb")  # the caller closes it

    @contextlib.contextmanager
    def _reading(self, key: str) -> Iterator[None]:
        try:
            yield
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise ObjectMissing(f"object {key!r} is not in {self.root}") from exc
        except OSError as exc:
            raise self._unavailable("read", key, exc) from exc

    def _prune(self, folder: Path) -> None:
        # Empty folders would otherwise block a later object of the same name, which S3 allows.
        while folder != self.root and folder.is_relative_to(self.root):
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent

    def _walk_error(self, exc: OSError) -> None:
        if not isinstance(exc, FileNotFoundError | NotADirectoryError):
            raise self._unavailable("list", exc.filename or "", exc) from exc

    def _unavailable(self, action: str, key: str, exc: OSError) -> StoreUnavailable:
        return StoreUnavailable(
            f"cannot {action} {key!r} in the local store {self.root}: {exc.strerror or exc}"
        )


# --- S3 / MinIO -------------------------------------------------------------------------


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
                _write_atomically(dest, lambda out: _copy(response.stream(_CHUNK), out))
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
        _probe(self, prefix)

    def describe(self) -> str:
        return self.location.describe()

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

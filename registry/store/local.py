"""The object store as a local folder: the embedded default and the tests' store."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from queues.errors import Conflict, ObjectMissing, StoreUnavailable
from registry.store.files import COPY_CHUNK_BYTES, write_atomically
from registry.store.keys import TMP_PREFIX, check_bucket_name, check_key, check_prefix
from registry.store.protocol import probe

# Where a local store keeps its other buckets: a folder beside the system's own.
BUCKETS_FOLDER = "buckets"


class LocalStore:
    """A folder standing in for one bucket.

    The other buckets are folders of ``buckets/`` beside it (``root.parent / "buckets" /
    name``): never inside this bucket, so they cannot collide with its keys, and never the
    folders the system keeps beside its store (the workers' artifact cache, the demo's
    models), which a batch job could otherwise name as buckets.
    """

    def __init__(self, root: Path, *, buckets: Path | None = None) -> None:
        self.root = Path(os.path.abspath(root))
        self.buckets = Path(os.path.abspath(buckets or self.root.parent / BUCKETS_FOLDER))

    @property
    def bucket_name(self) -> str:
        return self.root.name

    def put_bytes(
        self, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> None:
        del content_type  # a folder keeps no metadata; whoever stores bytes knows what they are
        self._write(check_key(key), lambda out: out.write(data))

    def put_file(self, key: str, path: Path) -> None:
        check_key(key)
        with open(path, "rb") as src:
            self._write(key, lambda out: shutil.copyfileobj(src, out, COPY_CHUNK_BYTES))

    def get_bytes(self, key: str) -> bytes:
        with self._reading(check_key(key)):
            return (self.root / key).read_bytes()

    def get_file(self, key: str, dest: Path) -> Path:
        src = self._open(check_key(key))
        with src:
            write_atomically(dest, lambda out: shutil.copyfileobj(src, out, COPY_CHUNK_BYTES))
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
                if key.startswith(prefix) and not name.startswith(TMP_PREFIX):
                    keys.append(key)
        return sorted(keys)

    def bucket(self, name: str) -> LocalStore:
        return LocalStore(self.buckets / check_bucket_name(name), buckets=self.buckets)

    def check_writable(self, prefix: str) -> None:
        probe(self, prefix)

    def describe(self) -> str:
        return str(self.root)

    def _write(self, key: str, fill: Callable[[BinaryIO], object]) -> None:
        try:
            write_atomically(self.root / key, fill)
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

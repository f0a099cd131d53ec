"""What the rest of the system needs from an object store, and the probe that proves
one writable."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Protocol, runtime_checkable

from queues.errors import InfaasError, StoreUnavailable
from registry.store.keys import check_key, check_prefix

_PROBE_PREFIX = ".infaas-probe-"


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
    @property
    def bucket_name(self) -> str:
        """This store's own bucket, as a client would name it in ``s3://BUCKET``."""
        ...

    def check_writable(self, prefix: str) -> None: ...
    def describe(self) -> str: ...


def probe(store: ObjectStore, prefix: str) -> None:
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

"""The local copy of a variant's artifact, shared by the variant server and the batch-job
runner: one file name per artifact version, downloaded once."""

from __future__ import annotations

import hashlib
from pathlib import Path

from registry.store import ObjectStore
from registry.types import Variant


def artifact_cache_key(variant: Variant) -> str:
    """``<variant>-<tag>``: a new tag when the artifact is rebuilt under the same key."""
    tag = hashlib.sha256(
        f"{variant.artifact_key}|{variant.created_at.isoformat()}".encode()
    ).hexdigest()[:16]
    return f"{variant.id}-{tag}"


def fetch_artifact(store: ObjectStore, cache_dir: Path, variant: Variant) -> Path:
    """The artifact's file in ``cache_dir``, downloaded if it is not there yet."""
    path = cache_dir / f"{artifact_cache_key(variant)}{Path(variant.artifact_key).suffix}"
    if not path.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        store.get_file(variant.artifact_key, path)
    return path

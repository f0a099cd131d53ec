"""The demo models for the tests, trained at most once per version of the code that trains
them, however many stacks, test modules or pytest-xdist workers ask.

The cache folder's name is a hash of ``infaas/demo_models.py`` and of the versions of the
packages that train and export the models, so a change to either trains afresh and a
stale build is never reused. The cache is the user's (``~/.cache/infaas/test-cache``, or
``$XDG_CACHE_HOME``), so a fresh clone of the same code trains nothing, as pip's cache
downloads nothing; ``INFAAS_TEST_CACHE`` points it elsewhere, and deleting the folder
starts from nothing. Older builds beyond the newest ``KEEP_BUILDS`` are deleted.

The build that filled the folder left its progress messages and its time in
``test-build.json`` beside the models, which tests/unit/test_demo_models.py reads instead
of training a second copy.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from infaas import demo_models
from infaas.demo_models import DemoSet, prepare_demo_models

REPO = Path(__file__).resolve().parent.parent
# what decides the trained bytes besides the module itself
TRAINING_PACKAGES = ("numpy", "scikit-learn", "skl2onnx", "torch", "onnx", "onnxruntime")
BUILD_RECORD = "test-build.json"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def demo_models_key() -> str:
    digest = hashlib.sha256(Path(demo_models.__file__).read_bytes())
    digest.update(f"python {sys.version_info[:2]}".encode())
    for package in TRAINING_PACKAGES:
        digest.update(f"\n{package}=={_version(package)}".encode())
    return digest.hexdigest()[:16]


def _user_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "infaas"


TEST_CACHE = Path(os.environ.get("INFAAS_TEST_CACHE") or _user_cache() / "test-cache")
DEMO_CACHE = TEST_CACHE / f"demo-models-{demo_models_key()}"
KEEP_BUILDS = 3  # of each kind, newest first: other checkouts may use other versions


def source_key(*packages: str) -> str:
    """A hash of every Python file in ``packages`` (folders of this repository): what
    decides a registration's result besides the models and the installed packages."""
    digest = hashlib.sha256()
    for package in packages:
        for path in sorted((REPO / package).rglob("*.py")):
            digest.update(str(path.relative_to(REPO)).encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def prune(kind: str, keep: int = KEEP_BUILDS) -> None:
    """Delete all but the newest ``keep`` cache folders named ``<kind>-<hash>``."""
    folders = sorted(
        (p for p in TEST_CACHE.glob(f"{kind}-*") if p.is_dir()),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for stale in folders[keep:]:
        with _locked(stale.with_name(f".{stale.name}.lock")):
            shutil.rmtree(stale, ignore_errors=True)


@dataclass(frozen=True)
class DemoBuild:
    demo: DemoSet
    folder: Path
    messages: tuple[str, ...]  # the progress messages of the build that filled ``folder``
    build_s: float


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One trainer at a time across processes (xdist workers, parallel runs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_once(kind: str, key: str, build: Callable[[Path], None], done: str = "built") -> Path:
    """``TEST_CACHE/<kind>-<key>``, made by ``build`` unless a finished build is there
    (the file ``done`` in it), under a lock so that parallel workers build it once; what
    a stopped build left is removed first, and older builds of ``kind`` are pruned."""
    home = TEST_CACHE / f"{kind}-{key}"
    with _locked(home.with_name(f".{home.name}.lock")):
        if not (home / done).exists():
            shutil.rmtree(home, ignore_errors=True)
            build(home)
            (home / done).touch()
            prune(kind)
    return home


def ensure_demo_models(folder: Path = DEMO_CACHE) -> DemoBuild:
    """Train the demo models into ``folder`` unless a complete build is there already."""
    record_path = folder / BUILD_RECORD
    with _locked(folder.with_name(f".{folder.name}.lock")):
        if not (demo_models._cached(folder, 0) and record_path.exists()):
            # a build without its record (made outside the tests) is made again, recorded
            (folder / demo_models.MANIFEST_FILE).unlink(missing_ok=True)
            messages: list[str] = []
            started = time.perf_counter()
            prepare_demo_models(folder, progress=messages.append)
            record = {"messages": messages, "build_s": round(time.perf_counter() - started, 2)}
            tmp = record_path.with_name(f".{BUILD_RECORD}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(record, indent=1))
            os.replace(tmp, record_path)
            prune("demo-models")
        record = json.loads(record_path.read_text())
        demo = prepare_demo_models(folder)  # checks the files again and names them
    return DemoBuild(demo, folder, tuple(record["messages"]), float(record["build_s"]))

"""A virtual environment with the KServe SDK, kept in the test cache and built once per
version of ``tests/requirements-kserve.txt`` (uv where the project's venv has it, as
``make venv`` installs it; else pip)."""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

from tests.demo_build import TEST_CACHE, prune

REQUIREMENTS = Path(__file__).with_name("requirements-kserve.txt")
BUILD_TIMEOUT_S = 900


def pip_settings() -> list[str]:
    """pip's own find-links, extra index URLs and constraints, as uv's options."""
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    ).stdout
    options: list[str] = []
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        name = key.rsplit(".", 1)[-1]
        if name in ("find-links", "extra-index-url", "constraint"):
            for item in value.strip("'\"").split():
                options += [f"--{name}", item]
    return options


def kserve_python() -> Path:
    """The interpreter of the KServe venv, built first if the cache has none."""
    digest = hashlib.sha256(REQUIREMENTS.read_bytes())
    digest.update(sys.version.encode())
    home = TEST_CACHE / f"kserve-venv-{digest.hexdigest()[:16]}"
    python = home / "bin" / "python"
    home.parent.mkdir(parents=True, exist_ok=True)
    with (home.parent / f".{home.name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not (home / "built").exists():
                shutil.rmtree(home, ignore_errors=True)
                _build(home)
                (home / "built").touch()
                prune("kserve-venv")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return python


def _build(home: Path) -> None:
    uv = Path(sys.executable).with_name("uv")
    if uv.exists():
        commands = [
            [str(uv), "venv", "-q", "--python", sys.executable, str(home)],
            [
                str(uv), "pip", "install", "-q", "--python", str(home / "bin" / "python"),
                "--index-strategy", "unsafe-best-match", *pip_settings(), "-r", str(REQUIREMENTS),
            ],
        ]  # fmt: skip
    else:
        commands = [
            [sys.executable, "-m", "venv", str(home)],
            [str(home / "bin" / "python"), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)],
        ]
    for command in commands:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"could not build the KServe SDK's venv in {home}: `{' '.join(command)}` "
                f"failed:\n{done.stderr[-3000:]}"
            )

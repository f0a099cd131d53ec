"""Virtual environments kept in the test cache for third-party packages whose pins clash
with the project's (the KServe SDK, PyTriton): each built once per version of its
requirements file and of Python (uv where the project's venv has it, as ``make venv``
installs it, with pip's own index settings; else pip), under a file lock so that
parallel test workers build it once."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from tests.demo_build import build_once

KSERVE_REQUIREMENTS = Path(__file__).with_name("requirements-kserve.txt")
BUILD_TIMEOUT_S = 900


class VenvBuildError(RuntimeError):
    """A cached venv could not be built; the message names the command and its error."""


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


def cached_python(requirements: Path, name: str) -> Path:
    """The interpreter of the venv ``name`` with ``requirements``, built first if the
    test cache has none (older builds of ``name`` are pruned)."""
    digest = hashlib.sha256(requirements.read_bytes())
    digest.update(sys.version.encode())
    home = build_once(name, digest.hexdigest()[:16], lambda home: _build(home, requirements))
    return home / "bin" / "python"


def kserve_python() -> Path:
    """The interpreter of the KServe SDK's venv (tests/requirements-kserve.txt)."""
    return cached_python(KSERVE_REQUIREMENTS, "kserve-venv")


def _build(home: Path, requirements: Path) -> None:
    python = home / "bin" / "python"
    uv = Path(sys.executable).with_name("uv")
    if uv.exists():
        commands = [
            [str(uv), "venv", "-q", "--python", sys.executable, str(home)],
            [
                str(uv), "pip", "install", "-q", "--python", str(python),
                "--index-strategy", "unsafe-best-match", *pip_settings(), "-r", str(requirements),
            ],
        ]  # fmt: skip
    else:
        commands = [
            [sys.executable, "-m", "venv", str(home)],
            [str(python), "-m", "pip", "install", "-q", "-r", str(requirements)],
        ]
    for command in commands:
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise VenvBuildError(
                f"building the venv in {home} took over {BUILD_TIMEOUT_S} s: "
                f"`{' '.join(command)}`; check that the package indexes answer"
            ) from exc
        if done.returncode != 0:
            raise VenvBuildError(
                f"could not build the venv in {home} (pins in {requirements}): "
                f"`{' '.join(command)}` failed:\n{done.stderr[-3000:]}"
            )

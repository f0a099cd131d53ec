"""The Dockerfiles, read as Docker reads them: dependencies are installed from the
requirements files before any code is copied (a code change reinstalls nothing), every file
they copy exists and is in the build context, and the GPU image takes TensorRT from
NVIDIA's image and torch's CUDA build from requirements-gpu.txt."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.infra_support import INFRA, REPO

DOCKERFILES = [INFRA / "docker" / "Dockerfile.cpu", INFRA / "docker" / "Dockerfile.gpu"]
DEPENDENCY_FILES = {"requirements.txt", "requirements-gpu.txt"}


@dataclass(frozen=True)
class Instruction:
    stage: str
    op: str
    args: str


def instructions(path: Path) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    assert not pending, f"{path} ends inside a continued line"
    result, stage = [], ""
    for text in logical:
        op, _, args = text.partition(" ")
        if op.upper() == "FROM":
            match = re.search(r"\bAS (\S+)$", args)
            stage = match.group(1) if match else args
        result.append(Instruction(stage, op.upper(), " ".join(args.split())))
    return result


def copies(path: Path) -> list[tuple[Instruction, list[str], str]]:
    """COPY instructions from the build context: (instruction, sources, destination)."""
    found = []
    for ins in instructions(path):
        if ins.op != "COPY" or "--from=" in ins.args:
            continue
        parts = ins.args.split()
        found.append((ins, parts[:-1], parts[-1]))
    return found


def dockerignored(relative: str) -> bool:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(fnmatch.fnmatch(p, pattern) for pattern in patterns for p in prefixes)


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dependencies_are_installed_before_the_code_is_copied(path: Path) -> None:
    steps = instructions(path)
    install = next(
        i for i, ins in enumerate(steps) if ins.op == "RUN" and re.search(r"-r /tmp/req", ins.args)
    )
    code_packages = {"queues", "registry", "workers", "api_gateway", "scaler", "infaas", "bench"}
    first_code = next(
        i
        for i, ins in enumerate(steps)
        if ins.op == "COPY" and set(ins.args.split()[:-1]) & code_packages
    )
    assert install < first_code
    before = [s for s in steps[:install] if s.op == "COPY" and "--from=" not in s.args]
    assert before, "the requirements files are copied alone, before the install"
    for ins in before:
        assert {Path(src).name for src in ins.args.split()[:-1]} <= DEPENDENCY_FILES, ins.args
    assert not [s for s in steps[first_code:] if s.op == "RUN" and "-r " in s.args]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_copied_files_exist_and_are_in_the_build_context(path: Path) -> None:
    for ins, sources, _ in copies(path):
        for source in sources:
            assert (REPO / source).exists(), f"{path.name}: {ins.args}: {source} is missing"
            assert not dockerignored(source), f"{path.name}: .dockerignore drops {source}"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_every_package_of_the_project_is_installed(path: Path) -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {p.rstrip("*") for p in include}
    copied = {src for _, sources, _ in copies(path) for src in sources}
    assert packages <= copied, f"not copied: {packages - copied}"
    assert {"pyproject.toml", "README.md"} <= copied  # pyproject's readme
    runs = [ins.args for ins in instructions(path) if ins.op == "RUN"]
    assert any("pip install --no-deps --no-build-isolation ." in r for r in runs)
    assert any("infaas --help" in r for r in runs), "the build proves the console script runs"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_runtime_runs_as_an_unprivileged_user_with_its_home(path: Path) -> None:
    runtime = [ins for ins in instructions(path) if ins.stage == "runtime"]
    users = [ins.args for ins in runtime if ins.op == "USER"]
    assert users == ["infaas"]
    assert any("INFAAS_HOME=/var/lib/infaas" in ins.args for ins in runtime if ins.op == "ENV")


def test_the_cpu_image_takes_torch_cpu_build_and_the_scaler_gets_docker_compose() -> None:
    steps = instructions(DOCKERFILES[0])
    assert "PYTHON_IMAGE=python:3.11-slim-bookworm" in [s.args for s in steps if s.op == "ARG"]
    assert next(s.args for s in steps if s.op == "FROM") == "${PYTHON_IMAGE} AS deps"
    install = next(s.args for s in steps if s.op == "RUN" and "requirements.txt" in s.args)
    # torch's index is a build argument whose default is PyTorch's CPU index
    assert "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in [
        s.args for s in steps if s.op == "ARG" and not s.stage
    ]
    assert "TORCH_INDEX_URL" in [s.args for s in steps if s.op == "ARG" and s.stage == "deps"]
    assert '--index-url "${TORCH_INDEX_URL}"' in install
    # a build of the runtime target passes no stage that needs the docker CLI image
    stages = [s.stage for s in steps if s.op == "FROM"]
    assert stages.index("runtime") < stages.index("docker-cli") < stages.index("scaler")
    scaler = [s for s in steps if s.stage == "scaler"]
    copied = " ".join(s.args for s in scaler if s.op == "COPY")
    assert "/usr/local/bin/docker" in copied
    assert "/usr/local/libexec/docker/cli-plugins/docker-compose" in copied
    assert any("docker compose version" in s.args for s in scaler if s.op == "RUN")


def test_the_gpu_image_is_nvidia_tensorrt_with_torch_cuda_and_onnxruntime_gpu() -> None:
    text = DOCKERFILES[1].read_text()
    assert re.search(r"^ARG TENSORRT_IMAGE=nvcr\.io/nvidia/tensorrt:\d\d\.\d\d-py3$", text, re.M)
    steps = instructions(DOCKERFILES[1])
    install = next(s.args for s in steps if s.op == "RUN" and "requirements.txt" in s.args)
    assert "import tensorrt" in install, "the build stops if the image's TensorRT is missing"
    assert "grep -v -E '^(torch|onnxruntime)=='" in install
    assert "grep -v -E '^tensorrt=='" in install
    gpu = (REPO / "requirements-gpu.txt").read_text()
    assert re.search(r"^torch==", gpu, re.M)
    assert re.search(r"^onnxruntime-gpu==", gpu, re.M)
    assert "download.pytorch.org/whl/cu" in gpu


def test_dockerignore_keeps_local_state_and_secrets_out() -> None:
    for path in (".git", ".venv", ".infaas", "infra/.env", "infra/k8s/secrets.env", "tests"):
        assert dockerignored(path), path
    for path in ("infra/.env.example", "README.md", "requirements.txt", "workers/server.py"):
        assert not dockerignored(path), path

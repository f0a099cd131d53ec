"""infra/stacktest: the compose runner on podman that `make stack-test` and the scaler's
stand-in `docker` use. Its reading of compose files (interpolation, merging the override,
profiles) against the real files, and the compose actuator's two commands run through it
against a fake podman that keeps its containers in a JSON file."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import pytest

from scaler.actuators import ActuatorSettings, ComposeActuator, WorkerRef
from tests.infra_support import INFRA, read_env_example

STACKTEST = INFRA / "stacktest"
FILES = [INFRA / "docker-compose.yml", STACKTEST / "docker-compose.podman.yml"]
STANDINS = {"rabbitmq", "db", "db-setup", "redis", "minio", "minio-setup", "prometheus", "flower"}

# A podman for `ps --all --format json`, `run`, `rm`, `start` and `network|volume
# exists|create`: enough for compose_podman's up, ps and down.
FAKE_PODMAN = r"""
import json, sys
from pathlib import Path
state = Path(__file__).with_suffix(".json")
db = json.loads(state.read_text()) if state.exists() else {"containers": [], "calls": []}
args = sys.argv[1:]
db["calls"].append(args)
if args[0] == "ps":
    print(json.dumps(db["containers"]))
elif args[0] == "run":
    name = args[args.index("--name") + 1]
    labels = dict(args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "--label")
    db["containers"].append({"Names": [name], "Id": "id-" + name, "Labels": labels,
                             "State": "running"})
elif args[0] == "rm":
    db["containers"] = [c for c in db["containers"]
                        if c["Names"][0] not in args and c["Id"] not in args]
elif args[0] in ("network", "volume") and args[1] == "exists":
    state.write_text(json.dumps(db)); sys.exit(1)
state.write_text(json.dumps(db))
"""


def load_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compose_podman", STACKTEST / "compose_podman.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


cp = load_module()


def stack_env(tmp_path: Path) -> Path:
    values = read_env_example(INFRA / ".env.example")
    values.update(
        IMAGE_TAG="t1",
        INFAAS_PODMAN_SOCKET="/run/x/podman.sock",
        INFAAS_STACK_ENV_FILE=str(tmp_path / "stack.env"),
        INFAAS_STACK_CERTS=str(tmp_path / "certs"),
    )
    path = tmp_path / "stack.env"
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return path


def test_interpolation_as_compose_does_it() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert (
        cp.interpolate("${SET}-${NONE:-d}-${EMPTY:-e}-${EMPTY-f}-$$HOME", env, "f")
        == "x-d-e--$HOME"
    )
    assert cp.interpolate({"a": ["${SET:?set it}"]}, env, "f") == {"a": ["x"]}
    with pytest.raises(cp.ComposeError, match=r"f: NONE is required: set NONE in infra/.env"):
        cp.interpolate("${NONE:?set NONE in infra/.env}", env, "f")
    with pytest.raises(cp.ComposeError, match="EMPTY is required"):
        cp.interpolate("${EMPTY:?}", env, "f")


def test_a_bad_env_line_is_refused_with_its_place(tmp_path: Path) -> None:
    bad = tmp_path / "bad.env"
    bad.write_text("# comment\nGOOD=1\nno equals sign\n")
    with pytest.raises(cp.ComposeError, match=r"bad.env:3: expected KEY=VALUE"):
        cp.read_env_file(bad)


def test_merge_follows_compose_rules() -> None:
    base = {
        "environment": ["A=1", "B=2"],
        "volumes": ["./x:/x:ro", "data:/data"],
        "command": ["a", "b"],
        "healthcheck": {"test": ["CMD", "t"], "interval": "5s"},
    }
    over = {
        "environment": {"B": "3", "C": None},
        "volumes": ["/other:/data"],
        "command": ["c"],
        "healthcheck": {"test": ["CMD", "u"]},
    }
    merged = cp.merge_service(base, over)
    assert merged["environment"] == {"A": "1", "B": "3", "C": ""}
    assert merged["volumes"] == ["./x:/x:ro", "/other:/data"]  # by target path
    assert merged["command"] == ["c"]  # lists are replaced
    assert merged["healthcheck"] == {"test": ["CMD", "u"], "interval": "5s"}


def test_the_stack_test_project_from_the_real_files(tmp_path: Path) -> None:
    env = stack_env(tmp_path)
    project = cp.open_project([str(f) for f in FILES], [str(env)], "p", [])
    # no Docker API, no Caddy, no Grafana here; the opt-in profiles stay off
    assert set(project.services) == STANDINS | {
        "check-secrets", "rabbitmq-setup", "gateway", "worker-cpu", "scaler"
    }  # fmt: skip
    for name in STANDINS:
        assert project.services[name]["image"] == "infaas-standins:t1", name
    for name in ("check-secrets", "rabbitmq-setup", "gateway", "worker-cpu"):
        assert project.services[name]["image"] == "infaas-cpu:t1", name
    scaler = project.services["scaler"]
    assert scaler["command"] == ["infaas", "--loglevel", "INFO", "scaler", "--actuator", "compose"]
    assert {cp._volume_target(v) for v in scaler["volumes"]} == {
        "/stack", "/run/podman/podman.sock", "/run/infaas/stack.env"
    }  # fmt: skip
    assert scaler["environment"]["COMPOSE_FILE"].split(":") == [
        "/stack/docker-compose.yml", "/stack/stacktest/docker-compose.podman.yml"
    ]  # fmt: skip
    # scaled from inside the scaler, through podman's API: nothing bound from the host
    assert "volumes" not in project.services["worker-cpu"]
    args = cp.run_args(project, "db", 1)
    assert args[args.index("--name") + 1] == "p-db-1"
    assert f"{INFRA}/postgres/tls-entrypoint.sh:/etc/infaas/tls-entrypoint.sh:ro" in args
    assert "p_db-data:/var/lib/postgresql/data" in args
    assert json.loads(args[args.index("--entrypoint") + 1]) == [
        "/bin/sh", "/etc/infaas/tls-entrypoint.sh"
    ]  # fmt: skip
    assert args[-2:] == ["infaas-standins:t1", "postgres"]
    assert "com.docker.compose.service=db" in args
    assert args[args.index("--network-alias") + 1] == "db"


def test_a_missing_secret_names_the_variable(tmp_path: Path) -> None:
    env = tmp_path / "short.env"
    env.write_text("IMAGE_TAG=t1\n")
    with pytest.raises(cp.ComposeError, match="RABBITMQ_USER is required: set RABBITMQ_USER"):
        cp.open_project([str(f) for f in FILES], [str(env)], "p", [])


@pytest.fixture
def fake_podman(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    script = tmp_path / "podman.py"
    script.write_text(FAKE_PODMAN)
    monkeypatch.setenv("INFAAS_PODMAN", f"{sys.executable} {script}")
    return script.with_suffix(".json")


def test_the_compose_actuator_scales_through_it(tmp_path: Path, fake_podman: Path) -> None:
    """ComposeActuator's own commands (`docker compose ps|up --scale`), run as the
    scaler's stand-in `docker` runs them: COMPOSE_FILE and COMPOSE_ENV_FILES set."""
    env = {
        **os.environ,
        "COMPOSE_FILE": ":".join(str(f) for f in FILES),
        "COMPOSE_ENV_FILES": str(stack_env(tmp_path)),
        "COMPOSE_PROJECT_NAME": "p",
    }

    def docker(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
        assert list(args[:2]) in (["docker", "compose"], ["docker", "rm"])
        script = [sys.executable, str(STACKTEST / "compose_podman.py")]
        return subprocess.run(
            [*script, *args[1:]], env=env, capture_output=True, text=True, check=False
        )

    actuator = ComposeActuator(ActuatorSettings(actuator="compose"), run=docker)
    assert actuator.count("cpu") == 0
    assert actuator.add_worker("cpu") == "scaled compose service worker-cpu to 1"
    assert actuator.add_worker("cpu") == "scaled compose service worker-cpu to 2"
    assert actuator.count("cpu") == 2
    state = json.loads(fake_podman.read_text())
    names = [c["Names"][0] for c in state["containers"]]
    assert names == ["p-worker-cpu-1", "p-worker-cpu-2"]
    # --no-deps: nothing else was started; the networks were made first
    assert [c[0] for c in state["calls"] if c[0] == "run"] == ["run", "run"]
    assert ["network", "create"] in [c[:2] for c in state["calls"]]
    removed = actuator.remove_worker(WorkerRef("w", "cpu"))
    assert removed == "scaled compose service worker-cpu to 1"
    state = json.loads(fake_podman.read_text())
    assert [c["Names"][0] for c in state["containers"]] == ["p-worker-cpu-1"]  # the newest went
    # a drained worker named by its host (its container's id) goes itself, not the newest
    actuator.add_worker("cpu")
    gone = actuator.remove_worker(WorkerRef("w", "cpu", host="id-p-worker-cpu-1"))
    assert gone == "removed the container id-p-worker- of compose service worker-cpu"
    state = json.loads(fake_podman.read_text())
    assert [c["Names"][0] for c in state["containers"]] == ["p-worker-cpu-2"]
    # the next scale-up fills the gap and removes nothing
    assert actuator.add_worker("cpu") == "scaled compose service worker-cpu to 2"
    state = json.loads(fake_podman.read_text())
    assert sorted(c["Names"][0] for c in state["containers"]) == [
        "p-worker-cpu-1",
        "p-worker-cpu-2",
    ]


def test_a_bad_scale_is_refused(tmp_path: Path, fake_podman: Path) -> None:
    env = stack_env(tmp_path)
    args = ["compose", "--env-file", str(env), *(a for f in FILES for a in ("-f", str(f)))]
    assert cp.main([*args, "up", "--scale", "worker-cpu=two", "worker-cpu"]) == 1
    assert cp.main([*args, "up", "--no-deps", "no-such-service"]) == 1
    assert not fake_podman.exists() or not json.loads(fake_podman.read_text())["containers"]


def test_the_worker_host_trusts_the_tests_ca_not_infra_certs(tmp_path: Path) -> None:
    env = stack_env(tmp_path)
    with env.open("a") as out:
        out.write("STACK_HOST=10.254.25.1\n")
    files = [INFRA / "docker-compose.worker.yml", STACKTEST / "docker-compose.worker.podman.yml"]
    project = cp.open_project([str(f) for f in files], [str(env)], "w", [])
    assert set(project.services) == {"check-secrets", "worker-cpu"}
    worker = project.services["worker-cpu"]
    assert worker["volumes"] == [f"{tmp_path / 'certs'}:/etc/infaas/certs:ro"]
    assert "@10.254.25.1:5671/infaas" in worker["environment"]["INFAAS_BROKER_URL"]
    # and the stack's TLS services take the same folder
    stack = cp.open_project([str(f) for f in FILES], [str(env)], "p", ["remote-workers"])
    for name in ("db", "remote-access"):
        mounts = stack.services[name]["volumes"]
        assert f"{tmp_path / 'certs'}:/certs:ro" in mounts, name
        assert "./certs:/certs:ro" not in mounts, name
    assert stack.services["remote-access"]["image"] == "infaas-standins:t1"

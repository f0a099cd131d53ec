"""The part of `docker compose` that the stack and the scaler's compose actuator use, on
podman, for machines without a Docker engine (`make stack-test`). Standalone (standard
library and PyYAML): the stack test imports it, and in the scaler's stand-in image it is
the `docker` program, so the actuator's `docker compose ps|up --scale`, `docker rm` run.

    compose_podman.py [compose] [-f FILE]... [-p NAME] [--env-file FILE] [--profile P]
        up [--detach] [--no-deps] [--no-recreate] [--scale SERVICE=N]... [SERVICE...] |
        ps [--quiet] [--status STATUS] [SERVICE...] | down [--volumes] | rm CONTAINER...

As docker compose: anchors and merge keys; ${VAR}, ${VAR:-default}, ${VAR-default},
${VAR:?message}, ${VAR?message} and $$ from the environment, then the env files
(COMPOSE_ENV_FILES, else .env beside the first file); later files merged over earlier ones
(mappings key by key, `volumes` by target, other lists replaced); inactive profiles skipped;
COMPOSE_FILE and COMPOSE_PROJECT_NAME honoured; `depends_on` conditions service_started,
service_healthy (its test run with `podman exec`) and service_completed_successfully; docker
compose's labels on containers, networks and volumes. Podman is INFAAS_PODMAN (`podman`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

LABEL = "com.docker.compose"
_VAR = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|([A-Za-z_]\w*))")


class ComposeError(Exception):
    """What went wrong and what to do; the command exits 1 with this message."""


# -- reading the files ----------------------------------------------------------------


def read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        key, sep, value = text.partition("=")
        if not sep:
            raise ComposeError(f"{path}:{number}: expected KEY=VALUE, got {text!r}")
        values[key.strip()] = value.strip().strip("'\"")
    return values


def interpolate(node: Any, env: dict[str, str], where: str) -> Any:
    if isinstance(node, dict):
        return {key: interpolate(value, env, where) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(value, env, where) for value in node]
    if not isinstance(node, str):
        return node

    def one(match: re.Match[str]) -> str:
        dollar, name, op, arg, bare = match.groups()
        if dollar:
            return "$"
        name = name or bare
        value = env.get(name)
        empty = value is None or (value == "" and op is not None and op.startswith(":"))
        if op in (":-", "-"):
            return arg if empty else str(value)
        if op in (":?", "?") and empty:
            raise ComposeError(f"{where}: {name} is required: {arg or 'set it'}")
        return value or ""

    return _VAR.sub(one, node)


def _environment(value: Any) -> dict[str, str]:
    if isinstance(value, list):
        pairs = (item.partition("=") for item in value)
        return {key: val for key, sep, val in pairs if sep}
    return {key: "" if val is None else str(val) for key, val in (value or {}).items()}


def _volume_target(item: Any) -> str:
    if isinstance(item, dict):
        return str(item["target"])
    parts = str(item).split(":")
    return parts[1] if len(parts) > 1 else parts[0]


def merge_service(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        old = merged.get(key)
        if key == "environment":
            merged[key] = {**_environment(old), **_environment(value)}
        elif key == "volumes" and isinstance(old, list):
            kept = [v for v in old if _volume_target(v) not in {_volume_target(n) for n in value}]
            merged[key] = kept + list(value)
        elif isinstance(old, dict) and isinstance(value, dict):
            merged[key] = merge_service(old, value)
        else:
            merged[key] = value
    return merged


@dataclass(frozen=True)
class Project:
    name: str
    directory: Path
    services: dict[str, dict[str, Any]]
    networks: dict[str, dict[str, Any]]
    volumes: dict[str, dict[str, Any]]

    def dependencies(self, service: str) -> dict[str, str]:
        """depends_on as {service: condition}, active services only."""
        raw = self.services[service].get("depends_on") or {}
        if isinstance(raw, list):
            raw = {name: {"condition": "service_started"} for name in raw}
        return {
            name: (spec or {}).get("condition", "service_started")
            for name, spec in raw.items()
            if name in self.services
        }


def load(files: list[Path], env: dict[str, str], name: str, profiles: set[str]) -> Project:
    if not files:
        raise ComposeError("no compose file: pass -f FILE or set COMPOSE_FILE")
    top: dict[str, dict[str, Any]] = {"services": {}, "networks": {}, "volumes": {}}
    for path in files:
        if not path.is_file():
            raise ComposeError(f"compose file {path} does not exist")
        doc = interpolate(yaml.safe_load(path.read_text()) or {}, env, str(path))
        for section, known in top.items():
            for key, value in (doc.get(section) or {}).items():
                if section == "services" and key in known:
                    known[key] = merge_service(known[key], value)
                else:
                    known[key] = value or {}
    services = {
        key: spec
        for key, spec in top["services"].items()
        if not spec.get("profiles") or profiles & set(spec["profiles"])
    }
    top["networks"].setdefault("default", {})
    return Project(name, files[0].parent.resolve(), services, top["networks"], top["volumes"])


def podman_command() -> list[str]:
    return shlex.split(os.environ.get("INFAAS_PODMAN", "podman"))


def podman(*args: str, check: bool = True, timeout_s: float = 600) -> str:
    command = [*podman_command(), *args]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise ComposeError(f"`{shlex.join(command)}` took over {timeout_s:.0f} s") from exc
    if check and done.returncode != 0:
        raise ComposeError(f"`{shlex.join(command[:6])} ...` failed: {done.stderr.strip()}")
    return done.stdout


def containers(project: str) -> list[dict[str, Any]]:
    """The project's containers: name, id, service, number and state."""
    out = podman("ps", "--all", "--format", "json", "--filter", f"label={LABEL}.project={project}")
    found = []
    for item in json.loads(out or "[]"):
        labels = item.get("Labels") or {}
        if labels.get(f"{LABEL}.project") != project:
            continue
        found.append({
            "name": item["Names"][0],
            "id": item["Id"],
            "service": labels.get(f"{LABEL}.service", ""),
            "number": int(labels.get(f"{LABEL}.container-number", "0")),
            "state": item.get("State", ""),
        })  # fmt: skip
    return sorted(found, key=lambda c: (c["service"], c["number"]))


def _labels(project: Project, *extra: str) -> list[str]:
    labels = (f"{LABEL}.project={project.name}", *extra)
    return [arg for label in labels for arg in ("--label", label)]


def _networks(spec: dict[str, Any]) -> list[str]:
    nets = spec.get("networks") or ["default"]
    return list(nets) if isinstance(nets, (list, dict)) else ["default"]


def _mount(project: Project, item: Any) -> str:
    if isinstance(item, dict):
        source, target = str(item.get("source", "")), str(item["target"])
        mode = "ro" if item.get("read_only") else ""
    else:
        parts = str(item).split(":")
        source, target = parts[0], parts[1] if len(parts) > 1 else parts[0]
        mode = parts[2] if len(parts) > 2 else ""
    if source.startswith((".", "/", "~")):
        source = str((project.directory / Path(source).expanduser()).resolve())
    elif source:
        source = f"{project.name}_{source}"
    return ":".join(p for p in (source, target, mode) if p)


def run_args(project: Project, service: str, number: int) -> list[str]:
    spec = project.services[service]
    name = spec.get("container_name") or f"{project.name}-{service}-{number}"
    args = ["run", "--detach", "--name", name]
    args += _labels(project, f"{LABEL}.service={service}", f"{LABEL}.container-number={number}",
                    f"{LABEL}.oneoff=False")  # fmt: skip
    for net in _networks(spec):
        args += ["--network", f"{project.name}_{net}"]
    args += ["--network-alias", service]
    for key, flag in (("hostname", "--hostname"), ("user", "--user"), ("working_dir", "-w")):
        if spec.get(key):
            args += [flag, str(spec[key])]
    for key, value in _environment(spec.get("environment")).items():
        args += ["--env", f"{key}={value}"]
    for item in spec.get("volumes") or []:
        args += ["--volume", _mount(project, item)]
    for item in spec.get("ports") or []:
        args += ["--publish", str(item)]
    if "entrypoint" in spec:
        entry = spec["entrypoint"]
        args += ["--entrypoint", json.dumps(entry if isinstance(entry, list) else [entry])]
    args += ["--restart", str(spec.get("restart", "no"))]
    if not spec.get("image"):
        raise ComposeError(f"service {service} has no image: build it first and name it")
    args.append(str(spec["image"]))
    command = spec.get("command")
    if command is not None:
        args += command if isinstance(command, list) else shlex.split(str(command))
    return args


def _health_test(spec: dict[str, Any]) -> list[str] | None:
    test = (spec.get("healthcheck") or {}).get("test")
    if not test or (spec.get("healthcheck") or {}).get("disable") or test == ["NONE"]:
        return None
    if isinstance(test, str):
        return ["/bin/sh", "-c", test]
    if test[0] == "CMD-SHELL":
        return ["/bin/sh", "-c", " ".join(test[1:])]
    return list(test[1:]) if test[0] == "CMD" else list(test)


def _state(name: str) -> tuple[str, int]:
    out = podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", name)
    status, _, code = out.strip().partition(" ")
    return status, int(code or 0)


def logs(name: str, lines: int = 15) -> str:
    """The container's last output lines, its standard error included."""
    command = [*podman_command(), "logs", "--tail", str(lines), name]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    return done.stdout + done.stderr


def wait_for(
    project: Project,
    service: str,
    condition: str,
    timeout_s: float,
    abort: threading.Event | None = None,
) -> None:
    """Block until every container of ``service`` meets ``condition`` (they may be on their
    way: another thread of `up` starts them); one that exits is waited for if it restarts."""
    test = _health_test(project.services[service])
    if condition == "service_healthy" and test is None:
        raise ComposeError(f"service {service} is waited on as healthy but has no healthcheck")
    restarts = str(project.services[service].get("restart", "no")) != "no"
    deadline = time.monotonic() + timeout_s

    def tick(what: str) -> None:
        if abort is not None and abort.is_set():
            raise ComposeError(f"stopped waiting for {what}: another service failed")
        if time.monotonic() > deadline:
            tail = logs(what) if what != service else ""
            raise ComposeError(f"{what} not {condition} in {timeout_s:.0f} s:\n{tail}")
        time.sleep(2)

    while not (names := [c["name"] for c in containers(project.name) if c["service"] == service]):
        tick(service)
    for name in names:
        while True:
            status, code = _state(name)
            if condition == "service_completed_successfully" and status in ("exited", "stopped"):
                if code != 0:
                    raise ComposeError(f"{name} exited with {code}:\n{logs(name)}")
                break
            if status in ("exited", "stopped") and not restarts:
                raise ComposeError(f"{name} stopped ({code}) while waited on:\n{logs(name)}")
            if condition == "service_started" and status == "running":
                break
            if condition == "service_healthy" and status == "running" and test is not None:
                probe = [*podman_command(), "exec", name, *test]
                try:
                    done = subprocess.run(probe, capture_output=True, timeout=30, check=False)
                    if done.returncode == 0:
                        break
                except subprocess.TimeoutExpired:
                    pass
            tick(name)


def _order(project: Project, wanted: list[str], with_deps: bool) -> list[str]:
    order: list[str] = []

    def visit(service: str, path: tuple[str, ...]) -> None:
        if service in path:
            raise ComposeError(f"depends_on cycle: {' -> '.join((*path, service))}")
        if service in order:
            return
        if with_deps:
            for dep in project.dependencies(service):
                visit(dep, (*path, service))
        order.append(service)

    for service in wanted:
        if service not in project.services:
            raise ComposeError(f"no such service: {service} (or its profile is not active)")
        visit(service, ())
    return order


def _ensure_resources(project: Project, services: list[str]) -> None:
    for net in {n for s in services for n in _networks(project.services[s])}:
        name = f"{project.name}_{net}"
        if subprocess.run([*podman_command(), "network", "exists", name], check=False).returncode:
            internal = ["--internal"] if (project.networks.get(net) or {}).get("internal") else []
            podman("network", "create", *_labels(project), *internal, name)
    for vol in project.volumes:
        name = f"{project.name}_{vol}"
        if subprocess.run([*podman_command(), "volume", "exists", name], check=False).returncode:
            podman("volume", "create", *_labels(project), name)


def _replicas(project: Project, service: str, replicas: int) -> None:
    """``replicas`` containers of ``service``, counted as docker compose counts them: the
    newest beyond the count removed, stopped ones started, new ones under free numbers."""
    have = [c for c in containers(project.name) if c["service"] == service]
    for extra in have[replicas:][::-1]:
        podman("rm", "--force", "--time", "30", extra["name"])
    kept = have[:replicas]
    for c in (c for c in kept if c["state"] in ("exited", "created", "stopped")):
        podman("start", c["name"])
    free = (n for n in range(1, replicas + len(have) + 1) if n not in {c["number"] for c in kept})
    for _missing in range(replicas - len(kept)):
        podman(*run_args(project, service, next(free)))
    print(f"{service}: {replicas} container(s)", file=sys.stderr)


def up(
    project: Project,
    wanted: list[str],
    scale: dict[str, int],
    no_deps: bool = False,
    timeout_s: float = 900,
) -> None:
    """Every service at once, as docker compose does: each starts once the services it
    depends on meet their conditions. The first failure stops the others' waiting."""
    services = _order(project, wanted or list(project.services), not no_deps)
    _ensure_resources(project, services)
    errors: list[ComposeError] = []
    abort = threading.Event()

    def one(service: str) -> None:
        try:
            if not no_deps:
                for dep, condition in project.dependencies(service).items():
                    wait_for(project, dep, condition, timeout_s, abort)
            spec = project.services[service]
            default = int((spec.get("deploy") or {}).get("replicas", 1))
            _replicas(project, service, scale.get(service, default))
        except ComposeError as exc:
            errors.append(exc)
            abort.set()

    threads = [threading.Thread(target=one, args=(s,), name=s) for s in services]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def ps(project: Project, services: list[str], status: str | None, quiet: bool) -> str:
    rows = [
        c
        for c in containers(project.name)
        if (not services or c["service"] in services) and (status is None or c["state"] == status)
    ]
    if quiet:
        return "".join(f"{c['id']}\n" for c in rows)
    return "".join(f"{c['name']}\t{c['service']}\t{c['state']}\n" for c in rows)


def down(project_name: str, volumes: bool) -> None:
    names = [c["name"] for c in containers(project_name)]
    if names:
        podman("rm", "--force", "--time", "20", *names)
    label = f"label={LABEL}.project={project_name}"
    for net in podman("network", "ls", "--quiet", "--filter", label).split():
        podman("network", "rm", net)
    if volumes:
        for vol in podman("volume", "ls", "--quiet", "--filter", label).split():
            podman("volume", "rm", "--force", vol)


def open_project(files: list[str], env_files: list[str], name: str | None,
                 profiles: list[str]) -> Project:  # fmt: skip
    paths = [Path(f) for f in files] or [
        Path(f)
        for f in os.environ.get("COMPOSE_FILE", "").split(
            os.environ.get("COMPOSE_PATH_SEPARATOR", ":")
        )
        if f
    ]
    if not paths:
        raise ComposeError("no compose file: pass -f FILE or set COMPOSE_FILE")
    env_paths = [Path(f) for f in env_files] or [
        Path(f) for f in os.environ.get("COMPOSE_ENV_FILES", "").split(",") if f
    ]
    if not env_paths and (paths[0].parent / ".env").is_file():
        env_paths = [paths[0].parent / ".env"]
    env: dict[str, str] = {}
    for path in env_paths:
        if not path.is_file():
            raise ComposeError(f"env file {path} does not exist")
        env.update(read_env_file(path))
    env.update(os.environ)
    project = name or env.get("COMPOSE_PROJECT_NAME") or paths[0].parent.resolve().name
    return load(paths, env, project, set(profiles))


def main(argv: list[str]) -> int:
    if argv[:1] == ["compose"]:  # run as `docker compose ...`
        argv = argv[1:]
    parser = argparse.ArgumentParser(prog="docker compose (podman)")
    parser.add_argument("-f", "--file", action="append", default=[])
    parser.add_argument("-p", "--project-name")
    parser.add_argument("--env-file", action="append", default=[])
    parser.add_argument("--profile", action="append", default=[])
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up")
    p_up.add_argument("-d", "--detach", action="store_true")  # always detached
    for flag in ("--no-deps", "--no-recreate"):  # never recreated
        p_up.add_argument(flag, action="store_true")
    p_up.add_argument("--scale", action="append", default=[])
    p_up.add_argument("--wait-timeout", type=float, default=900)
    p_up.add_argument("services", nargs="*")
    p_ps = sub.add_parser("ps")
    p_ps.add_argument("-q", "--quiet", action="store_true")
    p_ps.add_argument("--status")
    p_ps.add_argument("services", nargs="*")
    p_down = sub.add_parser("down")
    p_down.add_argument("-v", "--volumes", action="store_true")
    p_rm = sub.add_parser("rm")  # `docker rm --force CONTAINER...`, as the actuator runs it
    p_rm.add_argument("-f", "--force", action="store_true")  # always forced
    p_rm.add_argument("containers", nargs="+")
    args = parser.parse_args(argv)
    try:
        if args.command == "rm":
            podman("rm", "--force", "--time", "30", *args.containers)
            return 0
        project = open_project(args.file, args.env_file, args.project_name, args.profile)
        if args.command == "up":
            scale: dict[str, int] = {}
            for item in args.scale:
                service, sep, count = item.partition("=")
                if not sep or not count.isdigit():
                    raise ComposeError(f"--scale takes SERVICE=NUMBER, got {item!r}")
                scale[service] = int(count)
            up(project, args.services, scale, args.no_deps, args.wait_timeout)
        elif args.command == "ps":
            sys.stdout.write(ps(project, args.services, args.status, args.quiet))
        else:
            down(project.name, args.volumes)
    except ComposeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The compose files, checked statically: the Compose Specification schema (vendored),
then what the schema cannot know — every command is a real ``infaas`` command, every
``INFAAS_*`` variable a real setting with a valid value, services wait for health checks,
no secret is written in the file, and the secret check guards the whole stack."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.infra_support import (
    CREDENTIAL,
    GUARD_VARIABLES,
    INFRA,
    REPO,
    CommandError,
    InterpolationError,
    check_secrets_module,
    environment,
    interpolate,
    interpolate_tree,
    load_yaml,
    parse_infaas,
    read_env_example,
    references,
    setting_problems,
    strings,
)

STACK = INFRA / "docker-compose.yml"
REMOTE = INFRA / "docker-compose.worker.yml"
# Each compose file and the example of the .env that sits beside it.
COMPOSE_FILES = {STACK: INFRA / ".env.example", REMOTE: INFRA / "worker.env.example"}
SCHEMA = INFRA / "schema" / "compose-spec.json"
IMAGE_HOME = "/opt/infaas/"  # where the Dockerfiles copy infra/ files: /opt/infaas/infra/...


def compose_ids(path: Path) -> str:
    return path.name


def raw(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(path)
    return data


def resolved(path: Path) -> dict[str, Any]:
    """The file as Compose sees it with the example .env (a development run)."""
    env = {**read_env_example(COMPOSE_FILES[path]), "INFAAS_DEV": "1"}
    data: dict[str, Any] = interpolate_tree(raw(path), env)
    return data


def infaas_services(path: Path) -> list[tuple[Path, str]]:
    services = raw(path)["services"]
    return [
        (path, name)
        for name, service in services.items()
        if str(service.get("image", "")).startswith("infaas-")
        and service.get("command", [""])[0] == "infaas"
    ]


ALL_INFAAS_SERVICES = [item for path in COMPOSE_FILES for item in infaas_services(path)]


def schema_errors(document: dict[str, Any]) -> list[str]:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft201909Validator(schema)
    return [
        f"{'/'.join(str(p) for p in err.absolute_path)}: {err.message}"
        for err in validator.iter_errors(document)
    ]


# --- the schema -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", list(COMPOSE_FILES), ids=compose_ids)
def test_compose_file_matches_the_compose_specification(path: Path) -> None:
    assert schema_errors(resolved(path)) == []


def test_the_schema_check_catches_a_misspelt_key_and_a_wrong_type() -> None:
    document = resolved(STACK)
    document["services"]["gateway"]["healthchek"] = document["services"]["gateway"].pop(
        "healthcheck"
    )
    document["services"]["worker-cpu"]["deploy"]["replicas"] = "two"
    errors = schema_errors(document)
    assert any("healthchek" in e for e in errors), errors
    assert any("replicas" in e for e in errors), errors


@pytest.mark.parametrize("path", list(COMPOSE_FILES), ids=compose_ids)
def test_every_variable_is_in_the_example_env_or_has_a_default(path: Path) -> None:
    example = read_env_example(COMPOSE_FILES[path])
    missing = sorted(
        {
            f"{ref.name} ({where})"
            for where, text in strings(raw(path))
            for ref in references(text)
            if ref.name not in example and ref.op not in (":-", "-")
        }
    )
    assert missing == [], f"not in {COMPOSE_FILES[path].name} and no default: {missing}"


def test_a_missing_secret_stops_compose_with_its_message() -> None:
    env = read_env_example(INFRA / ".env.example")
    del env["POSTGRES_PASSWORD"]
    with pytest.raises(InterpolationError, match="POSTGRES_PASSWORD: set POSTGRES_PASSWORD in"):
        interpolate_tree(raw(STACK), env)


def test_interpolation_follows_compose() -> None:
    env = {"A": "x", "EMPTY": ""}
    assert interpolate("$${A}-${A}-${B:-d}-${EMPTY:-e}-${EMPTY-f}", env) == "${A}-x-d-e-"
    with pytest.raises(InterpolationError, match="B: needed"):
        interpolate("${B:?needed}", env)


# --- secrets --------------------------------------------------------------------------------


def _credential_refs_are_required(text: str) -> bool:
    refs = references(text)
    return bool(refs) and all(ref.op == ":?" for ref in refs)


def secret_problems(compose: dict[str, Any], example: dict[str, str]) -> list[str]:
    """Secrets written into a compose file instead of taken from .env."""
    secrets = {v for k, v in example.items() if check_secrets_module().is_secret(k)}
    problems = [
        f"{where}: the example secret {value!r} is written here"
        for where, text in strings(compose)
        for value in secrets
        if value in text
    ]
    for name, service in compose["services"].items():
        for key, value in environment(service).items():
            if CREDENTIAL.search(key) and not _credential_refs_are_required(value):
                problems.append(f"{name}.{key} = {value!r}: credentials come from ${{VAR:?...}}")
    for where, text in strings(compose):
        for userinfo in re.findall(r"[a-z0-9+]+://([^@/\s]*)@", text):
            literal = re.sub(r"\$\{[^}]*\}|:", "", userinfo)
            if literal or not _credential_refs_are_required(userinfo):
                problems.append(f"{where}: URL credentials {userinfo!r} are not all ${{VAR:?}}")
        for ref in references(text):
            if CREDENTIAL.search(ref.name) and ref.op != ":?":
                problems.append(f"{where}: {ref.name} must be required (${{{ref.name}:?...}})")
    return problems


@pytest.mark.parametrize("path", list(COMPOSE_FILES), ids=compose_ids)
def test_no_secret_is_written_in_the_compose_file(path: Path) -> None:
    assert secret_problems(raw(path), read_env_example(COMPOSE_FILES[path])) == []


def test_the_secret_check_finds_literals_defaults_and_urls() -> None:
    compose = {
        "services": {
            "a": {"environment": {"POSTGRES_PASSWORD": "hunter2hunter2"}},
            "b": {"environment": {"REDIS_PASSWORD": "${REDIS_PASSWORD:-changethis}"}},
            "c": {"environment": {"URL": "amqp://infaas:${RABBITMQ_PASSWORD:?x}@rabbitmq/"}},
            "d": {"command": ["sh", "-c", "login changethis"]},
        }
    }
    problems = "\n".join(secret_problems(compose, {"REDIS_PASSWORD": "changethis"}))
    assert "a.POSTGRES_PASSWORD" in problems
    assert "b.REDIS_PASSWORD" in problems
    assert "REDIS_PASSWORD must be required" in problems
    assert "URL credentials 'infaas:${RABBITMQ_PASSWORD:?x}'" in problems
    assert "the example secret 'changethis' is written here" in problems


@pytest.mark.parametrize("path", list(COMPOSE_FILES), ids=compose_ids)
def test_check_secrets_guards_every_service_and_every_credential(path: Path) -> None:
    services = raw(path)["services"]
    guard = services["check-secrets"]
    assert guard.get("restart") == "no"
    assert guard["command"][:2] == ["python", f"{IMAGE_HOME}infra/check_secrets.py"]
    example_in_image = guard["command"][guard["command"].index("--example") + 1]
    example_file = REPO / example_in_image.removeprefix(IMAGE_HOME)
    assert example_file == COMPOSE_FILES[path], "the guard compares with this file's example"
    dockerfile = (INFRA / "docker" / "Dockerfile.cpu").read_text()
    copied = re.search(rf"^COPY .*\b{re.escape(example_file.name)}\b.* infra/$", dockerfile, re.M)
    assert copied, f"Dockerfile.cpu does not copy {example_file.name} into the image"
    module = check_secrets_module()
    guarded = environment(guard)
    credentials = module.credential_keys(read_env_example(example_file))
    assert sorted(k for k in guarded if k in credentials) == credentials
    assert guarded[module.DEV_FLAG] == "${INFAAS_DEV:-0}"
    assert {module.DEV_FLAG} == GUARD_VARIABLES
    used = {
        ref.name
        for _, text in strings(services)
        for ref in references(text)
        if CREDENTIAL.search(ref.name)
    }
    assert used <= set(credentials), (
        f"credentials the guard does not check: {used - set(credentials)}"
    )
    for name, service in services.items():
        if name == "check-secrets":
            continue
        condition = (service.get("depends_on") or {}).get("check-secrets", {}).get("condition")
        assert condition == "service_completed_successfully", f"{name} starts before the check"


# --- commands and settings ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "service"),
    ALL_INFAAS_SERVICES,
    ids=[f"{p.name}:{s}" for p, s in ALL_INFAAS_SERVICES],
)
def test_service_command_is_a_real_infaas_command(path: Path, service: str) -> None:
    spec = raw(path)["services"][service]
    try:
        args = parse_infaas(spec["command"])
    except CommandError as exc:
        pytest.fail(str(exc))
    assert callable(args.handler)
    if args.command == "worker":
        assert service == f"worker-{args.hardware}", "worker-cpu runs CPU workers, worker-gpu GPU"


def test_the_stack_runs_gateway_workers_and_the_compose_scaler() -> None:
    commands = {name: spec.get("command", []) for name, spec in raw(STACK)["services"].items()}
    assert commands["gateway"][commands["gateway"].index("gateway") :] == [
        "gateway",
        "--host",
        "0.0.0.0",
        "--port",
        "8080",
    ]
    assert commands["worker-cpu"][-2:] == ["--hardware", "cpu"]
    assert commands["worker-gpu"][-2:] == ["--hardware", "gpu"]
    assert commands["scaler"][-3:] == ["scaler", "--actuator", "compose"]


def test_a_wrong_flag_is_caught() -> None:
    with pytest.raises(CommandError, match="unrecognized arguments: --gpus"):
        parse_infaas(["infaas", "worker", "--gpus", "1"])
    with pytest.raises(CommandError, match="invalid choice"):
        parse_infaas(["infaas", "worker", "--hardware", "tpu"])


@pytest.mark.parametrize("path", list(COMPOSE_FILES), ids=compose_ids)
def test_every_infaas_variable_is_a_real_setting_with_a_valid_value(path: Path) -> None:
    problems = []
    for name, service in resolved(path)["services"].items():
        env = environment(service)
        if name != "check-secrets":
            assert not GUARD_VARIABLES & set(env), f"{name} needs no {GUARD_VARIABLES}"
        problems += [f"{name}: {p}" for p in setting_problems(env)]
    assert problems == []


def test_the_settings_check_refuses_unknown_names_and_bad_values() -> None:
    problems = setting_problems(
        {
            "INFAAS_BROKER_URLL": "amqp://x",
            "INFAAS_STATE_URL": "http://redis:6379",
            "INFAAS_WORKER_METRICS_PORT": "99999",
            "INFAAS_STORE_URL": "s3://minio:9000/bucket",
        }
    )
    joined = "\n".join(problems)
    assert "INFAAS_BROKER_URLL is not a setting" in joined
    assert "state_url" in joined
    assert "metrics_port" in joined
    assert "INFAAS_STORE_URL" in joined


# --- dependencies, health, scaling ----------------------------------------------------------


@pytest.mark.parametrize("path", list(COMPOSE_FILES), ids=compose_ids)
def test_services_wait_for_the_health_of_what_they_use(path: Path) -> None:
    services = raw(path)["services"]
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
        for dependency, rule in depends.items():
            target = services[dependency]
            if rule["condition"] == "service_healthy":
                assert target.get("healthcheck", {}).get("test"), f"{dependency} has no check"
            else:
                assert rule["condition"] == "service_completed_successfully", (name, dependency)
                assert target.get("restart") == "no", f"{dependency} is no one-shot"
    for name in ("gateway", "worker-cpu", "worker-gpu"):
        if name in services:
            assert services[name]["healthcheck"]["test"], name


def test_infaas_services_wait_for_broker_catalog_state_and_bucket() -> None:
    services = raw(STACK)["services"]
    for name in ("gateway", "worker-cpu", "worker-gpu", "scaler"):
        depends = services[name]["depends_on"]
        for dependency in ("rabbitmq", "db", "redis"):
            assert depends[dependency]["condition"] == "service_healthy", (name, dependency)
        assert depends["minio-setup"]["condition"] == "service_completed_successfully"


def test_worker_services_can_be_scaled_by_the_compose_actuator() -> None:
    services = raw(STACK)["services"]
    for name in ("worker-cpu", "worker-gpu"):
        worker = services[name]
        assert "container_name" not in worker, f"{name} could not have two replicas"
        assert "ports" not in worker, f"{name}: a published port blocks a second replica"
    gpu = services["worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    scaler = services["scaler"]
    assert scaler["volumes"] == [".:/stack:ro"], "Docker's API comes through socket-proxy"
    env = environment(scaler)
    assert env["DOCKER_HOST"] == "tcp://socket-proxy:2375"
    assert env["COMPOSE_FILE"] == f"/stack/{STACK.name}"
    assert env["COMPOSE_PROJECT_NAME"].startswith("${COMPOSE_PROJECT_NAME:?")
    assert "COMPOSE_PROJECT_NAME" in read_env_example(INFRA / ".env.example")


# --- files, images, monitoring --------------------------------------------------------------


@pytest.mark.parametrize("path", list(COMPOSE_FILES), ids=compose_ids)
def test_builds_and_mounted_files_exist(path: Path) -> None:
    for name, service in raw(path)["services"].items():
        build = service.get("build")
        if build:
            context = (path.parent / build["context"]).resolve()
            assert context == REPO, f"{name}: build from the repository root"
            dockerfile = context / build["dockerfile"]
            assert dockerfile.is_file(), dockerfile
            if "target" in build:
                stages = re.findall(r"^FROM \S+ AS (\S+)$", dockerfile.read_text(), re.M)
                assert build["target"] in stages, (name, build["target"], stages)
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith((".", "/")) and source != "/var/run/docker.sock":
                assert (path.parent / source).exists(), f"{name} mounts missing {source}"


@pytest.mark.parametrize("path", list(COMPOSE_FILES), ids=compose_ids)
def test_images_are_pinned(path: Path) -> None:
    for name, service in resolved(path)["services"].items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository, f"{name}: {image}"
        assert tag not in ("", "latest"), f"{name}: pin {image}"
        if not image.startswith("infaas-"):
            assert "build" not in service, name


def test_prometheus_scrapes_gateway_workers_and_queue_depth() -> None:
    services = raw(STACK)["services"]
    config = load_yaml(INFRA / "prometheus" / "prometheus.yml")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    gateway_sd = jobs["gateway"]["dns_sd_configs"][0]
    assert gateway_sd["names"] == ["gateway"]
    command = services["gateway"]["command"]
    assert gateway_sd["port"] == int(command[command.index("--port") + 1])
    worker_sd = jobs["workers"]["dns_sd_configs"][0]
    assert set(worker_sd["names"]) == {"worker-cpu", "worker-gpu"}
    for name in worker_sd["names"]:
        port = environment(services[name])["INFAAS_WORKER_METRICS_PORT"]
        assert worker_sd["port"] == int(port), name
    assert jobs["rabbitmq"]["static_configs"][0]["targets"] == ["rabbitmq:15692"]
    plugins = (INFRA / "rabbitmq" / "enabled_plugins").read_text()
    assert re.fullmatch(r"\[rabbitmq_management,rabbitmq_prometheus\]\.\n", plugins)
    mounts = services["prometheus"]["volumes"]
    assert "./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts

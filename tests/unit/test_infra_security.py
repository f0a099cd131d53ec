"""The stack's exposure, TLS and accounts, checked statically (docs/security.md): what
is published and where, who reaches Docker's API, which accounts the workers use, and the
files that configure Caddy, HAProxy, RabbitMQ, PostgreSQL and MinIO for it. Nothing here
starts a container: there is no Docker engine where these tests run."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from queues import topology
from tests.infra_support import INFRA, environment, load_yaml, read_env_example, references

STACK = INFRA / "docker-compose.yml"
REMOTE = INFRA / "docker-compose.worker.yml"
PROFILES = {"remote-workers": "INFAAS_PRIVATE_ADDR", "admin": "ADMIN_BIND_ADDRESS"}
WORKER_CREDENTIALS = {"RABBITMQ_WORKER", "POSTGRES_WORKER", "MINIO_WORKER"}


def services(path: Path = STACK) -> dict[str, Any]:
    found: dict[str, Any] = load_yaml(path)["services"]
    return found


def rabbitmq_worker() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "infra_rabbitmq_worker", INFRA / "rabbitmq_worker.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def published(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(host address, host port, container port) of each published port."""
    out = []
    for port in service.get("ports", []):
        parts = re.split(r":(?![^{]*\})", str(port))  # ':' outside ${...}
        assert len(parts) == 3, f"{port}: name the host address, never all interfaces"
        out.append((parts[0], parts[1], parts[2]))
    return out


# --- what is published ------------------------------------------------------------------


def test_by_default_only_the_gateways_https_port_is_published() -> None:
    default = {name: s for name, s in services().items() if not s.get("profiles")}
    publishing = {name for name, s in default.items() if s.get("ports")}
    assert publishing == {"edge"}
    [(address, host_port, container_port)] = published(default["edge"])
    assert address == "${GATEWAY_BIND_ADDRESS:-127.0.0.1}"
    assert host_port == "${GATEWAY_HTTPS_PORT:-8443}"
    assert container_port == "443"
    example = read_env_example(INFRA / ".env.example")
    assert example["GATEWAY_BIND_ADDRESS"] == "127.0.0.1"


@pytest.mark.parametrize(("profile", "variable"), PROFILES.items())
def test_profiles_publish_on_the_address_the_operator_names(profile: str, variable: str) -> None:
    for name, service in services().items():
        if profile not in service.get("profiles", []) or not service.get("ports"):
            continue
        for address, host_port, container_port in published(service):
            assert address == f"${{{variable}:-127.0.0.1}}", (name, address)
            assert host_port == container_port
    assert "0.0.0.0" not in STACK.read_text().replace('--host", "0.0.0.0', "")


def test_the_remote_workers_profile_refuses_a_missing_or_wildcard_address() -> None:
    found = services()
    guard = found["check-private-address"]
    assert guard["profiles"] == ["remote-workers"]
    assert guard["restart"] == "no"
    assert guard["command"][-2:] == ["--private-address", "${INFAAS_PRIVATE_ADDR:-}"]
    condition = found["remote-access"]["depends_on"]["check-private-address"]["condition"]
    assert condition == "service_completed_successfully"
    # an empty value in the example: the guard refuses until the operator sets it
    assert read_env_example(INFRA / ".env.example")["INFAAS_PRIVATE_ADDR"] == ""


def test_remote_access_serves_every_data_port_and_tls_on_all_but_postgresql() -> None:
    config = (INFRA / "haproxy" / "remote-workers.cfg").read_text()
    binds = dict(re.findall(r"^\s+bind :(\d+)(.*)$", config, re.M))
    ports = {container for _, _, container in published(services()["remote-access"])}
    assert set(binds) == ports == {"5671", "5432", "6380", "9000"}
    for port, rest in binds.items():
        assert ("ssl crt /certs/server.crt" in rest) == (port != "5432"), port
    backends = set(re.findall(r"^\s+server \S+ (\S+:\d+)", config, re.M))
    assert backends == {"rabbitmq:5672", "db:5432", "redis:6379", "minio:9000"}
    assert "./certs:/certs:ro" in services()["remote-access"]["volumes"]


def test_admin_uis_are_reached_through_the_admin_profile_only() -> None:
    config = (INFRA / "haproxy" / "admin.cfg").read_text()
    targets = set(re.findall(r"^\s+server \S+ (\S+)", config, re.M))
    assert targets == {
        "rabbitmq:15672",
        "minio:9001",
        "grafana:3000",
        "prometheus:9090",
        "flower:5555",
    }
    binds = set(re.findall(r"^\s+bind :(\d+)$", config, re.M))
    assert binds == {c for _, _, c in published(services()["admin-access"])}


# --- TLS at the edge ------------------------------------------------------------------------


def test_caddy_fronts_rest_and_grpc_of_the_gateway() -> None:
    caddyfile = (INFRA / "caddy" / "Caddyfile").read_text()
    command = services()["gateway"]["command"]
    http_port = int(command[command.index("--port") + 1])
    assert f"reverse_proxy gateway:{http_port}" in caddyfile
    # gRPC: the gateway's default INFAAS_GRPC_PORT is --port + 1, in clear-text HTTP/2
    assert re.search(r"@grpc header Content-Type application/grpc\*", caddyfile)
    assert f"reverse_proxy @grpc h2c://gateway:{http_port + 1}" in caddyfile
    assert "tls {$GATEWAY_TLS}" in caddyfile
    assert "admin off" in caddyfile
    edge = services()["edge"]
    assert environment(edge)["GATEWAY_TLS"] == "${GATEWAY_TLS:-internal}"
    assert "./certs:/etc/caddy/certs:ro" in edge["volumes"]
    assert "./caddy/Caddyfile:/etc/caddy/Caddyfile:ro" in edge["volumes"]


def test_postgresql_turns_tls_on_with_the_stacks_certificate() -> None:
    db = services()["db"]
    assert db["entrypoint"] == ["/bin/sh", "/etc/infaas/tls-entrypoint.sh"]
    assert "./certs:/certs:ro" in db["volumes"]
    script = (INFRA / "postgres" / "tls-entrypoint.sh").read_text()
    assert "-c ssl=on" in script
    assert "-m 0600 /certs/server.key" in script
    assert script.rstrip().endswith('exec docker-entrypoint.sh "$@"')


def test_certificates_and_keys_stay_out_of_git() -> None:
    ignore = (INFRA / ".gitignore").read_text().splitlines()
    assert "/certs/*" in ignore
    assert "!/certs/README.md" in ignore


# --- Docker's API -----------------------------------------------------------------------------


def test_only_the_socket_proxy_mounts_dockers_socket_read_only_on_an_internal_network() -> None:
    found = services()
    mounting = {
        name
        for name, service in found.items()
        for volume in service.get("volumes", [])
        if "docker.sock" in volume
    }
    assert mounting == {"socket-proxy"}
    proxy = found["socket-proxy"]
    assert proxy["volumes"] == ["/var/run/docker.sock:/var/run/docker.sock:ro"]
    assert proxy["networks"] == ["docker-api"]
    assert "ports" not in proxy
    assert load_yaml(STACK)["networks"]["docker-api"] == {"internal": True}
    granted = {key for key, value in environment(proxy).items() if value == "1"}
    assert granted == {"CONTAINERS", "NETWORKS", "IMAGES", "VOLUMES", "INFO", "POST"}
    assert set(found["scaler"]["networks"]) == {"default", "docker-api"}


def test_the_scaler_image_runs_as_the_unprivileged_user() -> None:
    dockerfile = (INFRA / "docker" / "Dockerfile.cpu").read_text()
    scaler_stage = dockerfile[dockerfile.index("AS scaler") :]
    assert "USER root" not in scaler_stage


# --- accounts -----------------------------------------------------------------------------


def _credential_names(env: dict[str, str]) -> set[str]:
    return {ref.name for value in env.values() for ref in references(value)}


@pytest.mark.parametrize(
    ("path", "name"),
    [(STACK, "worker-cpu"), (STACK, "worker-gpu"), (REMOTE, "worker-cpu"), (REMOTE, "worker-gpu")],
)
def test_workers_use_the_workers_accounts_never_the_owners(path: Path, name: str) -> None:
    env = environment(services(path)[name])
    names = _credential_names(env)
    for owner in ("RABBITMQ_USER", "POSTGRES_USER", "MINIO_INFAAS_USER", "MINIO_ROOT_USER"):
        assert owner not in names, f"{name} uses {owner}"
    assert {
        n.rsplit("_", 1)[0] for n in names if n.endswith(("_USER", "_PASSWORD"))
    } >= WORKER_CREDENTIALS


def test_remote_workers_speak_tls_to_every_service_and_trust_the_stacks_ca() -> None:
    env = environment(services(REMOTE)["worker-cpu"])
    assert env["INFAAS_BROKER_URL"].startswith("amqps://")
    assert env["INFAAS_BROKER_URL"].endswith(":5671/infaas")
    assert env["INFAAS_STATE_URL"].startswith("rediss://")
    assert ":6380/" in env["INFAAS_STATE_URL"]
    assert env["INFAAS_CATALOG_URL"].endswith(
        "?sslmode=verify-full&sslrootcert=/etc/infaas/certs/ca.crt"
    )
    assert env["INFAAS_STORE_URL"].endswith("?secure=true")
    assert env["SSL_CERT_FILE"] == "/etc/infaas/certs/ca.crt"
    assert "./certs:/etc/infaas/certs:ro" in services(REMOTE)["worker-cpu"]["volumes"]


def test_the_setup_services_make_the_workers_accounts_before_anyone_uses_them() -> None:
    found = services()
    for name in ("worker-cpu", "worker-gpu", "gateway", "scaler"):
        depends = found[name]["depends_on"]
        for setup in ("rabbitmq-setup", "db-setup", "minio-setup"):
            assert depends[setup]["condition"] == "service_completed_successfully", (name, setup)
    assert found["rabbitmq-setup"]["command"][1] == "/opt/infaas/infra/rabbitmq_worker.py"
    dockerfile = (INFRA / "docker" / "Dockerfile.cpu").read_text()
    assert re.search(r"^COPY .*\binfra/rabbitmq_worker\.py\b.* infra/$", dockerfile, re.M)
    assert (
        "./postgres/worker-role.sql:/etc/infaas/worker-role.sql:ro" in found["db-setup"]["volumes"]
    )
    assert "mc admin policy attach stack infaas-worker" in found["minio-setup"]["command"][0]


# --- the workers' RabbitMQ permissions ------------------------------------------------------

P = "infaas"
WORKER_NAMES = {
    "variant queue": (
        "configure",
        "write",
        "read",
        topology.variant_queue(P, "digits", "svc.onnx-fp32.cpu-t1"),
    ),
    "batch queue": ("configure", "write", "read", topology.batch_queue(P, "digits")),
    "control queue": ("configure", "write", "read", topology.control_queue(P, "gpu")),
    "dead letters": ("configure", "write", "read", topology.dead_letter_exchange(P)),
    "expired": ("configure", "write", "read", topology.dead_letter_queue(P)),
    "pidbox queue": ("configure", "write", "read", "cpu-host-1-2@host.example.infaas.ctl.pidbox"),
    "pidbox exchange": ("configure", "write", "read", "infaas.ctl.pidbox"),
    "control replies": ("configure", "write", None, "reply.infaas.ctl.pidbox"),
    "default exchange": (None, "write", None, "amq.default"),
}
FOREIGN = ["celery", "other.queue", "infaasx.q", "amq.gen-123", "xinfaas.q", "amq.topic", "infaas"]


@pytest.mark.parametrize("kind", ["configure", "write", "read"])
@pytest.mark.parametrize(
    ("what", "name"), [(k, v[3]) for k, v in WORKER_NAMES.items()], ids=list(WORKER_NAMES)
)
def test_worker_permissions_cover_the_names_workers_use(kind: str, what: str, name: str) -> None:
    allowed = getattr(rabbitmq_worker().worker_permissions(P), kind)
    expected = kind in WORKER_NAMES[what][:3]
    # RabbitMQ matches unanchored (re:run); the patterns anchor themselves
    assert (re.search(allowed, name) is not None) == expected, (kind, name)


@pytest.mark.parametrize("name", FOREIGN)
def test_worker_permissions_refuse_every_other_name(name: str) -> None:
    permissions = rabbitmq_worker().worker_permissions(P)
    for kind in ("configure", "write", "read"):
        if name == "amq.default" and kind == "write":
            continue
        assert re.search(getattr(permissions, kind), name) is None, (kind, name)


def test_worker_permissions_follow_another_prefix() -> None:
    permissions = rabbitmq_worker().worker_permissions("rep")
    assert re.search(permissions.read, topology.variant_queue("rep", "a", "v"))
    assert not re.search(permissions.read, topology.variant_queue("infaas", "a", "v"))


# --- the MinIO policy and the PostgreSQL role ------------------------------------------------


def test_the_workers_minio_policy_reaches_the_bucket_only() -> None:
    template = (INFRA / "minio" / "worker-policy.json.in").read_text()
    assert template.count("%s") == 2
    assert "%" not in template.replace("%s", "")
    policy = json.loads(template % ("infaas", "infaas"))
    resources = {r for statement in policy["Statement"] for r in statement["Resource"]}
    assert resources == {"arn:aws:s3:::infaas", "arn:aws:s3:::infaas/*"}
    actions = {a for statement in policy["Statement"] for a in statement["Action"]}
    assert all(a.startswith("s3:") and "*" not in a for a in actions)
    assert not {"s3:CreateBucket", "s3:DeleteBucket", "s3:PutBucketPolicy"} & actions


def test_the_workers_postgresql_role_gets_rows_and_no_ddl() -> None:
    sql = (INFRA / "postgres" / "worker-role.sql").read_text()
    grants = re.findall(r"GRANT ([A-Z, ]+) ON", sql)
    assert {g.strip() for g in grants} == {
        "CONNECT",
        "USAGE",
        "SELECT, INSERT, UPDATE, DELETE",
        "USAGE, SELECT",
    }
    assert "NOSUPERUSER NOCREATEDB NOCREATEROLE" in sql
    assert "REVOKE CREATE ON SCHEMA public FROM PUBLIC" in sql
    assert "%L" in sql, "the password goes in as a quoted literal"

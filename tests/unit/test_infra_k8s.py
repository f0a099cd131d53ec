"""infra/k8s: rendered with kustomize (``kubectl kustomize``, offline) and each object
validated against the Kubernetes API schemas (kubernetes-validate, offline, strict); then
the contract with the scaler's kubernetes actuator, the commands, the settings and the
secrets."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from tests.infra_support import (
    CREDENTIAL,
    GUARD_VARIABLES,
    INFRA,
    REPO,
    CommandError,
    check_secrets_module,
    parse_infaas,
    read_env_example,
    setting_problems,
)

K8S = INFRA / "k8s"
K8S_VERSION = "1.32.0"
WORKERS = {"infaas-worker-cpu": "cpu", "infaas-worker-gpu": "gpu"}
_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


@functools.cache
def rendered() -> tuple[dict[str, Any], ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail(
            "kubectl is needed to render infra/k8s with its built-in kustomize (offline): "
            "it comes with this project's machine image (the google-cloud-cli kubectl package)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "k8s"
        shutil.copytree(K8S, copy, ignore=shutil.ignore_patterns("secrets.env"))
        shutil.copy(K8S / "secrets.env.example", copy / "secrets.env")
        proc = subprocess.run(
            [kubectl, "kustomize", str(copy)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert proc.returncode == 0, f"kubectl kustomize infra/k8s failed: {proc.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(proc.stdout) if doc)


def objects(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in rendered() if doc["kind"] == kind}


def workloads() -> dict[str, dict[str, Any]]:
    return {
        f"{doc['kind']}/{doc['metadata']['name']}": doc
        for doc in rendered()
        if doc["kind"] in ("Deployment", "StatefulSet", "Job")
    }


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def infaas_containers() -> list[tuple[str, dict[str, Any]]]:
    return [
        (name, container)
        for name, workload in workloads().items()
        for container in pod_spec(workload)["containers"]
        if str(container["image"]).startswith("infaas-")
    ]


def secret_example() -> dict[str, str]:
    return read_env_example(K8S / "secrets.env.example")


def expand(container: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the kubelet builds it: envFrom first, then env with
    $(VAR) replaced by what is defined so far (secret values from the example)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "secretRef" in source:
            env.update(secret_example())
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = _VAR.sub(
                lambda m: env.get(m.group(1), m.group(0)), str(item["value"])
            )
        elif item["valueFrom"].get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
            env[item["name"]] = "infaas"
        else:
            env[item["name"]] = f"<{item['name']} from {','.join(item['valueFrom'])}>"
    return env


def test_every_object_is_valid_for_the_kubernetes_api() -> None:
    errors = []
    for doc in rendered():
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message}")
    assert errors == []
    kinds = {doc["kind"] for doc in rendered()}
    assert {"Deployment", "StatefulSet", "Service", "Secret", "Role", "Job"} <= kinds
    assert all(doc["metadata"].get("namespace", "infaas") == "infaas" for doc in rendered())


def test_the_schema_check_catches_a_misspelt_field() -> None:
    bad = yaml.safe_load(yaml.safe_dump(objects("Deployment")["infaas-gateway"]))
    pod_spec(bad)["containers"][0]["comand"] = pod_spec(bad)["containers"][0].pop("command")
    with pytest.raises(kubernetes_validate.ValidationError, match="comand"):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_the_same_services_as_the_compose_stack() -> None:
    names = set(objects("Deployment")) | set(objects("StatefulSet")) | set(objects("Job"))
    assert {
        "rabbitmq",
        "postgres",
        "redis",
        "minio",
        "minio-setup",
        "infaas-gateway",
        "infaas-worker-cpu",
        "infaas-worker-gpu",
        "infaas-scaler",
        "flower",
        "prometheus",
    } <= names


@pytest.mark.parametrize("deployment", list(WORKERS))
def test_worker_deployments_are_what_the_kubernetes_actuator_patches(deployment: str) -> None:
    worker = objects("Deployment")[deployment]
    container = pod_spec(worker)["containers"][0]
    args = parse_infaas(container["command"])
    assert args.command == "worker"
    assert args.hardware == WORKERS[deployment]
    assert expand(container)["INFAAS_WORKER_METRICS_PORT"] == "9100"
    annotations = worker["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/port": "9100"}
    if WORKERS[deployment] == "gpu":
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_the_scaler_may_scale_exactly_the_worker_deployments_of_its_namespace() -> None:
    scaler = objects("Deployment")["infaas-scaler"]
    container = pod_spec(scaler)["containers"][0]
    assert container["command"][-3:] == ["scaler", "--actuator", "kubernetes"]
    namespace = next(e for e in container["env"] if e["name"] == "INFAAS_K8S_NAMESPACE")
    assert namespace["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    account = pod_spec(scaler)["serviceAccountName"]
    binding = next(
        b
        for b in objects("RoleBinding").values()
        if any(s["kind"] == "ServiceAccount" and s["name"] == account for s in b["subjects"])
    )
    role = objects("Role")[binding["roleRef"]["name"]]
    scaling = [
        rule for rule in role["rules"] if "apps" in rule["apiGroups"] and "patch" in rule["verbs"]
    ]
    assert len(scaling) == 1
    assert set(scaling[0]["resources"]) == {"deployments", "deployments/scale"}
    assert set(scaling[0]["resourceNames"]) == set(WORKERS)
    assert {"get", "patch"} <= set(scaling[0]["verbs"])
    assert not any("delete" in rule["verbs"] or "create" in rule["verbs"] for rule in role["rules"])


@pytest.mark.parametrize(
    "container", [pytest.param(c, id=n) for n, c in infaas_containers() if c.get("command")]
)
def test_infaas_commands_and_settings(container: dict[str, Any]) -> None:
    if container["command"][0] == "infaas":
        try:
            parse_infaas(container["command"])
        except CommandError as exc:
            pytest.fail(str(exc))
    env = expand(container)
    unresolved = {k: v for k, v in env.items() if _VAR.search(v)}
    assert unresolved == {}, "$(VAR) references nothing defined before"
    declared = {item["name"] for item in container.get("env", [])}
    assert not GUARD_VARIABLES & declared
    assert setting_problems({k: v for k, v in env.items() if k in declared}) == []


def test_every_pod_refuses_example_secrets_first() -> None:
    for name, workload in workloads().items():
        spec = pod_spec(workload)
        uses_secret = "infaas-secrets" in yaml.safe_dump(spec["containers"])
        if not uses_secret:
            continue
        if workload["kind"] == "Job":
            continue  # runs after the pods it configures, which were checked
        init = spec.get("initContainers", [])
        assert [c["name"] for c in init][:1] == ["check-secrets"], name
        command = init[0]["command"]
        assert command[:2] == ["python", "/opt/infaas/infra/check_secrets.py"]
        assert (
            command[command.index("--example") + 1] == "/opt/infaas/infra/k8s/secrets.env.example"
        )


def test_no_secret_is_written_in_the_manifests() -> None:
    example = secret_example()
    module = check_secrets_module()
    assert set(module.credential_keys(example)) <= set(example)
    assert (REPO / "infra" / ".gitignore").read_text().count("/k8s/secrets.env") == 1
    secrets = {v for k, v in example.items() if module.is_secret(k)}
    for doc in rendered():
        if doc["kind"] == "Secret":
            continue
        text = yaml.safe_dump(doc)
        for value in secrets:
            assert value not in text, f"{doc['kind']}/{doc['metadata']['name']} holds {value!r}"
    for name, workload in workloads().items():
        for container in pod_spec(workload)["containers"] + pod_spec(workload).get(
            "initContainers", []
        ):
            for item in container.get("env", []):
                if CREDENTIAL.search(item["name"]) and "value" in item:
                    assert _VAR.fullmatch(item["value"]) or ":" in item["value"], (name, item)
                    literal = _VAR.sub("", item["value"]).replace(":", "")
                    assert literal == "", f"{name}: {item['name']} is written, not referenced"
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in example, f"{name}: no key {ref['key']} in the secret"
    generated = objects("Secret")
    assert len(generated) == 1
    (secret,) = generated.values()
    assert secret["metadata"]["name"].startswith("infaas-secrets-")  # kustomize's hash

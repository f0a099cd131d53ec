"""The requests the scaler's kubernetes actuator sends, checked against the Kubernetes API
schema (kubernetes-validate's OpenAPI schemas for the version the manifests target, offline,
strict): each names a worker Deployment of the rendered infra/k8s manifests, in their
namespace, through the apps/v1 `scale` subresource; each PATCH is a JSON merge patch whose
result is still a valid autoscaling/v1 Scale. The manifests themselves are validated in
test_infra_k8s.py."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import kubernetes_validate  # type: ignore[import-untyped]
import pytest

from scaler.actuators import ActuatorSettings, KubernetesActuator, WorkerRef
from tests.unit.test_infra_k8s import K8S_VERSION, WORKERS, objects

_SCALE_PATH = re.compile(
    r"^/apis/(?P<group>[a-z.]+)/(?P<version>v\d+)/namespaces/(?P<ns>[a-z0-9-]+)/"
    r"(?P<resource>[a-z]+)/(?P<name>[a-z0-9-]+)/scale$"
)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386, as the API server applies application/merge-patch+json."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class FakeApiServer:
    """Answers the scale subresource of the manifests' worker Deployments, and keeps every
    request the actuator sends."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.scales: dict[str, dict[str, Any]] = {}
        for name, deployment in objects("Deployment").items():
            if name in WORKERS:
                self.scales[name] = {
                    "apiVersion": "autoscaling/v1",
                    "kind": "Scale",
                    "metadata": {"name": name, "namespace": deployment["metadata"]["namespace"]},
                    "spec": {"replicas": deployment["spec"].get("replicas", 1)},
                    "status": {"replicas": deployment["spec"].get("replicas", 1)},
                }

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        match = _SCALE_PATH.match(request.url.path)
        if match is None or match["name"] not in self.scales:
            return httpx.Response(404, json={"kind": "Status", "reason": "NotFound"})
        scale = self.scales[match["name"]]
        if request.method == "PATCH":
            patched = merge_patch(scale, json.loads(request.content))
            kubernetes_validate.validate(patched, K8S_VERSION, strict=True)
            self.scales[match["name"]] = scale = patched
        return httpx.Response(200, json=scale)


@pytest.fixture
def server() -> FakeApiServer:
    return FakeApiServer()


def actuator(server: FakeApiServer) -> KubernetesActuator:
    namespace = {d["metadata"]["namespace"] for d in objects("Deployment").values()}
    assert len(namespace) == 1
    settings = ActuatorSettings(actuator="kubernetes", k8s_namespace=namespace.pop())
    client = httpx.Client(base_url="https://api.test", transport=httpx.MockTransport(server))
    return KubernetesActuator(settings, client)


@pytest.mark.parametrize("hardware", ["cpu", "gpu"])
def test_scale_requests_are_valid_for_the_kubernetes_api(
    server: FakeApiServer, hardware: str
) -> None:
    deployment = next(name for name, kind in WORKERS.items() if kind == hardware)
    before = server.scales[deployment]["spec"]["replicas"]
    act = actuator(server)
    act.add_worker(hardware)
    act.remove_worker(WorkerRef("w1", hardware))
    act.close()
    assert [r.method for r in server.requests] == ["GET", "PATCH", "GET", "PATCH"]
    for request in server.requests:
        match = _SCALE_PATH.match(request.url.path)
        assert match is not None, request.url.path
        manifest = objects("Deployment")[match["name"]]
        # the group/version and namespace of the Deployment the manifests create
        assert f"{match['group']}/{match['version']}" == manifest["apiVersion"] == "apps/v1"
        assert match["resource"] == "deployments"
        assert match["ns"] == manifest["metadata"]["namespace"]
        assert match["name"] == deployment
        if request.method == "PATCH":
            assert request.headers["content-type"] == "application/merge-patch+json"
            assert set(json.loads(request.content)) == {"spec"}
    assert server.scales[deployment]["spec"]["replicas"] == before


def test_a_patch_outside_the_scale_schema_is_caught(server: FakeApiServer) -> None:
    """The check can fail: a misspelt field, or a replica count that is not an integer."""
    scale = server.scales["infaas-worker-cpu"]
    for bad in ({"spec": {"replica": 2}}, {"spec": {"replicas": "2"}}):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(merge_patch(scale, bad), K8S_VERSION, strict=True)


def test_merge_patch_follows_rfc_7386() -> None:
    target = {"a": "b", "c": {"d": "e", "f": "g"}}
    assert merge_patch(target, {"a": "z", "c": {"f": None}}) == {"a": "z", "c": {"d": "e"}}
    assert merge_patch({"a": [1]}, {"a": [2]}) == {"a": [2]}

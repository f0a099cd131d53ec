"""Actuators: compose and Kubernetes against recorded commands and requests, local with
real (short-lived) processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from queues.errors import ActuatorError
from scaler.actuators import (
    ActuatorSettings,
    ComposeActuator,
    KubernetesActuator,
    LocalActuator,
    WorkerRef,
)


class Recorder:
    def __init__(self, outputs: dict[str, tuple[int, str]]) -> None:
        self.outputs = outputs
        self.calls: list[list[str]] = []

    def __call__(self, args: Sequence[str]) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(args))
        code, out = self.outputs.get(args[2], (0, ""))
        return subprocess.CompletedProcess(list(args), code, out, "boom" if code else "")


def test_compose_adds_a_worker_by_scaling_its_service() -> None:
    runner = Recorder({"ps": (0, "a1\nb2\n")})
    actuator = ComposeActuator(ActuatorSettings(actuator="compose"), run=runner)
    assert actuator.add_worker("cpu") == "scaled compose service worker-cpu to 3"
    assert runner.calls == [
        ["docker", "compose", "ps", "--quiet", "--status", "running", "worker-cpu"],
        ["docker", "compose", "up", "--detach", "--no-deps", "--no-recreate",
         "--scale", "worker-cpu=3", "worker-cpu"],
    ]  # fmt: skip


def test_compose_removes_a_gpu_worker() -> None:
    runner = Recorder({"ps": (0, "only\n")})
    actuator = ComposeActuator(ActuatorSettings(actuator="compose"), run=runner)
    actuator.remove_worker(WorkerRef("gpu-h-1", "gpu"))
    assert runner.calls[-1][-2:] == ["worker-gpu=0", "worker-gpu"]


def test_compose_removes_the_drained_workers_own_container() -> None:
    # the drained worker's host name is its container's id; ps --quiet lists full ids
    runner = Recorder({"ps": (0, "0a1b2c3d4e5f6789\n9f8e7d6c5b4a3210\n"), "rm": (0, "")})
    actuator = ComposeActuator(ActuatorSettings(actuator="compose"), run=runner)
    said = actuator.remove_worker(WorkerRef("cpu-0a1b2c3d4e5f-7-1", "cpu", host="0a1b2c3d4e5f"))
    assert runner.calls[-1] == ["docker", "rm", "--force", "0a1b2c3d4e5f6789"]
    assert said == "removed the container 0a1b2c3d4e5f of compose service worker-cpu"
    assert not [c for c in runner.calls if "up" in c]  # the other container is left alone


def test_compose_scales_down_when_the_host_is_no_container_of_the_service() -> None:
    runner = Recorder({"ps": (0, "0a1b2c3d4e5f6789\n9f8e7d6c5b4a3210\n")})
    actuator = ComposeActuator(ActuatorSettings(actuator="compose"), run=runner)
    said = actuator.remove_worker(WorkerRef("cpu-w-7-1", "cpu", host="worker-host"))
    assert runner.calls[-1][-2:] == ["worker-cpu=1", "worker-cpu"]
    assert said == "scaled compose service worker-cpu to 1"


def test_compose_failure_is_an_actuator_error() -> None:
    runner = Recorder({"ps": (0, ""), "up": (1, "")})
    actuator = ComposeActuator(ActuatorSettings(actuator="compose"), run=runner)
    with pytest.raises(ActuatorError, match="failed: boom"):
        actuator.add_worker("cpu")


def _kube(replicas: int, seen: list[httpx.Request], status: int = 200) -> KubernetesActuator:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "GET":
            return httpx.Response(status, json={"spec": {"replicas": replicas}})
        return httpx.Response(status, json=json.loads(request.content))

    client = httpx.Client(base_url="https://k8s.test", transport=httpx.MockTransport(handle))
    settings = ActuatorSettings(actuator="kubernetes", k8s_namespace="infaas")
    return KubernetesActuator(settings, client)


def test_kubernetes_patches_the_deployment_scale() -> None:
    seen: list[httpx.Request] = []
    _kube(2, seen).add_worker("cpu")
    path = "/apis/apps/v1/namespaces/infaas/deployments/infaas-worker-cpu/scale"
    assert [(r.method, r.url.path) for r in seen] == [("GET", path), ("PATCH", path)]
    assert json.loads(seen[1].content) == {"spec": {"replicas": 3}}
    assert seen[1].headers["content-type"] == "application/merge-patch+json"


def test_kubernetes_never_scales_below_zero() -> None:
    seen: list[httpx.Request] = []
    _kube(0, seen).remove_worker(WorkerRef("gpu-x", "gpu"))
    assert json.loads(seen[1].content) == {"spec": {"replicas": 0}}
    assert "infaas-worker-gpu" in seen[1].url.path


def test_kubernetes_refusal_is_an_actuator_error() -> None:
    with pytest.raises(ActuatorError, match="answered 403"):
        _kube(1, [], status=403).add_worker("cpu")


def test_local_actuator_starts_pinned_workers_and_stops_them(tmp_path: Path) -> None:
    env = {**os.environ, "INFAAS_BROKER_URL": "", "PYTHONPATH": os.getcwd()}
    actuator = LocalActuator(ActuatorSettings(local_log_dir=tmp_path), env=env)
    try:
        said = actuator.add_worker("cpu")
        assert said.startswith("started a CPU worker, pid")
        worker = actuator.workers[0]
        assert worker.cores == (min(os.sched_getaffinity(0)),)
        # without a broker the worker refuses to start, and says why
        assert worker.process.wait(60) == 2
        assert "needs a broker" in (tmp_path / "worker-1.log").read_text()
    finally:
        actuator.close()


def test_local_actuator_refuses_gpu_and_remote_workers() -> None:
    actuator = LocalActuator(ActuatorSettings(), env={}, python=sys.executable)
    with pytest.raises(ActuatorError, match="CPU workers only"):
        actuator.add_worker("gpu")
    with pytest.raises(ActuatorError, match="only stops workers on this machine"):
        actuator.remove_worker(WorkerRef("cpu-far-1", "cpu", host="elsewhere", pid=1))


def test_local_actuator_stops_a_worker_by_pid() -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    actuator = LocalActuator(ActuatorSettings(), env={})

    said = actuator.remove_worker(WorkerRef("w", "cpu", host=socket.gethostname(), pid=sleeper.pid))
    assert "asked worker w" in said
    assert sleeper.wait(10) == -15
    gone = actuator.remove_worker(WorkerRef("w", "cpu", pid=sleeper.pid))
    assert "already exited" in gone


def test_unknown_actuator_is_refused() -> None:
    with pytest.raises(ValidationError, match="actuator must be one of"):
        ActuatorSettings(actuator="swarm")

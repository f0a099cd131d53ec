"""Actuators: how the scaler adds and removes whole workers.

- ``local`` starts and stops ``infaas worker`` processes on this machine, each pinned to
  its own cores;
- ``compose`` scales a docker-compose service (``docker compose up --scale``);
- ``kubernetes`` patches the replica count of a Deployment through the API server.

Each runs its commands or requests through an injectable runner, so the compose and
Kubernetes actuators are tested against recorded commands and requests here, where
neither Docker nor a cluster runs.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from queues.errors import ActuatorError, ConfigError

log = logging.getLogger(__name__)
ACTUATORS = ("local", "compose", "kubernetes")


class ActuatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INFAAS_", extra="ignore")

    actuator: str = Field(default="local", description="local, compose or kubernetes")
    local_cores_per_worker: int = Field(default=1, ge=1, le=256)
    local_log_dir: Path | None = Field(default=None, description="logs of local workers")
    compose_service_cpu: str = "worker-cpu"
    compose_service_gpu: str = "worker-gpu"
    k8s_namespace: str = Field(default="default", description="namespace of the workers")
    k8s_deployment_cpu: str = "infaas-worker-cpu"
    k8s_deployment_gpu: str = "infaas-worker-gpu"
    k8s_api_url: str | None = Field(
        default=None, description="API server; unset: the in-cluster service address"
    )

    @field_validator("actuator")
    @classmethod
    def _check_kind(cls, value: str) -> str:
        if value not in ACTUATORS:
            raise ValueError(f"actuator must be one of {', '.join(ACTUATORS)}, got {value!r}")
        return value


@dataclass(frozen=True, slots=True)
class WorkerRef:
    """The worker the policy wants gone, as live state knows it."""

    worker_id: str
    hardware: str
    host: str = ""
    pid: int = 0


class Actuator(Protocol):
    name: str

    def add_worker(self, hardware: str) -> str:
        """Start one more worker of ``hardware``; returns what was done, for the log."""
        ...

    def remove_worker(self, worker: WorkerRef) -> str: ...

    def close(self) -> None: ...


# -- local ----------------------------------------------------------------------------


@dataclass
class _LocalWorker:
    process: subprocess.Popen[bytes]
    cores: tuple[int, ...]


@dataclass
class LocalActuator:
    """``infaas worker`` processes on this machine, each on cores of its own. They start
    empty: the scaler loads what its plan places on them."""

    settings: ActuatorSettings
    env: dict[str, str]
    python: str = sys.executable
    name: str = "local"
    workers: list[_LocalWorker] = field(default_factory=list)

    def _free_cores(self) -> list[int]:
        taken = {core for w in self.workers if w.process.poll() is None for core in w.cores}
        return [core for core in sorted(os.sched_getaffinity(0)) if core not in taken]

    def add_worker(self, hardware: str) -> str:
        if hardware != "cpu":
            raise ActuatorError(
                "the local actuator starts CPU workers only; start GPU workers on their "
                "hosts (docs/deploy.md) or use the compose or kubernetes actuator"
            )
        wanted = self.settings.local_cores_per_worker
        free = self._free_cores()
        # on a machine with fewer free cores than asked, share the least-used ones
        cores = (
            tuple(free[:wanted])
            if len(free) >= wanted
            else tuple(sorted(os.sched_getaffinity(0))[:wanted])
        )
        log_dir = self.settings.local_log_dir
        output: Any = subprocess.DEVNULL
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
            output = (log_dir / f"worker-{len(self.workers) + 1}.log").open("ab")
        try:
            process = subprocess.Popen(
                [self.python, "-m", "infaas.cli", "--loglevel", "INFO", "worker",
                 "--hardware", "cpu", "--cores", ",".join(map(str, cores)),
                 "--variants", "none"],
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            raise ActuatorError(f"could not start a local worker: {exc}") from exc
        finally:
            if output is not subprocess.DEVNULL:
                output.close()
        self.workers.append(_LocalWorker(process, cores))
        return f"started a CPU worker, pid {process.pid}, on cores {list(cores)}"

    def remove_worker(self, worker: WorkerRef) -> str:
        if worker.host and worker.host != socket.gethostname():
            raise ActuatorError(
                f"worker {worker.worker_id} runs on {worker.host}; the local actuator "
                "only stops workers on this machine"
            )
        if worker.pid <= 0:
            raise ActuatorError(f"worker {worker.worker_id} reported no process id")
        try:
            os.kill(worker.pid, signal.SIGTERM)  # a warm shutdown: replicas finish, ack
        except ProcessLookupError:
            return f"worker {worker.worker_id} (pid {worker.pid}) had already exited"
        except PermissionError as exc:
            raise ActuatorError(f"not allowed to stop pid {worker.pid}: {exc}") from exc
        return f"asked worker {worker.worker_id} (pid {worker.pid}) to stop"

    def close(self) -> None:
        """Stop the workers this actuator started."""
        for w in self.workers:
            if w.process.poll() is None:
                os.killpg(w.process.pid, signal.SIGTERM)
        for w in self.workers:
            try:
                w.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(w.process.pid, signal.SIGKILL)
        self.workers.clear()


# -- docker compose ---------------------------------------------------------------------

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def run_command(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120, check=False)


@dataclass
class ComposeActuator:
    """Scales the worker services of the compose stack the scaler runs in (its project
    and file come from ``COMPOSE_PROJECT_NAME`` and ``COMPOSE_FILE``)."""

    settings: ActuatorSettings
    run: Runner = run_command
    name: str = "compose"

    def _service(self, hardware: str) -> str:
        return (
            self.settings.compose_service_gpu
            if hardware == "gpu"
            else self.settings.compose_service_cpu
        )

    def _call(self, args: Sequence[str]) -> str:
        done = self.run(args)
        if done.returncode != 0:
            raise ActuatorError(f"`{' '.join(args)}` failed: {done.stderr.strip()[:300]}")
        return done.stdout

    def count(self, hardware: str) -> int:
        out = self._call(["docker", "compose", "ps", "--quiet", "--status", "running",
                          self._service(hardware)])  # fmt: skip
        return len([line for line in out.splitlines() if line.strip()])

    def _scale(self, hardware: str, replicas: int) -> str:
        service = self._service(hardware)
        self._call(["docker", "compose", "up", "--detach", "--no-deps", "--no-recreate",
                    "--scale", f"{service}={replicas}", service])  # fmt: skip
        return f"scaled compose service {service} to {replicas}"

    def add_worker(self, hardware: str) -> str:
        return self._scale(hardware, self.count(hardware) + 1)

    def remove_worker(self, worker: WorkerRef) -> str:
        """Remove the drained worker's own container: a worker's host name is its
        container's id, as Docker and podman name a container's host. Scaling the service
        down instead removes the newest container, which need not be the drained one: the
        stack test saw the scaler drain the older worker, compose remove the newer (that
        held the replicas), and the scaler add one back at once, below its minimum.
        Where no running container of the service has that id (a host name set by
        hand), the service is scaled down by one as before."""
        service = self._service(worker.hardware)
        out = self._call(["docker", "compose", "ps", "--quiet", "--status", "running", service])
        ids = [line.strip() for line in out.splitlines() if line.strip()]
        mine = [i for i in ids if worker.host and i.startswith(worker.host)]
        if len(mine) == 1:
            self._call(["docker", "rm", "--force", mine[0]])
            return f"removed the container {mine[0][:12]} of compose service {service}"
        return self._scale(worker.hardware, max(len(ids) - 1, 0))

    def close(self) -> None:
        return None


# -- kubernetes -----------------------------------------------------------------------

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass
class KubernetesActuator:
    """Patches the replicas of the worker Deployments through the API server, with the
    pod's service account (RBAC in infra/k8s/scaler.yaml allows exactly this)."""

    settings: ActuatorSettings
    client: httpx.Client
    name: str = "kubernetes"

    @classmethod
    def in_cluster(cls, settings: ActuatorSettings) -> KubernetesActuator:
        token_file = SERVICE_ACCOUNT / "token"
        if settings.k8s_api_url is None:
            host = os.environ.get("KUBERNETES_SERVICE_HOST")
            port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
            if not host:
                raise ConfigError(
                    "the kubernetes actuator runs inside a cluster (KUBERNETES_SERVICE_HOST "
                    "unset); set INFAAS_K8S_API_URL to reach an API server from outside"
                )
            url = f"https://{host}:{port}"
        else:
            url = settings.k8s_api_url
        if not token_file.exists():
            raise ConfigError(f"no service-account token at {token_file}")
        client = httpx.Client(
            base_url=url,
            headers={"Authorization": f"Bearer {token_file.read_text().strip()}"},
            verify=str(SERVICE_ACCOUNT / "ca.crt"),
            timeout=10,
        )
        return cls(settings, client)

    def _path(self, hardware: str) -> str:
        name = (
            self.settings.k8s_deployment_gpu
            if hardware == "gpu"
            else self.settings.k8s_deployment_cpu
        )
        ns = self.settings.k8s_namespace
        return f"/apis/apps/v1/namespaces/{ns}/deployments/{name}/scale"

    def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ActuatorError(f"the Kubernetes API is unreachable: {exc}") from exc
        if response.status_code >= 400:
            raise ActuatorError(
                f"{method} {path} answered {response.status_code}: {response.text[:300]}"
            )
        body: dict[str, Any] = response.json()
        return body

    def count(self, hardware: str) -> int:
        return int(self._request("GET", self._path(hardware))["spec"].get("replicas", 0))

    def _scale(self, hardware: str, replicas: int) -> str:
        self._request(
            "PATCH",
            self._path(hardware),
            json={"spec": {"replicas": replicas}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        return f"patched {self._path(hardware)} to {replicas} replicas"

    def add_worker(self, hardware: str) -> str:
        return self._scale(hardware, self.count(hardware) + 1)

    def remove_worker(self, worker: WorkerRef) -> str:
        return self._scale(worker.hardware, max(self.count(worker.hardware) - 1, 0))

    def close(self) -> None:
        self.client.close()


def make_actuator(settings: ActuatorSettings, env: dict[str, str]) -> Actuator:
    if settings.actuator == "compose":
        return ComposeActuator(settings)
    if settings.actuator == "kubernetes":
        return KubernetesActuator.in_cluster(settings)
    return LocalActuator(settings, env)

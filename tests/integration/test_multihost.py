"""Workers on other hosts: two worker processes, each in a network namespace of its own
(a host of its own, joined to this one by a veth link), reach RabbitMQ, Redis, PostgreSQL
and the S3 endpoint across the link and both serve the queries of one app.

This machine's services listen on loopback only and RabbitMQ's guest user is loopback-only,
so the test brings up what a remote host reaches: TCP forwarders on the link addresses, and
a broker user of its own. Where namespaces cannot be made the test fails and says so.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import numpy as np
import pytest

import infaas.demo_models
from api_gateway.settings import GatewaySettings
from infaas.demo import DEMO_APP
from infaas.demo_models import DemoSet, load_validation
from infaas.embedded import LocalStack
from infaas.services import Services, open_services
from queues.settings import BrokerSettings
from registry.livestate import WorkerReport
from registry.settings import RegistrySettings
from registry.types import READY
from tests import netns
from tests.e2e_support import REPO, register_demo
from tests.services import ServiceMissing, postgres_database, unique_name

pytestmark = pytest.mark.integration

MODEL = "digits-logreg"  # the quickest demo model to profile
METRICS_PORT = 9464
WORKER_START_S = 120.0


def _rabbitmqctl(*args: str) -> None:
    exe = shutil.which("rabbitmqctl")
    if exe is None:
        raise ServiceMissing("rabbitmq", "rabbitmqctl is not on PATH")
    proc = subprocess.run([exe, *args], capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise ServiceMissing("rabbitmq", f"`rabbitmqctl {args[0]}` failed: {proc.stderr}")


def _broker_users() -> list[str]:
    exe = shutil.which("rabbitmqctl") or "rabbitmqctl"
    out = subprocess.run(
        [exe, "-q", "list_users"], capture_output=True, text=True, timeout=60, check=False
    ).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


@contextlib.contextmanager
def broker_user(vhost: str) -> Iterator[tuple[str, str]]:
    """A RabbitMQ user with a password and rights on ``vhost`` only (guest cannot leave
    loopback); deleted at the end."""
    user, password = unique_name("user"), secrets.token_hex(16)
    _rabbitmqctl("add_user", user, password)
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        yield user, password
    finally:
        _rabbitmqctl("delete_user", user)


def _via(url: str, host: str, *, userinfo: str | None = None) -> str:
    """``url`` with its host replaced (and, if given, its credentials)."""
    parts = urlsplit(url)
    credentials = userinfo if userinfo is not None else parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@{host}" if credentials else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _endpoint(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None, f"{url} names no port"
    return parts.hostname, parts.port


def _register_one_model(services: Services, monkeypatch: pytest.MonkeyPatch) -> DemoSet:
    """The demo app with one of its models, through the demo's own registration."""
    prepare = infaas.demo_models.prepare_demo_models

    def only_one(*args: Any, **kwargs: Any) -> DemoSet:
        demo = prepare(*args, **kwargs)
        return replace(demo, models=tuple(m for m in demo.models if m.id == MODEL))

    monkeypatch.setattr("infaas.demo.prepare_demo_models", only_one)
    return register_demo(services)


def _log_tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _wait_for_workers(
    services: Services,
    procs: dict[int, Path],
    popen: list[subprocess.Popen[bytes]],
    variants: list[str],
) -> dict[int, WorkerReport]:
    deadline = time.monotonic() + WORKER_START_S
    while True:
        reports = {r.pid: r for r in services.live.snapshot().workers.values() if r.pid in procs}
        if len(reports) == len(procs) and all(
            set(variants) <= set(r.variants) for r in reports.values()
        ):
            return reports
        for proc in popen:
            if proc.poll() is not None:
                pytest.fail(
                    f"remote worker {proc.pid} exited with {proc.returncode}:\n"
                    f"{_log_tail(procs[proc.pid])}"
                )
        if time.monotonic() > deadline:
            logs = "\n---\n".join(_log_tail(log) for log in procs.values())
            pytest.fail(f"the remote workers did not serve {variants} in time:\n{logs}")
        time.sleep(0.3)


def _completed(address: str) -> float:
    """Queries a worker answered, from its metrics endpoint, read across the link."""
    text = httpx.get(f"http://{address}:{METRICS_PORT}/metrics", timeout=5).text
    pattern = rf'^infaas_worker_variant_completed_total\{{[^}}]*app="{DEMO_APP}"[^}}]*\}} (\S+)$'
    return sum(float(v) for v in re.findall(pattern, text, re.M))


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A database of its own: the catalog tests empty the session's shared one."""
    with postgres_database() as url:
        yield url


def test_workers_on_two_hosts_serve_the_same_app(
    broker_url: str,
    postgres_url: str,
    redis_state: tuple[str, str],
    s3_server: tuple[str, int],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state_url, state_prefix = redis_state
    s3_host, s3_port = s3_server
    store_url = f"s3://testing:testing@{s3_host}:{s3_port}/{unique_name('bucket')}"
    queue_prefix = unique_name("q")[-20:]
    vhost = urlsplit(broker_url).path.lstrip("/")
    tag = f"mh{os.getpid()}"
    made_hosts: list[netns.Host] = []
    services = open_services(
        BrokerSettings(broker_url=broker_url, queue_prefix=queue_prefix),
        RegistrySettings(
            home=tmp_path / "here",
            catalog_url=postgres_url,
            state_url=state_url,
            state_prefix=state_prefix,
            store_url=store_url,
        ),
    )
    with ExitStack() as cleanup:
        cleanup.callback(services.close)
        demo = _register_one_model(services, monkeypatch)
        variants = sorted(
            v.id for v in services.catalog.list_variants(model_id=MODEL, status=READY)
        )
        assert variants, f"no variant of {MODEL} became ready"
        user, password = cleanup.enter_context(broker_user(vhost))
        try:
            remote = cleanup.enter_context(netns.hosts(2, tag))
        except netns.NamespacesRefused as exc:
            pytest.fail(str(exc))
        made_hosts.extend(remote)

        # what a remote host reaches: the services, through forwarders on its link
        forwarder = cleanup.enter_context(netns.TcpForwarder())
        targets = {
            "broker": _endpoint(broker_url),
            "catalog": _endpoint(postgres_url),
            "state": _endpoint(state_url),
            "store": (s3_host, s3_port),
        }
        for host in remote:
            for target in targets.values():
                forwarder.add((host.gateway, target[1]), target)

        gateway = cleanup.enter_context(
            LocalStack(services, gateway=GatewaySettings(port=0), with_worker=False)
        )
        popen: list[subprocess.Popen[bytes]] = []
        cleanup.callback(_stop, popen)
        logs: dict[int, Path] = {}
        for host in remote:
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("INFAAS_")},
                "INFAAS_BROKER_URL": _via(broker_url, host.gateway, userinfo=f"{user}:{password}"),
                "INFAAS_QUEUE_PREFIX": queue_prefix,
                "INFAAS_CATALOG_URL": _via(postgres_url, host.gateway),
                "INFAAS_STATE_URL": _via(state_url, host.gateway),
                "INFAAS_STATE_PREFIX": state_prefix,
                "INFAAS_STORE_URL": _via(store_url, host.gateway),
                "INFAAS_HOME": str(tmp_path / host.name),
                "INFAAS_WORKER_METRICS_PORT": str(METRICS_PORT),
                "PYTHONUNBUFFERED": "1",
            }
            argv = [sys.executable, "-m", "infaas.cli", "--loglevel", "INFO", "worker"]
            argv += ["--hardware", "cpu", "--variants", ",".join(variants)]
            log = tmp_path / f"{host.name}.log"
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    host.command(*argv),
                    env=env,
                    cwd=REPO,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            popen.append(proc)
            logs[proc.pid] = log

        reports = _wait_for_workers(services, logs, popen, variants)
        here = os.readlink("/proc/self/ns/net")
        for proc in popen:
            assert os.readlink(f"/proc/{proc.pid}/ns/net") != here, "not on another host"
        assert len({r.worker_id for r in reports.values()}) == 2
        time.sleep(1.0)  # the gateway refreshes its live snapshot every 0.5 s

        inputs, labels = load_validation(demo.validation_path)
        counts = {host.address: 0.0 for host in remote}
        answered: list[dict[str, Any]] = []
        with (
            httpx.Client(base_url=gateway.url, timeout=30) as client,
            ThreadPoolExecutor(8) as pool,
        ):

            def ask(i: int) -> httpx.Response:
                body = {"inputs": inputs[i : i + 1].tolist(), "min_accuracy": 0.9}
                return client.post(f"/v1/apps/{DEMO_APP}/infer", json=body)

            for _ in range(6):
                responses = list(pool.map(ask, range(len(answered), len(answered) + 96)))
                bad = [r.text for r in responses if r.status_code != 200]
                assert bad == [], bad[:3]
                answered += [r.json() for r in responses]
                counts = {address: _completed(address) for address in counts}
                if all(count > 0 for count in counts.values()):
                    break
        assert all(count > 0 for count in counts.values()), f"answered per host: {counts}"
        assert sum(counts.values()) >= len(answered)
        assert {a["variant"] for a in answered} <= set(variants)
        predicted = np.array([a["labels"][0] for a in answered])
        assert (predicted == labels[: len(answered)]).mean() > 0.9
        assert forwarder.relayed >= 8, "the remote workers' traffic crossed the links"

    for host in made_hosts:
        assert not netns.namespace_exists(host.name), f"namespace {host.name} was left behind"
        assert not netns.link_exists(host.veth), f"link {host.veth} was left behind"
    assert user not in _broker_users()

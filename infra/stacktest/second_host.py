"""A worker host of its own for `make stack-test`: a second network namespace joined to the
stack's by a veth link (as tests/integration/test_multihost.py joins worker processes).
The stack publishes its data ports over TLS on its end of the link (`--profile
remote-workers`, INFAAS_PRIVATE_ADDR); the worker host runs infra/docker-compose.worker.yml
with the workers' accounts, trusting the test's own CA (made here with openssl)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from stacktest import compose_podman

STACK_ADDR = "10.254.25.1"  # the stack host's private address, on the link
WORKER_ADDR = "10.254.25.2"
PREFIX = 30


def _run(*args: str, cwd: Path | None = None) -> None:
    done = subprocess.run(list(args), capture_output=True, text=True, cwd=cwd, check=False)
    if done.returncode != 0:
        raise compose_podman.ComposeError(f"`{' '.join(args[:6])}` failed: {done.stderr}")


def make_certs(folder: Path) -> None:
    """ca.crt, and server.crt/server.key for STACK_ADDR signed by it (one day)."""
    folder.mkdir(mode=0o755)
    _run(
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=infaas stack test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        cwd=folder,
    )
    _run(
        "openssl",
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        f"/CN={STACK_ADDR}",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        cwd=folder,
    )
    (folder / "san.ext").write_text(f"subjectAltName=IP:{STACK_ADDR}\n")
    _run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
         "-CAcreateserial", "-days", "1", "-extfile", "san.ext", "-out", "server.crt",
         cwd=folder)  # fmt: skip
    for name in ("ca.key", "server.csr", "san.ext", "ca.srl"):
        (folder / name).unlink(missing_ok=True)
    for name in ("ca.crt", "server.crt"):
        (folder / name).chmod(0o644)


def link(stack_netns: str, worker_netns: str) -> None:
    """The worker host's namespace and its veth link to the stack's."""
    _run("ip", "netns", "add", worker_netns)
    _run("ip", "-n", worker_netns, "link", "set", "lo", "up")
    _run("ip", "-n", stack_netns, "link", "add", "st-link", "type", "veth",
         "peer", "name", "st-link", "netns", worker_netns)  # fmt: skip
    for netns, addr in ((stack_netns, STACK_ADDR), (worker_netns, WORKER_ADDR)):
        _run("ip", "-n", netns, "addr", "add", f"{addr}/{PREFIX}", "dev", "st-link")
        _run("ip", "-n", netns, "link", "set", "st-link", "up")


def write_worker_env(
    path: Path, example_file: Path, stack_env: dict[str, str], project: str
) -> None:
    """The worker host's env file: infra/worker.env.example with the stack's values of the
    workers' accounts, STACK_HOST on the link."""
    example = compose_podman.read_env_file(example_file)
    values = {key: stack_env.get(key, value) for key, value in example.items()}
    values.update({
        "COMPOSE_PROJECT_NAME": project, "STACK_HOST": STACK_ADDR, "INFAAS_DEV": "0",
        "INFAAS_STACK_CERTS": stack_env["INFAAS_STACK_CERTS"],
    })  # fmt: skip
    del values["WORKER_METRICS_BIND"]  # its default, loopback of the worker host
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    path.chmod(0o600)

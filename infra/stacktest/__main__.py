"""`make stack-test`: the docker-compose stack built and run for real, with podman.

1. the images: infra/docker/Dockerfile.cpu (target runtime) from a Debian bookworm base
   made here with debootstrap (no registry is reachable), the stand-ins of the third-party
   services (Dockerfile.standins) and the scaler with podman's client (Dockerfile.scaler);
2. a network namespace of its own, where podman's API service runs and the stack's
   bridge network lives: nothing of the stack is reachable from, or collides with, the
   machine's own services;
3. the stack: infra/docker-compose.yml with stacktest/docker-compose.podman.yml, through
   compose_podman.py (what `docker compose up` does, on podman), with fresh secrets that
   pass check-secrets (INFAAS_DEV=0);
4. a user's session against it (stacktest/user.py, inside the namespace);
5. everything removed: containers, volumes, networks, the namespace, podman's service and
   the images tagged here (--keep-images keeps them for the next run's cache). The Debian
   root and the base image stay in /var/tmp/infaas-stack for the next run.

Figures (build times, image sizes, time to ready, scale-up and scale-down) are printed and
written to bench/results/stack_test.json. Needs root, podman, runc, debootstrap, nsenter.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from stacktest import compose_podman, second_host

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
STATE = Path("/var/tmp/infaas-stack")
DEBIAN_ROOT = STATE / "bookworm-root"
BASE_IMAGE = "localhost/infaas-bookworm-base:python3.11"
TAG = "stacktest"
PROJECT = "infaas-st"
WORKER_PROJECT = "infaas-st-host2"  # the worker host's compose project
IMAGES = {
    "cpu": f"localhost/infaas-cpu:{TAG}",
    "standins": f"localhost/infaas-standins:{TAG}",
    "scaler": f"localhost/infaas-scaler-podman:{TAG}",
}
# this project's machines: torch's CPU build and a PyPI mirror on local disk
LOCAL_WHEELS = [Path("/opt/wheels"), Path("/opt/pypi"), Path("/opt/pypi-more")]
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


class StackTestError(Exception):
    """A step failed; the message says which and what to do."""


def run(*args: str, timeout_s: float = 3600, quiet: bool = True) -> str:
    done = subprocess.run(
        list(args), capture_output=quiet, text=True, timeout=timeout_s, check=False
    )
    if done.returncode != 0:
        tail = (done.stderr or "")[-3000:] if quiet else ""
        raise StackTestError(f"`{' '.join(args[:8])} ...` exited {done.returncode}\n{tail}")
    return done.stdout or ""


def preflight() -> None:
    if os.geteuid() != 0:
        raise StackTestError("run as root: podman's rootful networks and netns need it")
    missing = [t for t in ("podman", "runc", "nsenter", "ip", "debootstrap") if not shutil.which(t)]
    if missing:
        raise StackTestError(
            f"missing {', '.join(missing)}: apt-get install podman runc debootstrap iproute2"
        )
    STATE.mkdir(parents=True, exist_ok=True)
    # runc (crun refuses this machine's hybrid cgroups); no ulimits (runc cannot set them)
    conf = STATE / "containers.conf"
    conf.write_text('[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\n')
    os.environ["CONTAINERS_CONF"] = str(conf)


def image_exists(image: str) -> bool:
    return subprocess.run(["podman", "image", "exists", image], check=False).returncode == 0


def ensure_base(figures: dict[str, Any]) -> None:
    """The Debian bookworm base (Python 3.11 as `python`), made once and kept."""
    if image_exists(BASE_IMAGE):
        return
    started = time.monotonic()
    if not (DEBIAN_ROOT / "usr/bin/python3").exists():
        run("debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
            "bookworm", str(DEBIAN_ROOT), "http://deb.debian.org/debian")  # fmt: skip
        (DEBIAN_ROOT / "usr/bin/python").symlink_to("python3")
        shutil.rmtree(DEBIAN_ROOT / "var/lib/apt/lists", ignore_errors=True)
    tar = subprocess.Popen(["tar", "-C", str(DEBIAN_ROOT), "-c", "."], stdout=subprocess.PIPE)
    subprocess.run(["podman", "import", "--change", 'CMD ["python3"]', "-", BASE_IMAGE],
                   stdin=tar.stdout, check=True, capture_output=True)  # fmt: skip
    tar.wait()
    figures["base_image_s"] = round(time.monotonic() - started, 1)


def build_volumes() -> list[str]:
    """Local wheels, the mirror and a pip configuration that uses them, at build time."""
    if not all(p.is_dir() for p in LOCAL_WHEELS):
        return []
    conf = STATE / "pip.conf"
    conf.write_text(
        "[global]\nfind-links = /opt/wheels\n"
        "extra-index-url = file:///opt/pypi/simple file:///opt/pypi-more/simple\n"
        "cert = /run/infaas-build/ca-certificates.crt\n"
    )
    volumes = [f"{p}:{p}:ro" for p in LOCAL_WHEELS]
    volumes += [f"{conf}:/etc/pip.conf:ro", f"{CA_BUNDLE}:/run/infaas-build/ca-certificates.crt:ro"]
    return [arg for v in volumes for arg in ("--volume", v)]


def image_ids(*filters: str) -> set[str]:
    args = [arg for f in filters for arg in ("--filter", f)]
    found = run("podman", "images", "--quiet", "--no-trunc", *args).split()
    return {image.removeprefix("sha256:") for image in found}


def stale_images(before: set[str], ours_before: set[str]) -> set[str]:
    """Untagged images this run left: build stages made now, and the images its builds
    replaced under this test's tags."""
    dangling = image_ids("dangling=true")
    return (dangling - before) | (dangling & ours_before)


def build_images(figures: dict[str, Any]) -> None:
    volumes = build_volumes()
    torch_index = ["--build-arg", "TORCH_INDEX_URL=file:///opt/pypi/simple"] if volumes else []
    builds = {
        "cpu": ["-f", "infra/docker/Dockerfile.cpu", "--target", "runtime",
                "--build-arg", f"PYTHON_IMAGE={BASE_IMAGE}", *torch_index, str(REPO)],
        "standins": ["-f", "infra/stacktest/Dockerfile.standins",
                     "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", str(INFRA / "stacktest")],
        "scaler": ["-f", "infra/stacktest/Dockerfile.scaler",
                   "--build-arg", f"RUNTIME_IMAGE={IMAGES['cpu']}", str(REPO)],
    }  # fmt: skip
    for name, args in builds.items():
        started = time.monotonic()
        print(f"building {IMAGES[name]} ...", flush=True)
        run("podman", "build", "--network", "host", *volumes, "-t", IMAGES[name], *args)
        figures[f"build_{name}_s"] = round(time.monotonic() - started, 1)
        size = run("podman", "image", "inspect", "--format", "{{.Size}}", IMAGES[name])
        figures[f"image_{name}_mb"] = round(int(size.strip()) / 1e6)


def write_env_file(path: Path, socket: Path, certs: Path) -> None:
    """infra/.env.example with a fresh secret for every "changethis" (check-secrets passes
    with INFAAS_DEV=0), this run's project, tag, podman socket, certificates, private
    address (the link to the worker host) and the file itself."""
    values = compose_podman.read_env_file(INFRA / ".env.example")
    for key, value in values.items():
        if "changethis" in value:
            values[key] = secrets.token_hex(24)
    values.update({
        "COMPOSE_PROJECT_NAME": PROJECT, "INFAAS_DEV": "0", "IMAGE_TAG": TAG,
        "INFAAS_PODMAN_SOCKET": str(socket), "INFAAS_STACK_ENV_FILE": str(path),
        "INFAAS_STACK_CERTS": str(certs), "INFAAS_PRIVATE_ADDR": second_host.STACK_ADDR,
    })  # fmt: skip
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    path.chmod(0o600)


def left_behind() -> dict[str, str]:
    found = {}
    for project in (PROJECT, WORKER_PROJECT):
        label = f"label=com.docker.compose.project={project}"
        found[f"{project} containers"] = run("podman", "ps", "-a", "-q", "--filter", label)
        found[f"{project} networks"] = run("podman", "network", "ls", "-q", "--filter", label)
        found[f"{project} volumes"] = run("podman", "volume", "ls", "-q", "--filter", label)
    return {kind: out.strip() for kind, out in found.items() if out.strip()}


def stack_up(netns: str, env_file: Path, figures: dict[str, Any]) -> None:
    files = [str(INFRA / "docker-compose.yml"), str(INFRA / "stacktest/docker-compose.podman.yml")]
    project = compose_podman.open_project(files, [str(env_file)], PROJECT, ["remote-workers"])
    started = time.monotonic()
    compose_podman.up(project, [], {})
    compose_podman.wait_for(project, "worker-cpu", "service_healthy", 900)
    compose_podman.wait_for(project, "scaler", "service_started", 60)
    figures["ready_s"] = round(time.monotonic() - started, 1)
    print(f"stack ready in {figures['ready_s']} s (netns {netns})", flush=True)


def user_session(enter: list[str], env_file: Path, work: Path, *extra: str) -> dict[str, Any]:
    """stacktest/user.py in the stack's namespace; what it saw, as a dict."""
    user = subprocess.run(
        [*enter, sys.executable, "-m", "stacktest.user", "--project", PROJECT,
         "--env-file", str(env_file), "--work", str(work), *extra],
        cwd=REPO, env={**os.environ, "PYTHONPATH": f"{INFRA}:{REPO}"},
        capture_output=True, text=True, timeout=3600, check=False,
    )  # fmt: skip
    if user.returncode != 0:
        raise StackTestError(f"the user's session failed:\n{user.stderr[-4000:]}")
    seen: dict[str, Any] = json.loads(user.stdout.strip().splitlines()[-1])
    return seen


def worker_host(worker_netns: str, env_file: Path, figures: dict[str, Any]) -> str:
    """infra/docker-compose.worker.yml's worker up on the worker host; its container."""
    worker_env = env_file.with_name("worker.env")
    stack_env = compose_podman.read_env_file(env_file)
    second_host.write_worker_env(worker_env, INFRA / "worker.env.example", stack_env,
                                 WORKER_PROJECT)  # fmt: skip
    files = [str(INFRA / "docker-compose.worker.yml"),
             str(INFRA / "stacktest/docker-compose.worker.podman.yml")]  # fmt: skip
    stack_podman = os.environ["INFAAS_PODMAN"]
    os.environ["INFAAS_PODMAN"] = f"nsenter --net=/run/netns/{worker_netns} podman"
    try:
        project = compose_podman.open_project(files, [str(worker_env)], WORKER_PROJECT, [])
        started = time.monotonic()
        compose_podman.up(project, ["worker-cpu"], {})
        compose_podman.wait_for(project, "worker-cpu", "service_healthy", 600)
        figures["worker_host_ready_s"] = round(time.monotonic() - started, 1)
    finally:
        os.environ["INFAAS_PODMAN"] = stack_podman
    return f"{WORKER_PROJECT}-worker-cpu-1"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="make stack-test", description=__doc__.split("\n")[0])
    parser.add_argument("--keep-images", action="store_true", help="keep the images built")
    parser.add_argument("--keep-running", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--results", type=Path, default=REPO / "bench/results/stack_test.json")
    parser.add_argument("--scale-timeout-s", type=float, default=420)
    args = parser.parse_args(argv)
    figures: dict[str, Any] = {"ok": False}
    started = time.monotonic()
    preflight()
    ours = [IMAGES[name] for name in IMAGES if image_exists(IMAGES[name])]
    ours_before = {
        run("podman", "image", "inspect", "--format", "{{.Id}}", i).strip() for i in ours
    }
    images_before = (image_ids(), ours_before)
    run_dir = Path(tempfile.mkdtemp(prefix="infaas-stacktest-", dir="/run"))
    netns, service = f"{PROJECT}-{os.getpid()}", None
    socket, env_file = run_dir / "podman.sock", run_dir / "stack.env"
    try:
        ensure_base(figures)
        build_images(figures)
        run("ip", "netns", "add", netns)
        run("ip", "-n", netns, "link", "set", "lo", "up")
        second_host.link(netns, f"{netns}-host2")
        second_host.make_certs(run_dir / "certs")
        enter = ["nsenter", f"--net=/run/netns/{netns}"]
        write_env_file(env_file, socket, run_dir / "certs")
        service = subprocess.Popen(
            [*enter, "podman", "system", "service", "--time=0", f"unix://{socket}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        os.environ["INFAAS_PODMAN"] = " ".join([*enter, "podman"])
        stack_up(netns, env_file, figures)
        work = run_dir / "work"
        work.mkdir()
        figures.update(user_session(enter, env_file, work, "--scale-timeout-s",
                                    str(args.scale_timeout_s)))  # fmt: skip
        # the scaler stops first: its compose actuator scales this host's workers only and
        # would count the worker host's as one of them (removing it scales a local one away)
        compose_podman.podman("stop", "--time", "10", f"{PROJECT}-scaler-1")
        container = worker_host(f"{netns}-host2", env_file, figures)
        worker_podman = f"nsenter --net=/run/netns/{netns}-host2 podman"
        figures["worker_host"] = user_session(enter, env_file, work, "--worker-host",
                                              worker_podman, container)  # fmt: skip
        figures["ok"] = True
    except (StackTestError, compose_podman.ComposeError) as exc:
        print(f"stack test failed: {exc}", file=sys.stderr)
        logs = [c["name"] for c in compose_podman.containers(PROJECT)] if service else []
        for name in logs:
            print(f"--- {name}\n{compose_podman.logs(name, 25)}", file=sys.stderr)
    finally:
        if args.keep_running and service is not None:
            print(f"left running: netns {netns}, INFAAS_PODMAN={os.environ['INFAAS_PODMAN']}")
        else:
            teardown(netns, service, run_dir, args.keep_images, figures, images_before)
            figures["total_s"] = round(time.monotonic() - started, 1)
            args.results.parent.mkdir(parents=True, exist_ok=True)
            args.results.write_text(json.dumps(figures, indent=1) + "\n")
            print(json.dumps(figures, indent=1))
    return 0 if figures["ok"] and not figures.get("left_behind", True) else 1


def teardown(
    netns: str,
    service: subprocess.Popen[bytes] | None,
    run_dir: Path,
    keep_images: bool,
    figures: dict[str, Any],
    images_before: tuple[set[str], set[str]],
) -> None:
    """Everything the run made goes: the stack's containers, networks and volumes, podman's
    service, the namespace, the run's folder and (unless kept) the images built."""
    if service is not None:
        os.environ["INFAAS_PODMAN"] = f"nsenter --net=/run/netns/{netns}-host2 podman"
        compose_podman.down(WORKER_PROJECT, volumes=True)
        os.environ["INFAAS_PODMAN"] = f"nsenter --net=/run/netns/{netns} podman"
        compose_podman.down(PROJECT, volumes=True)
        service.terminate()
        service.wait(30)
    os.environ.pop("INFAAS_PODMAN", None)
    for name in (f"{netns}-host2", netns):
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
    shutil.rmtree(run_dir, ignore_errors=True)
    if not keep_images:
        subprocess.run(["podman", "rmi", "--force", *IMAGES.values()], check=False,
                       capture_output=True)  # fmt: skip
    stale = stale_images(*images_before)
    if stale:
        subprocess.run(["podman", "rmi", "--force", *stale], check=False, capture_output=True)
    figures["left_behind"] = left_behind()
    if stale_images(*images_before):
        figures["left_behind"]["images"] = " ".join(sorted(stale_images(*images_before)))


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except StackTestError as exc:
        print(f"stack test failed: {exc}", file=sys.stderr)
        sys.exit(1)

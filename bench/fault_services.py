"""Services of the fault bench's own, to stop and start at will: a RabbitMQ node, a Redis
server, a PostgreSQL cluster and a moto S3 server, each on free loopback ports and in a
temporary folder, never the machine's shared ones (other runs use those).

Each class starts its service, waits until it answers, stops it and starts it again; the
data survive a stop (the node's Mnesia folder, PostgreSQL's data folder, moto's state in
this process), except Redis, which comes back empty as a restarted cache would.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.services import free_port


def _run(argv: list[str], *, timeout_s: float = 60, check: bool = True) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _wait(what: str, ready: Any, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start within {timeout_s:.0f} s")
        time.sleep(0.2)


def _own(path: Path, user: str) -> None:
    """Give ``path`` to a service's system user (RabbitMQ and PostgreSQL refuse root)."""
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)


# --------------------------------------------------------------------------- RabbitMQ


@dataclass
class RabbitNode:
    """A RabbitMQ node of its own (no management plugin), run as the ``rabbitmq`` user so
    that it shares the Erlang cookie of the machine's ``rabbitmqctl``."""

    home: Path
    name: str = field(default_factory=lambda: f"infaas-faults-{os.getpid()}@localhost")
    port: int = field(default_factory=free_port)
    dist_port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def _env(self) -> dict[str, str]:
        return {
            "HOME": "/var/lib/rabbitmq",
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.home / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.home / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.home / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.home / "rabbitmq.conf"),
        }

    def start(self) -> None:
        if not (self.home / "rabbitmq.conf").exists():
            self.home.mkdir(parents=True, exist_ok=True)
            (self.home / "enabled_plugins").write_text("[].\n")
            (self.home / "rabbitmq.conf").write_text(
                f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users = none\n"
            )
            for path in (self.home, self.home / "enabled_plugins", self.home / "rabbitmq.conf"):
                _own(path, "rabbitmq")
        server = "/usr/lib/rabbitmq/bin/rabbitmq-server"
        env = " ".join(f"{k}={v}" for k, v in self._env().items())
        _run(
            [
                "runuser",
                "-u",
                "rabbitmq",
                "--",
                "sh",
                "-c",
                f"cd {self.home} && env {env} {server} -detached",
            ]
        )
        _wait(f"RabbitMQ node {self.name}", self._running, timeout_s=90)

    def _running(self) -> bool:
        done = subprocess.run(
            ["rabbitmqctl", "-q", "-n", self.name, "await_startup", "--timeout", "5"],
            capture_output=True,
            timeout=30,
            check=False,
        )
        return done.returncode == 0

    def stop(self) -> None:
        _run(["rabbitmqctl", "-q", "-n", self.name, "stop"], check=False)

    def ctl(self, *args: str) -> list[list[str]]:
        """``rabbitmqctl`` on this node; rows of tab-separated columns."""
        out = _run(["rabbitmqctl", "-q", "-n", self.name, *args])
        return [line.split("\t") for line in out.splitlines() if line.strip()]

    def queues(self, *columns: str) -> list[list[str]]:
        return self.ctl("list_queues", "--no-table-headers", "name", *columns)

    def close_all_connections(self) -> int:
        count = len(self.ctl("list_connections", "--no-table-headers", "pid"))
        self.ctl("close_all_connections", "fault bench: every connection closed")
        return count

    def unacked_by_peer(self) -> dict[int, int]:
        """Unacknowledged messages per client port (a process's connections)."""
        ports = {
            row[0]: int(row[1])
            for row in self.ctl("list_connections", "--no-table-headers", "pid", "peer_port")
        }
        held: dict[int, int] = {}
        for pid, unacked in self.ctl(
            "list_channels", "--no-table-headers", "connection", "messages_unacknowledged"
        ):
            port = ports.get(pid)
            if port is not None:
                held[port] = held.get(port, 0) + int(unacked)
        return held


# ------------------------------------------------------------------------------ Redis


@dataclass
class RedisNode:
    home: Path
    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        _run(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "yes",
                "--dir",
                str(self.home),
                "--logfile",
                str(self.home / "redis.log"),
            ]
        )
        _wait("Redis", self._running)

    def _running(self) -> bool:
        probe = ["redis-cli", "-p", str(self.port), "ping"]
        return _run(probe, check=False).strip() == "PONG"

    def stop(self) -> None:
        _run(["redis-cli", "-p", str(self.port), "shutdown", "nosave"], check=False)


# ------------------------------------------------------------------------- PostgreSQL


@dataclass
class PostgresNode:
    """A PostgreSQL cluster of its own (initdb into a temporary folder), run as the
    ``postgres`` user, trust authentication on loopback."""

    home: Path
    port: int = field(default_factory=free_port)
    database: str = "infaas"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{self.database}"

    @staticmethod
    def _bin(tool: str) -> str:
        found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{tool}"))
        if not found:
            raise RuntimeError(f"PostgreSQL's {tool} is not installed under /usr/lib/postgresql")
        return str(found[-1])

    def _as_postgres(self, *argv: str, timeout_s: float = 120) -> str:
        return _run(["runuser", "-u", "postgres", "--", *argv], timeout_s=timeout_s)

    def start(self) -> None:
        data = self.home / "data"
        if not data.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            _own(self.home, "postgres")
            self._as_postgres(
                self._bin("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"
            )
            fresh = True
        else:
            fresh = False
        options = f"-p {self.port} -k {self.home} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(
            self._bin("pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(self.home / "pg.log"),
            "-o",
            options,
            "-w",
            "start",
        )
        if fresh:
            self._as_postgres(
                self._bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), self.database
            )

    def stop(self) -> None:
        data = self.home / "data"
        if data.exists():
            _run(
                [
                    "runuser",
                    "-u",
                    "postgres",
                    "--",
                    self._bin("pg_ctl"),
                    "-D",
                    str(data),
                    "-m",
                    "fast",
                    "-w",
                    "stop",
                ],
                check=False,
            )


# --------------------------------------------------------------------------------- S3


@dataclass
class S3Node:
    """moto's S3 in this process: stopped, the endpoint refuses connections; started
    again on the same port, the buckets are still there (moto keeps them in memory)."""

    port: int = field(default_factory=free_port)
    _server: Any = None

    def url(self, bucket: str) -> str:
        return f"s3://testing:testing@127.0.0.1:{self.port}/{bucket}"

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per request
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)

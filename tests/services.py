"""Isolated pieces of the real services for one test run.

Each run gets its own RabbitMQ vhost, its own PostgreSQL database, its own Redis key
prefix and its own S3 endpoint (a moto server), and removes them at the end. A missing
service is a test failure with the command that starts it, never a skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

RABBIT_HOST = os.environ.get("INFAAS_TEST_RABBIT_HOST", "127.0.0.1")
POSTGRES_ADMIN_DSN = os.environ.get(
    "INFAAS_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("INFAAS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

START_HINTS = {
    "rabbitmq": "rabbitmq-server -detached",
    "postgres": "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    "redis": 'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" '
    "--appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log",
}


class ServiceMissing(RuntimeError):
    def __init__(self, service: str, why: str) -> None:
        super().__init__(
            f"{service} is needed by the integration tests but {why}; "
            f"start it with: {START_HINTS.get(service, '(see DEVELOPERS.md)')}"
        )


def unique_name(kind: str) -> str:
    return f"infaas-test-{kind}-{uuid.uuid4().hex[:10]}"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def _rabbitmqctl(*args: str) -> None:
    exe = shutil.which("rabbitmqctl")
    if exe is None:
        raise ServiceMissing("rabbitmq", "rabbitmqctl is not on PATH")
    proc = subprocess.run([exe, *args], capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise ServiceMissing("rabbitmq", f"`rabbitmqctl {' '.join(args)}` failed: {proc.stderr}")


@contextmanager
def rabbitmq_vhost(user: str = "guest", password: str = "guest") -> Iterator[str]:
    """A fresh vhost; yields its AMQP URL."""
    if not _port_open(RABBIT_HOST, 5672):
        raise ServiceMissing("rabbitmq", f"nothing listens on {RABBIT_HOST}:5672")
    vhost = unique_name("vhost")
    _rabbitmqctl("add_vhost", vhost)
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        yield f"amqp://{user}:{password}@{RABBIT_HOST}:5672/{vhost}"
    finally:
        _rabbitmqctl("delete_vhost", vhost)


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh database; yields its SQLAlchemy URL."""
    import psycopg

    name = unique_name("db").replace("-", "_")
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise ServiceMissing("postgres", f"cannot connect ({exc})") from exc
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def redis_prefix() -> Iterator[tuple[str, str]]:
    """A unique key prefix; yields (redis URL, prefix) and deletes the prefix's keys."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise ServiceMissing("redis", f"cannot connect to {REDIS_URL} ({exc})") from exc
    prefix = unique_name("state")
    try:
        yield REDIS_URL, prefix
    finally:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@contextmanager
def s3_endpoint() -> Iterator[tuple[str, int]]:
    """A moto S3 server on a free loopback port; yields (host, port)."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield "127.0.0.1", port
    finally:
        server.stop()

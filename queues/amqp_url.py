"""One reading of an AMQP URL for every AMQP client of the project.

pika and kombu disagree on the path of ``amqp://guest:guest@host:5672//``: kombu takes
everything after the first ``/`` as the vhost ("/"), pika the first segment ("" -- and
RabbitMQ answers ``vhost  not found``). So the URL is parsed here, once, with kombu's
rules, and each client gets explicit parameters: pika a ``ConnectionParameters`` with
the vhost set, kombu and Celery a canonical URL whose vhost is percent-encoded whole.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

import pika

from queues.errors import ConfigError

SETTING = "INFAAS_BROKER_URL"
EXPECTED_FORM = (
    "amqp://USER:PASSWORD@HOST:PORT/VHOST (amqps:// for TLS; the path `//` or `/%2F` "
    "or none is the default vhost `/`)"
)
DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671}
DEFAULT_USER = "guest"  # kombu's and pika's default when the URL names nobody
DEFAULT_VHOST = "/"


@dataclass(frozen=True, slots=True)
class AmqpAddress:
    """Where and as whom to connect; ``vhost`` is decoded (``/`` is the default one)."""

    host: str
    port: int
    user: str
    password: str
    vhost: str
    tls: bool = False

    @property
    def scheme(self) -> str:
        return "amqps" if self.tls else "amqp"

    def _netloc(self, password: str) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{quote(self.user, safe='')}:{password}@{host}:{self.port}"

    def url(self) -> str:
        """The canonical URL: every part percent-encoded, so kombu, Celery and pika's own
        URL reader would all read the same vhost from it."""
        password = quote(self.password, safe="")
        return f"{self.scheme}://{self._netloc(password)}/{quote(self.vhost, safe='')}"

    def redacted_url(self) -> str:
        return f"{self.scheme}://{self._netloc('***')}/{quote(self.vhost, safe='')}"

    def pika_parameters(
        self,
        *,
        heartbeat_s: int,
        socket_timeout_s: float = 5.0,
        connection_attempts: int = 1,
    ) -> pika.ConnectionParameters:
        ssl_options = (
            pika.SSLOptions(ssl.create_default_context(), server_hostname=self.host)
            if self.tls
            else None
        )
        return pika.ConnectionParameters(
            host=self.host,
            port=self.port,
            virtual_host=self.vhost,
            credentials=pika.PlainCredentials(self.user, self.password),
            heartbeat=heartbeat_s,
            socket_timeout=socket_timeout_s,
            connection_attempts=connection_attempts,
            ssl_options=ssl_options,
        )


def _refuse(url: str, problem: str) -> ConfigError:
    shown = url
    parts = urlsplit(url)
    if parts.password:
        shown = url.replace(f":{parts.password}@", ":***@", 1)
    return ConfigError(f"{SETTING} must be {EXPECTED_FORM}, but {shown!r} {problem}")


def parse_amqp_url(url: str) -> AmqpAddress:
    """Read an AMQP URL the way kombu does: the path after the first ``/``, percent-
    decoded, is the vhost (``//`` and ``/%2F`` are ``/``; no path or ``/`` alone is the
    default ``/`` too). Raises :class:`ConfigError` naming the setting and the form."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise _refuse(url, f"has scheme {parts.scheme!r}, not amqp or amqps")
    if parts.query or parts.fragment:
        raise _refuse(
            url,
            "carries options after `?` or `#`; the URL names only the broker (set the "
            "heartbeat with INFAAS_BROKER_HEARTBEAT_S)",
        )
    try:
        port = parts.port
    except ValueError:
        raise _refuse(url, "has a port that is not a number from 1 to 65535") from None
    if port == 0:
        raise _refuse(url, "has port 0")
    host = parts.hostname
    if not host:
        raise _refuse(url, "names no host")
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    return AmqpAddress(
        host=host,
        port=port or DEFAULT_PORTS[scheme],
        user=unquote(parts.username) if parts.username else DEFAULT_USER,
        password=unquote(parts.password) if parts.password else DEFAULT_USER,
        vhost=unquote(path) or DEFAULT_VHOST,
        tls=scheme == "amqps",
    )

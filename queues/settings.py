"""Broker settings (prefix ``INFAAS_``); unset broker URL means the in-process transport."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from queues.amqp_url import AmqpAddress, parse_amqp_url
from queues.errors import ConfigError
from queues.topology import check_prefix

MEMORY_URL = "memory://localhost//"


class BrokerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INFAAS_", extra="ignore")

    broker_url: str | None = Field(
        default=None,
        description="amqp://user:pass@host:5672/vhost (`//` is the default vhost `/`); "
        "unset: in-process transport (embedded)",
    )
    queue_prefix: str = Field(default="infaas", description="first part of every queue name")
    queue_max_length: int = Field(
        default=2000, ge=1, le=1_000_000, description="online queries waiting per variant queue"
    )
    broker_heartbeat_s: int = Field(default=30, ge=0, le=600)
    edge_batch_rows: int = Field(
        default=32,
        ge=1,
        le=4096,
        description="the gateway packs queries for one variant that reach it together "
        "into one message of at most this many rows; 1: one message per query",
    )
    edge_batch_window_ms: float = Field(
        default=0.0,
        ge=0,
        le=5,
        description="how long the gateway holds a query to pack others with it, never "
        "more than a tenth of what is left of its latency objective; 0: no wait, only "
        "queries that reach it in the same event-loop turn are packed",
    )
    broker_reconnect_grace_s: float = Field(
        default=1.0,
        ge=0,
        le=30,
        description="how long after losing its broker connection the gateway holds a "
        "query (new, or in flight and to be sent again) for the reconnect before it "
        "answers 503 broker_unavailable; 0: refuse at once",
    )

    @field_validator("broker_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        """A bad URL raises ConfigError (not a validation error) so every entry point
        reports it the same way: the setting, what is wrong, the expected form."""
        if not value:
            return None
        if urlsplit(value).scheme != "memory":
            parse_amqp_url(value)
        return value

    @field_validator("queue_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        return check_prefix(value)

    @property
    def embedded(self) -> bool:
        return self.broker_url is None or urlsplit(self.broker_url).scheme == "memory"

    def amqp(self) -> AmqpAddress:
        """Host, port, credentials and vhost for a raw AMQP client (pika)."""
        if self.broker_url is None or self.embedded:
            raise ConfigError(
                "this needs RabbitMQ, but INFAAS_BROKER_URL is unset or memory:// (the "
                "in-process transport); set it to amqp://USER:PASSWORD@HOST:5672//"
            )
        return parse_amqp_url(self.broker_url)

    @property
    def url(self) -> str:
        """The URL kombu and Celery connect with: the memory transport's, or the AMQP
        URL rewritten canonically (the same vhost as :meth:`amqp` gives pika)."""
        if self.broker_url is None or self.embedded:
            return self.broker_url or MEMORY_URL
        return self.amqp().url()

    def redacted_url(self) -> str:
        if self.embedded:
            return self.url
        return self.amqp().redacted_url()

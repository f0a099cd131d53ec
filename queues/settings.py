"""Broker settings (prefix ``INFAAS_``); unset broker URL means the in-process transport."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from queues.topology import check_prefix

MEMORY_URL = "memory://localhost//"


class BrokerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INFAAS_", extra="ignore")

    broker_url: str | None = Field(
        default=None,
        description="amqp://user:pass@host:5672/vhost; unset: in-process transport (embedded)",
    )
    queue_prefix: str = Field(default="infaas", description="first part of every queue name")
    queue_max_length: int = Field(
        default=2000, ge=1, le=1_000_000, description="online queries waiting per variant queue"
    )
    broker_heartbeat_s: int = Field(default=30, ge=0, le=600)

    @field_validator("broker_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        scheme = urlsplit(value).scheme
        if scheme not in ("amqp", "amqps", "memory"):
            raise ValueError(
                f"INFAAS_BROKER_URL must be amqp://user:password@host:port/vhost "
                f"(or memory://), got scheme {scheme!r}"
            )
        return value

    @field_validator("queue_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        return check_prefix(value)

    @property
    def url(self) -> str:
        return self.broker_url or MEMORY_URL

    @property
    def embedded(self) -> bool:
        return self.url.startswith("memory://")

    def redacted_url(self) -> str:
        parts = urlsplit(self.url)
        if parts.password:
            netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
            return parts._replace(netloc=netloc).geturl()
        return self.url

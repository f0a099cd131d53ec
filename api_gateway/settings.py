"""Gateway settings (prefix ``INFAAS_``)."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from queues.errors import ConfigError, InvalidRequest
from registry.tenancy import check_tenant


class QuotaLimits(BaseModel):
    """A tenant's quotas; None: unlimited. One set for every tenant from the
    ``INFAAS_QUOTA_*`` settings, overridden per tenant by ``INFAAS_QUOTA_TENANTS``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    qps: float | None = Field(default=None, gt=0, description="queries per second")
    burst: float | None = Field(
        default=None, ge=1, description="queries at once above the rate (default: 1 s of it)"
    )
    jobs: int | None = Field(default=None, ge=0, description="batch jobs not yet finished")
    variants: int | None = Field(default=None, ge=0, description="variants in the catalog")
    stored_mb: float | None = Field(
        default=None, ge=0, description="MB of uploaded models and validation sets"
    )

    def merged(self, override: QuotaLimits) -> QuotaLimits:
        """These limits with what ``override`` sets replacing them."""
        return self.model_copy(update=override.model_dump(exclude_unset=True))


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INFAAS_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="address the gateway listens on")
    port: int = Field(default=8080, ge=0, le=65535)
    grpc_port: int | Literal["off"] | None = Field(
        default=None,
        description="port of the Open Inference Protocol's gRPC service, on the same host; "
        "unset: INFAAS_PORT + 1 (8081), or any free port when INFAAS_PORT is 0; 0: any free "
        "port; off: no gRPC",
    )
    max_batch: int = Field(default=64, ge=1, le=4096, description="inputs per query, at most")
    default_timeout_ms: float = Field(
        default=10_000, gt=0, le=600_000, description="answer deadline without latency_ms"
    )
    timeout_factor: float = Field(
        default=4.0,
        ge=1.0,
        le=1000.0,
        description="with latency_ms, the answer deadline is max(factor × latency_ms, "
        "min_timeout_ms): a late answer still counts as an SLO miss",
    )
    min_timeout_ms: float = Field(default=1_000, gt=0, le=600_000)
    refresh_interval_s: float = Field(
        default=0.5, gt=0, le=60, description="how often catalog and live state are re-read"
    )
    freeze_heap: bool = Field(
        default=True,
        description="after start, hide long-lived objects from the garbage collector's full "
        "passes (queues.heap), which otherwise stall the event loop for tens of ms",
    )
    query_fast_path: bool = Field(
        default=True,
        description="answer the /v1 query routes without FastAPI's routing and dependency "
        "resolution (api_gateway/fast_queries.py); off: every request through FastAPI",
    )
    opentelemetry: bool = Field(
        default=False,
        description="FastAPI's own OpenTelemetry instrumentation (spans, metrics and logs "
        "of each request, once the process configures an OpenTelemetry SDK); off, FastAPI "
        "skips the check it makes on every request whether one is configured (~17 µs)",
    )
    overhead_ms: float = Field(
        default=0.5,
        ge=0,
        le=1000,
        description="pipeline time the selector adds to a variant's model latency",
    )

    max_upload_mb: float = Field(
        default=512,
        gt=0,
        le=65_536,
        description="largest model registration upload (model file + validation set), MB",
    )
    max_body_mb: float = Field(
        default=32,
        gt=0,
        le=4096,
        description="largest JSON request body, MB, refused before parsing: 64 rows "
        "(INFAAS_MAX_BATCH) of a 3x32x32 image take ~4 MB of JSON; larger inputs belong "
        "in a batch job's .npz",
    )
    delete_drain_s: float = Field(
        default=10.0,
        ge=0,
        le=600,
        description="how long deleting a model waits for its loaded variants' queries to finish",
    )

    auth: bool | None = Field(
        default=None,
        description="API keys (on|off); unset: on unless the gateway listens on loopback only",
    )
    bootstrap_admin_key: SecretStr | None = Field(
        default=None,
        description="made an admin key at start when no active admin key exists (32+ chars)",
    )
    open_docs_metrics: bool | None = Field(
        default=None,
        description="/metrics, /docs and /openapi.json without a key (on|off); unset: open "
        "on loopback only",
    )

    quota_qps: float | None = Field(
        default=None, gt=0, description="queries per second per tenant; unset: unlimited"
    )
    quota_burst: float | None = Field(
        default=None, ge=1, description="queries a tenant may send at once above its rate"
    )
    quota_jobs: int | None = Field(default=None, ge=0, description="unfinished jobs per tenant")
    quota_variants: int | None = Field(default=None, ge=0, description="variants per tenant")
    quota_stored_mb: float | None = Field(
        default=None, ge=0, description="MB of uploads (models, validation sets) per tenant"
    )
    quota_tenants: dict[str, QuotaLimits] = Field(
        default_factory=dict,
        description='per-tenant overrides, JSON: {"acme": {"qps": 50, "jobs": 2}}',
    )

    @field_validator("quota_tenants")
    @classmethod
    def _check_quota_tenants(cls, value: dict[str, QuotaLimits]) -> dict[str, QuotaLimits]:
        for tenant in value:
            try:
                check_tenant(tenant)
            except InvalidRequest as exc:
                raise ValueError(f"INFAAS_QUOTA_TENANTS: {exc.message}") from None
        return value

    def quota_of(self, tenant: str) -> QuotaLimits:
        """The quotas of one tenant: the INFAAS_QUOTA_* settings with its overrides."""
        base = QuotaLimits(
            qps=self.quota_qps,
            burst=self.quota_burst,
            jobs=self.quota_jobs,
            variants=self.quota_variants,
            stored_mb=self.quota_stored_mb,
        )
        override = self.quota_tenants.get(tenant)
        return base if override is None else base.merged(override)

    @property
    def query_quota_on(self) -> bool:
        """Whether any tenant has a queries-per-second quota (if not, no query touches
        Redis for quotas)."""
        return self.quota_qps is not None or any(
            q.qps is not None for q in self.quota_tenants.values()
        )

    @property
    def loopback(self) -> bool:
        """Whether the gateway listens on a loopback address only."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host.strip("[]")).is_loopback
        except ValueError:
            return False

    @property
    def grpc_listen_port(self) -> int | None:
        """The gRPC port to bind (0: any free one), None when gRPC is off."""
        if self.grpc_port == "off":
            return None
        if self.grpc_port is None:
            return 0 if self.port == 0 else self.port + 1
        return self.grpc_port

    @property
    def auth_on(self) -> bool:
        return self.auth if self.auth is not None else not self.loopback

    @property
    def info_open(self) -> bool:
        if not self.auth_on:
            return True
        return self.open_docs_metrics if self.open_docs_metrics is not None else self.loopback

    def check_demo_exposure(self) -> None:
        """The demo serves without keys by default; beyond loopback only when told."""
        if not self.loopback and self.auth is None:
            raise ConfigError(
                f"the demo would serve on {self.host} without authentication: anyone who "
                "reaches the port could register and delete models; set INFAAS_AUTH=off to "
                "do it anyway, or INFAAS_AUTH=on with INFAAS_BOOTSTRAP_ADMIN_KEY, or serve "
                "on 127.0.0.1"
            )

    def describe_quotas(self) -> str:
        """The line a gateway starts with, after :meth:`describe_auth`."""
        limits = self.quota_of("")  # what a tenant without an override gets
        set_ = {k: v for k, v in limits.model_dump().items() if v is not None}
        if not set_ and not self.quota_tenants:
            return "quotas: none (INFAAS_QUOTA_QPS, _JOBS, _VARIANTS, _STORED_MB set them)"
        shown = ", ".join(f"{k}={v:g}" for k, v in set_.items()) or "none"
        tenants = ", ".join(sorted(self.quota_tenants))
        return f"quotas per tenant: {shown}" + (f" (own limits: {tenants})" if tenants else "")

    def describe_auth(self) -> str:
        """The line a gateway starts with."""
        if self.auth_on:
            return "authentication: on (API keys; INFAAS_AUTH=off turns it off)"
        why = "INFAAS_AUTH=off" if self.auth is False else f"listening on loopback {self.host}"
        return f"authentication: OFF ({why}): anyone who reaches the port may do anything"

    @model_validator(mode="after")
    def _check_grpc_port(self) -> GatewaySettings:
        port = self.grpc_listen_port
        if port is not None and not 0 <= port <= 65535:
            raise ValueError(
                f"INFAAS_GRPC_PORT {port} is not a port; set one (0: any free one), or off"
            )
        if port is not None and port != 0 and port == self.port:
            raise ValueError(
                f"INFAAS_GRPC_PORT and INFAAS_PORT are both {port}; give gRPC a port of its own"
            )
        return self

    @model_validator(mode="after")
    def _check_timeouts(self) -> GatewaySettings:
        if self.min_timeout_ms > self.default_timeout_ms:
            raise ValueError(
                f"INFAAS_MIN_TIMEOUT_MS ({self.min_timeout_ms}) must not exceed "
                f"INFAAS_DEFAULT_TIMEOUT_MS ({self.default_timeout_ms})"
            )
        return self

    def timeout_ms(self, latency_ms: float | None, requested_ms: float | None) -> float:
        if requested_ms is not None:
            return requested_ms
        if latency_ms is None:
            return self.default_timeout_ms
        return max(self.timeout_factor * latency_ms, self.min_timeout_ms)

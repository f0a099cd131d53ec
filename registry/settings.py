"""Where the registry keeps things: catalog, live state and object store.

Unset means the embedded default: an SQLite file and a local folder under
``INFAAS_HOME``, live state in this process.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from registry.jobs.settings import JobSettings
from registry.pricing import PriceTable

DEFAULT_HOME = "~/.infaas"


class RegistrySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INFAAS_", extra="ignore")

    # One default for every way in (`infaas` by hand, `make demo`, tests pass their own):
    # the user's home, so a second run from anywhere reuses what the first one built.
    home: Path = Field(
        default=Path(DEFAULT_HOME),
        description="folder of the embedded default (SQLite catalog, local object store, "
        "demo models, artifact cache)",
    )
    catalog_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the catalog; unset: SQLite in INFAAS_HOME"
    )
    state_url: str | None = Field(
        default=None, description="redis://host:port/db for live state; unset: in-process"
    )
    store_url: str | None = Field(
        default=None,
        description="s3://ACCESS:SECRET@host:port/bucket or a local folder; "
        "unset: INFAAS_HOME/store",
    )
    state_prefix: str = Field(default="infaas", description="key prefix in the live-state store")
    state_ttl_s: float = Field(default=5.0, gt=0, le=300, description="heartbeat lifetime")
    prices_file: Path | None = Field(default=None, description="JSON price table")
    cpu_instance: str = "m5.2xlarge"
    gpu_instance: str = "p3.2xlarge"
    # batch jobs (``INFAAS_JOB_*``): read with these, once, by the gateway and the workers
    jobs: JobSettings = Field(default_factory=JobSettings)

    @field_validator("home")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @field_validator("state_url")
    @classmethod
    def _check_state_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"INFAAS_STATE_URL must be a redis:// URL, got {value!r}")
        return value or None

    def describe_home(self) -> str:
        """The line the CLI starts with, so nobody wonders where things went."""
        origin = (
            "from INFAAS_HOME"
            if "home" in self.model_fields_set
            else f"the default {DEFAULT_HOME}; set INFAAS_HOME to move it"
        )
        return f"home: {self.home} ({origin})"

    @property
    def resolved_catalog_url(self) -> str:
        return self.catalog_url or f"sqlite:///{self.home / 'catalog.db'}"

    @property
    def resolved_store_url(self) -> str:
        return self.store_url or str(self.home / "store")

    def price_table(self) -> PriceTable:
        base = PriceTable.from_file(self.prices_file) if self.prices_file else PriceTable.default()
        return PriceTable(
            base.instances, cpu_instance=self.cpu_instance, gpu_instance=self.gpu_instance
        )

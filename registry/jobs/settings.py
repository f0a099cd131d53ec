"""Settings of batch jobs (prefix ``INFAAS_JOB_``), read by gateways and workers alike."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from registry.jobs.buckets import DEFAULT_RULES, BucketRule, parse_bucket_rules


class JobSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INFAAS_JOB_", extra="ignore")

    chunk_items: int = Field(
        default=1000, ge=1, le=1_000_000, description="items per chunk when a job names none"
    )
    max_items: int = Field(
        default=10_000_000, ge=1, le=1_000_000_000, description="items in one job, at most"
    )
    max_chunks: int = Field(default=20_000, ge=1, le=1_000_000, description="chunks per job")
    max_input_objects: int = Field(
        default=10_000, ge=1, le=1_000_000, description=".npz objects under one input prefix"
    )
    max_upload_mb: float = Field(
        default=256, gt=0, le=65_536, description="largest .npz uploaded with a job, MB"
    )
    time_factor: float = Field(
        default=2.0,
        ge=1.0,
        le=100.0,
        description="batch work runs on spare capacity: estimates assume it runs this many "
        "times slower than the variant's profile",
    )
    chunk_overhead_ms: float = Field(
        default=100.0,
        ge=0,
        le=600_000,
        description="time per chunk outside the model (store and catalog), for estimates",
    )
    assumed_replicas: int = Field(
        default=1, ge=1, le=10_000, description="workers a job can count on, for estimates"
    )
    buckets: str = Field(
        default=DEFAULT_RULES,
        description="the buckets each tenant's jobs may read and write: TENANT:BUCKET "
        "patterns, comma-separated, {tenant} for the caller's (registry/jobs/buckets.py); "
        "the store's own bucket never",
    )
    sweep_interval_s: float = Field(
        default=30.0, gt=0, le=3600, description="how often a gateway looks for stuck chunks"
    )
    publish_grace_s: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="a chunk recorded but not published this long ago is published again "
        "(its gateway died between commit and publish)",
    )
    stale_s: float = Field(
        default=120.0,
        gt=0,
        le=86_400,
        description="a chunk waiting this long with nothing in its queue is published again",
    )
    lease_s: float = Field(
        default=60.0,
        gt=0,
        le=86_400,
        description="a claim its worker stopped renewing for this long is free to take",
    )
    renew_interval_s: float = Field(
        default=1.0, gt=0, le=3600, description="how often a running chunk renews its claim"
    )
    max_attempts: int = Field(
        default=3,
        ge=1,
        le=100,
        description="runs of one chunk before the job fails (a hand-back after an outage "
        "is not a run)",
    )
    requeue_delay_s: float = Field(
        default=5.0,
        ge=0,
        le=3600,
        description="delay before a chunk handed back (other hardware, a store outage) returns",
    )
    runtime_cache: int = Field(
        default=2, ge=1, le=64, description="loaded variants a worker keeps for batch chunks"
    )
    low_priority: bool = Field(
        default=True, description="run chunks on a thread at the lowest OS priority (nice 19)"
    )
    yield_to_online: bool = Field(
        default=True, description="pause chunks while the worker's online variants are pressed"
    )
    yield_busy: float = Field(
        default=0.8,
        gt=0,
        le=1.0,
        description="pause batch work while an online variant on the worker is this busy",
    )
    yield_check_s: float = Field(
        default=0.5, gt=0, le=60, description="how often a chunk re-reads the worker's load"
    )

    @field_validator("buckets")
    @classmethod
    def _check_buckets(cls, value: str) -> str:
        """A bad rule raises ConfigError at start, saying the form."""
        parse_bucket_rules(value)
        return value

    @property
    def bucket_rules(self) -> tuple[BucketRule, ...]:
        return parse_bucket_rules(self.buckets)

    @model_validator(mode="after")
    def _check_intervals(self) -> JobSettings:
        if self.renew_interval_s * 3 > self.lease_s:
            raise ValueError(
                f"INFAAS_JOB_LEASE_S ({self.lease_s:g}) must be at least three renewals "
                f"(INFAAS_JOB_RENEW_INTERVAL_S = {self.renew_interval_s:g})"
            )
        return self

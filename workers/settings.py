"""Settings of one worker process (prefix ``INFAAS_WORKER_``)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from workers.states import StateSettings


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INFAAS_WORKER_", extra="ignore")

    hardware: str = Field(default="cpu", description="cpu or gpu: the hardware this worker owns")
    cores: tuple[int, ...] = Field(
        default=(), description="CPU cores to pin the worker to (empty: all it may use)"
    )
    variants: tuple[str, ...] | None = Field(
        default=None,
        description="variants to load at start; unset: every ready variant of this hardware",
    )
    replicas: int = Field(default=1, ge=1, le=64, description="replicas per variant at start")
    load_on_demand: bool = Field(
        default=True,
        description="load a variant that a query chose and no worker runs (where no scaler "
        "runs; workers.loader); off: only what it is told to load",
    )
    monitor_interval_s: float = Field(default=1.0, gt=0, le=60)
    states: StateSettings = Field(
        default_factory=StateSettings,
        description="the variant state machine's thresholds (INFAAS_STATE_*), read once here",
    )
    cache_dir: Path | None = Field(default=None, description="local artifact cache")
    max_prefetch: int = Field(default=256, ge=1, le=10_000)
    batch_cap: int = Field(
        default=0,
        ge=0,
        le=4096,
        description="cap on the inputs run as one batch (1 turns batching off; 0: each "
        "variant's profiled best batch)",
    )
    batch_wait_ms: float = Field(
        default=2.0, ge=0, le=1000, description="longest wait for more queries to fill a batch"
    )
    freeze_heap: bool = Field(
        default=True,
        description="after each model load, hide long-lived objects from the garbage "
        "collector's full passes (queues.heap), which otherwise stall every replica",
    )
    celery_concurrency: int = Field(default=2, ge=1, le=64)
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="serve Prometheus metrics on this port, all interfaces (unset: no "
        "metrics server; 0: any free port)",
    )

    @field_validator("hardware")
    @classmethod
    def _check_hardware(cls, value: str) -> str:
        if value not in ("cpu", "gpu"):
            raise ValueError(f"worker hardware must be cpu or gpu, got {value!r}")
        return value

    @field_validator("cores", mode="before")
    @classmethod
    def _parse_cores(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(int(part) for part in value.split(",") if part.strip())
        return value

    @field_validator("cores")
    @classmethod
    def _check_cores(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        allowed = os.sched_getaffinity(0)
        missing = [core for core in value if core not in allowed]
        if missing:
            raise ValueError(
                f"cores {missing} are not available to this process (it may use {sorted(allowed)})"
            )
        return value

    @field_validator("variants", mode="before")
    @classmethod
    def _parse_variants(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    def core_count(self) -> int:
        return len(self.cores) if self.cores else len(os.sched_getaffinity(0))

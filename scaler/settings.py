"""Settings of the scaler (prefix ``INFAAS_SCALER_``), checked when they are read.

Every number here is one of the paper's knobs (INFAAS.md, "Autoscaling"): the 1.05
headroom, hold-downs of about a variant's load time (the prototype: more than 10 low
ticks on CPU, 20 on GPU), 80 % thresholds and 30 s back-off for workers. Settings that
make no sense (min > max workers, thresholds outside (0, 1], an ILP time limit that does
not fit in a tick) are refused with a message that names the setting.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from queues.errors import ConfigError
from registry.pricing import PriceTable

PlannerName = Literal["ilp", "greedy"]
TrendScope = Literal["class", "app", "fleet"]


class LoadEstimateSettings(BaseSettings):
    """How the scaler measures and foresees load, and what it plans for it: headroom,
    smoothing, hold-downs against noise, trends and seasons (``scaler/load.py``,
    ``scaler/forecast.py``). The scaler's other settings extend these."""

    model_config = SettingsConfigDict(
        env_prefix="INFAAS_SCALER_", extra="ignore", frozen=True, allow_inf_nan=False
    )

    headroom: float = Field(
        default=1.05, ge=1.0, le=10.0, description="capacity kept per app, as a multiple of load"
    )
    light_share: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="a CPU variant whose every class together would keep one replica busy "
        "at most this share of the time is light: its replica takes (and is priced at) this "
        "share of its cores, so light replicas share cores (0: every replica owns its cores)",
    )
    load_penalty_per_s: float = Field(
        default=0.1,
        ge=0,
        le=1000,
        description="λ: a new replica costs its hourly price × (1 + λ × load time in s)",
    )
    load_quantum: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="round planned load up to steps of this relative size, so noise does "
        "not change the plan (0: exact)",
    )
    load_smoothing: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="weight of the newest rate when load falls (rises are taken at once)",
    )
    hold_load_factor: float = Field(
        default=1.0,
        ge=0,
        le=1000,
        description="a variant's hold-down is at least this many times its load time",
    )
    hold_start_factor: float = Field(
        default=0.0,
        ge=0,
        le=100,
        description="hold-downs are also at least this many times the time a worker of the "
        "variant's hardware takes to start (0: the paper's rule, load time only)",
    )
    cpu_worker_start_s: float = Field(
        default=20.0, ge=0, le=3600, description="expected time for a new CPU worker to serve"
    )
    gpu_worker_start_s: float = Field(
        default=60.0, ge=0, le=3600, description="expected time for a new GPU worker to serve"
    )
    forecast_s: float = Field(
        default=0.0,
        ge=0,
        le=3600,
        description="while load rises, plan for where its trend will be this far ahead "
        "(0: plan for the load as measured, the paper's rule)",
    )
    forecast_window_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="the trend is the rise over this window: the rise grows with the "
        "window while its noise does not (10 s missed the slow ramps of classes of tens "
        "of q/s)",
    )
    season_s: float = Field(
        default=0.0,
        ge=0,
        le=8 * 86_400,
        description="learn the fleet's load's recurring shape over seasons of this length "
        "(e.g. 86400, a day) by Holt-Winters and plan each class ahead of a rise it "
        "foresees within forecast_s (0: off)",
    )
    season_bin_s: float = Field(
        default=30.0,
        gt=0,
        le=86_400,
        description="the seasonal shape's resolution: its bins' width (a season holds at "
        "least two)",
    )
    trend_z: float = Field(
        default=2.0,
        ge=0,
        le=100,
        description="a rise over the forecast window is a trend when above this many times "
        "the square root of the load: the rise is the difference of two rates measured over "
        "5 s, whose Poisson noise is about 0.63 √load, so 2 is about three standard "
        "deviations (1.3 caught ramps sooner but chased noise at steady load)",
    )
    trend_scope: TrendScope = Field(
        default="class",
        description="where a rise is tested against its noise: each demand class alone "
        "(class), or the sum of its app's classes (app) or of all classes (fleet), whose "
        "relative rise then also lifts each of its classes; a sum's noise grows only as "
        "the root of its load, so a ramp split over small classes shows sooner",
    )


class ScalerSettings(LoadEstimateSettings):
    """Every scaler setting: the ticks and the planner, workers and replicas (the
    prefix and checks inherited)."""

    tick_interval_s: float = Field(default=1.0, gt=0, le=60, description="time between ticks")
    planner: PlannerName = Field(
        default="ilp", description="ilp (CP-SAT, warm-started and backed by greedy) or greedy"
    )
    ilp_time_limit_s: float = Field(
        default=0.5,
        gt=0,
        le=60,
        description="wall-clock limit of one ILP solve (about half a tick)",
    )
    ilp_deterministic_time: float | None = Field(
        default=None,
        gt=0,
        le=600,
        description="CP-SAT work limit (max_deterministic_time); a simulator that must replay "
        "a run exactly sets this and a generous ilp_time_limit_s",
    )
    replan_tolerance: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="keep the last plan without solving again while workers and variants "
        "are unchanged, each app's planned load is at least (1 - this) of what it was "
        "solved for, and the plan's replicas still carry every class's load (0: only an "
        "identical problem keeps it)",
    )
    replan_every_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="with replan_tolerance, solve afresh at least this often",
    )
    plan_routing: bool = Field(
        default=False,
        description="publish each tick's split of a demand class between variants, for "
        "the gateways to deal queries as planned (off: the paper's cheapest-running rule "
        "sends a whole class to one variant until it is Overloaded)",
    )
    cpu_hold_ticks: int = Field(default=10, ge=1, le=10_000, description="hold-down floor, CPU")
    gpu_hold_ticks: int = Field(default=20, ge=1, le=10_000, description="hold-down floor, GPU")
    down_confirm_ticks: int = Field(
        default=3, ge=1, le=1000, description="ticks a smaller replica target must persist"
    )
    drain_s: float = Field(
        default=5.0, gt=0, le=3600, description="queued queries are to be drained within this"
    )
    variant_backoff_s: float = Field(
        default=5.0, ge=0, le=3600, description="no scale-down of a variant this soon after it grew"
    )
    pending_timeout_s: float = Field(
        default=60.0, gt=0, le=3600, description="a requested change not seen by then has failed"
    )
    worker_backoff_s: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        description="no worker action of a hardware this soon after one",
    )
    drain_hold_s: float = Field(
        default=0.0,
        ge=0,
        le=86_400,
        description="no idle worker of a hardware is drained this soon after a worker of "
        "it was added: on a bursty load the drain packs into the room just added for a "
        "burst, and the next burst asks for a worker again (0: only the worker back-off)",
    )
    worker_idle_s: float = Field(
        default=30.0, ge=0, le=86_400, description="low use this long makes a worker removable"
    )
    worker_start_timeout_s: float = Field(
        default=300.0, gt=0, le=86_400, description="a requested worker not seen by then failed"
    )
    hot_threshold: float = Field(
        default=0.8, gt=0, le=1, description="a worker this busy (0–1) is hot"
    )
    idle_threshold: float = Field(
        default=0.2, ge=0, lt=1, description="a worker less busy than this (0–1) is idle"
    )
    reactive_worker_rules: bool = Field(
        default=True,
        description="also add a worker when every worker of a hardware is hot or most hold "
        "Overloaded/Interfered variants (the paper's rules); off: only when the plan needs "
        "room the running workers lack",
    )
    overloaded_fraction: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description="add a worker when more than this share of workers hold "
        "Overloaded/Interfered variants",
    )
    interfered_capacity: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="capacity left to an Interfered replica when no latency was measured",
    )
    queueing_tail: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="count queueing in a replica's capacity: batches whose two batch times "
        "fit the objective, and a busy share that keeps this share of queries from waiting "
        "past it (unset: the paper's rule, one batch time fits)",
    )
    overhead_ms: float = Field(
        default=0.5, ge=0, le=1000, description="pipeline time added to model latency"
    )
    min_cpu_workers: int = Field(default=1, ge=0, le=10_000)
    max_cpu_workers: int = Field(default=8, ge=0, le=10_000)
    min_gpu_workers: int = Field(default=0, ge=0, le=10_000)
    max_gpu_workers: int = Field(default=4, ge=0, le=10_000)
    spare_cpu_workers: int = Field(
        default=0,
        ge=0,
        le=10_000,
        description="started CPU workers kept empty beyond what the plan uses, so the "
        "first replicas of a rise load at once instead of waiting for a worker to join; "
        "the planner opens one before a new worker, at just below a new one's price",
    )
    spare_gpu_workers: int = Field(
        default=0, ge=0, le=10_000, description="started GPU workers kept empty, as for CPU"
    )
    max_new_workers_per_tick: int = Field(default=1, ge=1, le=100)
    burst_workers: bool = Field(
        default=False,
        description="ask at once for every new worker the plan needs (up to "
        "max_new_workers_per_tick), without the worker back-off; off: one at a time, "
        "the paper's rule",
    )
    cpu_worker_cores: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description="cores of a new CPU worker; unset: the CPU instance's vCPUs",
    )
    cpu_worker_memory_mb: float = Field(default=16_384, gt=0, le=16_777_216)
    gpu_memory_mb: float = Field(default=16_384, gt=0, le=16_777_216)
    gpu_max_replicas: int = Field(
        default=4, ge=1, le=1024, description="replicas one GPU may host, whatever their memory"
    )
    max_replicas_per_variant: int = Field(default=64, ge=1, le=100_000)

    @model_validator(mode="after")
    def _check_consistency(self) -> ScalerSettings:
        for hardware in ("cpu", "gpu"):
            low = getattr(self, f"min_{hardware}_workers")
            high = getattr(self, f"max_{hardware}_workers")
            if low > high:
                raise ValueError(
                    f"INFAAS_SCALER_MIN_{hardware.upper()}_WORKERS ({low}) exceeds "
                    f"INFAAS_SCALER_MAX_{hardware.upper()}_WORKERS ({high}); lower the minimum "
                    "or raise the maximum"
                )
            spare = getattr(self, f"spare_{hardware}_workers")
            if spare > high:
                raise ValueError(
                    f"INFAAS_SCALER_SPARE_{hardware.upper()}_WORKERS ({spare}) exceeds "
                    f"INFAAS_SCALER_MAX_{hardware.upper()}_WORKERS ({high}); keep fewer spare "
                    "workers or raise the maximum"
                )
        if self.idle_threshold >= self.hot_threshold:
            raise ValueError(
                f"INFAAS_SCALER_IDLE_THRESHOLD ({self.idle_threshold}) must be below "
                f"INFAAS_SCALER_HOT_THRESHOLD ({self.hot_threshold})"
            )
        if self.season_s and self.season_s < 2 * self.season_bin_s:
            raise ValueError(
                f"INFAAS_SCALER_SEASON_S ({self.season_s}) holds fewer than two bins of "
                f"INFAAS_SCALER_SEASON_BIN_S ({self.season_bin_s}); lengthen the season or "
                "narrow the bins"
            )
        if self.ilp_time_limit_s >= self.tick_interval_s:
            raise ValueError(
                f"INFAAS_SCALER_ILP_TIME_LIMIT_S ({self.ilp_time_limit_s}) must be below the "
                f"tick interval ({self.tick_interval_s} s); about half of it is right"
            )
        return self

    @property
    def tick_ms(self) -> float:
        return self.tick_interval_s * 1000.0

    def min_workers(self, hardware: str) -> int:
        return self.min_cpu_workers if hardware == "cpu" else self.min_gpu_workers

    def max_workers(self, hardware: str) -> int:
        return self.max_cpu_workers if hardware == "cpu" else self.max_gpu_workers

    def spare_workers(self, hardware: str) -> int:
        return self.spare_cpu_workers if hardware == "cpu" else self.spare_gpu_workers

    def hold_ms(self, hardware: str, load_ms: float) -> float:
        """How long load must stay low before a variant of this hardware may shrink."""
        ticks = self.cpu_hold_ticks if hardware == "cpu" else self.gpu_hold_ticks
        start_s = self.cpu_worker_start_s if hardware == "cpu" else self.gpu_worker_start_s
        return max(
            self.hold_load_factor * load_ms,
            ticks * self.tick_ms,
            self.hold_start_factor * start_s * 1000.0,
        )

    def new_cpu_worker_cores(self, prices: PriceTable) -> int:
        return self.cpu_worker_cores or prices.instance_for("cpu").vcpus


def check_price_table(prices: PriceTable, settings: ScalerSettings) -> None:
    """Refuse a price table the scaler cannot cost plans with (raises :class:`ConfigError`).

    :class:`PriceTable` already refuses negative prices and unknown default instances; the
    scaler also needs finite prices, the CPU and GPU instances to be of their hardware, and
    new CPU workers that fit their instance.
    """
    for inst in prices.instances.values():
        if not math.isfinite(inst.usd_per_hour) or inst.usd_per_hour < 0:
            raise ConfigError(
                f"instance {inst.name!r} costs {inst.usd_per_hour} $/h; give a finite price >= 0"
            )
    for role, name in (("cpu", prices.cpu_instance), ("gpu", prices.gpu_instance)):
        inst = prices.instances[name]
        if inst.hardware != role:
            raise ConfigError(
                f"the {role} instance {name!r} is {inst.hardware} hardware; name a {role} "
                f"instance (INFAAS_{role.upper()}_INSTANCE)"
            )
    cpu = prices.instance_for("cpu")
    if settings.cpu_worker_cores is not None and settings.cpu_worker_cores > cpu.vcpus:
        raise ConfigError(
            f"INFAAS_SCALER_CPU_WORKER_CORES ({settings.cpu_worker_cores}) exceeds the "
            f"{cpu.vcpus} vCPUs of the CPU instance {cpu.name!r}"
        )

"""The per-variant state machine of a worker (pure).

Active → Overloaded when arrivals reach what the replicas can serve, the replicas are
busy nearly all the time, or the backlog would take too long to drain; Active →
Interfered when inference runs well above its profile while load is below saturation
(something else contends for the hardware). Entering takes ``enter_ticks`` consecutive
monitoring ticks, clearing takes ``clear_ticks`` with the looser clear thresholds, so a
variant near a threshold does not flap. Starting thresholds are the paper's (INFAAS.md).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from registry.livestate import ACTIVE, INTERFERED, OVERLOADED
from registry.types import Profile


class StateSettings(BaseSettings):
    """Thresholds of the state machine (prefix ``INFAAS_STATE_``)."""

    model_config = SettingsConfigDict(env_prefix="INFAAS_STATE_", extra="ignore")

    overload_qps_factor: float = Field(
        default=0.9, gt=0, le=2, description="arrivals ≥ factor × replicas × capacity"
    )
    overload_busy: float = Field(
        default=0.9, gt=0, le=1, description="replicas busy running batches this fraction"
    )
    backlog_drain_s: float = Field(
        default=0.8, gt=0, le=60, description="backlog the replicas must drain within (s)"
    )
    interfere_latency_factor: float = Field(
        default=2.5, gt=1, le=100, description="inference latency ≥ factor × profile"
    )
    clear_latency_factor: float = Field(default=1.5, gt=1, le=100)
    clear_load_factor: float = Field(
        default=0.75,
        gt=0,
        le=1,
        description="clear Overloaded below this share of the overload thresholds",
    )
    enter_ticks: int = Field(default=1, ge=1, le=60)
    clear_ticks: int = Field(default=3, ge=1, le=600)
    queueing_load_share: float = Field(
        default=0.5,
        gt=0,
        le=2,
        description="Overloaded when queries wait (end-to-end p50 ≥ the latency factor × "
        "the profile) at or above this share of capacity (the paper's first rule)",
    )
    pipeline_ms: float = Field(
        default=1.0, ge=0, le=1000, description="end-to-end time a query takes besides inference"
    )
    min_batches: int = Field(
        default=5, ge=1, le=10_000, description="batches in a window to judge latency"
    )
    full_batch_share: float = Field(
        default=0.9,
        gt=0,
        le=1,
        description="batches this share of the batch limit count as full: a replica "
        "busy running full batches is saturated",
    )
    per_query_overhead_ms: float = Field(
        default=0.15,
        ge=0,
        le=100,
        description="worker time per query beyond inference (decode, reply, ack)",
    )

    @model_validator(mode="after")
    def _check_order(self) -> StateSettings:
        if self.clear_latency_factor >= self.interfere_latency_factor:
            raise ValueError(
                "INFAAS_STATE_CLEAR_LATENCY_FACTOR must be below "
                "INFAAS_STATE_INTERFERE_LATENCY_FACTOR, or Interfered could never clear"
            )
        return self


@dataclass(frozen=True, slots=True)
class Observation:
    """One monitoring window of one variant on one worker."""

    now_ms: float
    window_s: float
    replicas: int
    arrived: int
    batches: int
    mean_batch: float
    model_p50_ms: float
    busy_ms: float  # time the replicas spent running batches in the window
    backlog: int  # queries waiting: held by the replicas plus in the variant's queue
    p50_ms: float = 0.0  # end to end: from the gateway's publish to the reply


@dataclass(frozen=True, slots=True)
class Health:
    state: str = ACTIVE
    since_ms: float = 0.0
    candidate: str = ACTIVE
    candidate_ticks: int = 0
    reason: str = ""


def capacity_qps(profile: Profile, overhead_ms: float) -> float:
    """What one replica serves at best: its best batch, with the per-query overhead."""
    batch = max(profile.batch_limit, 1)
    return 1000.0 * batch / (profile.predict_latency_ms(batch) + batch * overhead_ms)


def _loads(obs: Observation, profile: Profile, s: StateSettings) -> tuple[float, float, float]:
    """(arrivals, busy share, backlog drain time) relative to their overload thresholds."""
    replicas = max(obs.replicas, 1)
    cap = capacity_qps(profile, s.per_query_overhead_ms) * replicas
    qps = obs.arrived / obs.window_s if obs.window_s > 0 else 0.0
    busy = obs.busy_ms / (obs.window_s * 1000.0 * replicas) if obs.window_s > 0 else 0.0
    # A batching replica is busy all the time under any steady load: it takes whatever
    # waits as soon as it finishes. Busy means saturated only when its batches are full;
    # with half-full batches it has room to take twice as much per batch.
    limit = max(profile.batch_limit, 1)
    if obs.batches > 0 and limit > 1:
        busy *= min(1.0, max(obs.mean_batch, 1.0) / (s.full_batch_share * limit))
    drain_s = obs.backlog / cap if cap > 0 else 0.0
    return (
        qps / (s.overload_qps_factor * cap),
        busy / s.overload_busy,
        drain_s / s.backlog_drain_s,
    )


def _latency_ratio(obs: Observation, profile: Profile, s: StateSettings) -> float | None:
    if obs.batches < s.min_batches or obs.model_p50_ms <= 0:
        return None
    expected = profile.predict_latency_ms(max(round(obs.mean_batch), 1))
    return obs.model_p50_ms / expected if expected > 0 else None


def _queueing(obs: Observation, profile: Profile, s: StateSettings) -> tuple[float, float]:
    """(share of capacity in use, end-to-end p50 ÷ what the profile promises)."""
    cap = capacity_qps(profile, s.per_query_overhead_ms) * max(obs.replicas, 1)
    qps = obs.arrived / obs.window_s if obs.window_s > 0 else 0.0
    if obs.batches < s.min_batches or obs.p50_ms <= 0:
        return qps / cap if cap > 0 else 0.0, 0.0
    expected = profile.predict_latency_ms(max(round(obs.mean_batch), 1)) + s.pipeline_ms
    return (qps / cap if cap > 0 else 0.0), obs.p50_ms / expected


def judge(obs: Observation, profile: Profile, s: StateSettings, current: str) -> tuple[str, str]:
    """The state this window points to, and why (thresholds depend on the current state:
    entering is stricter than staying)."""
    staying = current == OVERLOADED
    qps_load, busy_load, backlog_load = _loads(obs, profile, s)
    worst = max(qps_load, busy_load, backlog_load)
    if worst >= (s.clear_load_factor if staying else 1.0):
        names = ("arrivals", "busy time", "backlog")
        which = names[(qps_load, busy_load, backlog_load).index(worst)]
        return OVERLOADED, f"{which} at {worst:.2f}× the overload threshold"
    share, waiting = _queueing(obs, profile, s)
    wait_factor = s.clear_latency_factor if staying else s.interfere_latency_factor
    if share >= s.queueing_load_share * (s.clear_load_factor if staying else 1.0) and (
        waiting >= wait_factor
    ):
        return OVERLOADED, f"queries wait: p50 {waiting:.1f}× the profile at {share:.0%} load"
    ratio = _latency_ratio(obs, profile, s)
    factor = s.clear_latency_factor if current == INTERFERED else s.interfere_latency_factor
    if ratio is not None and ratio >= factor:
        return INTERFERED, f"inference {ratio:.1f}× its profiled latency below saturation"
    if ratio is None and current == INTERFERED:
        return INTERFERED, "too few batches to clear"
    return ACTIVE, ""


def next_health(prev: Health, obs: Observation, profile: Profile, s: StateSettings) -> Health:
    target, reason = judge(obs, profile, s, prev.state)
    if target == prev.state:
        return replace(prev, candidate=target, candidate_ticks=0, reason=reason or prev.reason)
    ticks = prev.candidate_ticks + 1 if prev.candidate == target else 1
    needed = s.clear_ticks if target == ACTIVE else s.enter_ticks
    if ticks >= needed:
        return Health(state=target, since_ms=obs.now_ms, candidate=target, reason=reason)
    return replace(prev, candidate=target, candidate_ticks=ticks)

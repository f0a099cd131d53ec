"""The per-variant state machine on hand-built observations."""

from __future__ import annotations

from dataclasses import replace

import pytest
from pydantic import ValidationError

from registry.livestate import ACTIVE, INTERFERED, OVERLOADED
from tests.factories import profile
from workers.states import Health, Observation, StateSettings, capacity_qps, next_health

# 10 ms at batch 1 and a best batch of 1: one replica serves 100 queries/s
PROFILE = replace(profile(0.99, 10.0, slope_ms=2.0), best_batch=1)
S = StateSettings(per_query_overhead_ms=0.0)


def obs(
    *,
    qps: float = 0.0,
    busy: float = 0.0,
    backlog: int = 0,
    latency_factor: float = 1.0,
    batches: int = 20,
    replicas: int = 1,
    t: float = 0.0,
) -> Observation:
    return Observation(
        now_ms=t,
        window_s=1.0,
        replicas=replicas,
        arrived=round(qps),
        batches=batches,
        mean_batch=1.0,
        model_p50_ms=PROFILE.predict_latency_ms(1) * latency_factor,
        busy_ms=busy * 1000 * replicas,
        backlog=backlog,
    )


def run(observations: list[Observation], start: Health | None = None) -> list[str]:
    health = start or Health()
    states = []
    for o in observations:
        health = next_health(health, o, PROFILE, S)
        states.append(health.state)
    return states


def test_capacity_is_the_best_batch_throughput() -> None:
    assert capacity_qps(PROFILE, 0.0) == pytest.approx(100.0)
    assert capacity_qps(PROFILE, 10.0) == pytest.approx(50.0)


def test_light_load_stays_active() -> None:
    assert run([obs(qps=20, busy=0.2)] * 5) == [ACTIVE] * 5


@pytest.mark.parametrize(
    ("pressure", "why"),
    [
        ({"qps": 95}, "arrivals"),
        ({"busy": 0.95}, "busy time"),
        ({"backlog": 90}, "backlog"),
    ],
)
def test_overloaded_from_arrivals_busy_time_or_backlog(
    pressure: dict[str, float], why: str
) -> None:
    health = next_health(Health(), obs(**pressure), PROFILE, S)  # type: ignore[arg-type]
    assert health.state == OVERLOADED
    assert health.reason.startswith(why)


def test_replicas_raise_capacity() -> None:
    assert run([obs(qps=150, busy=0.6, replicas=2)]) == [ACTIVE]
    assert run([obs(qps=190, busy=0.6, replicas=2)]) == [OVERLOADED]


def test_overloaded_clears_only_after_the_hold_down() -> None:
    states = run([obs(qps=100)] + [obs(qps=10)] * 4)
    assert states == [OVERLOADED, OVERLOADED, OVERLOADED, ACTIVE, ACTIVE]


def test_no_flapping_under_noise_around_the_threshold() -> None:
    noisy = [obs(qps=q) for q in (92, 86, 93, 88, 91, 85, 94, 87)]
    states = run(noisy)
    assert states == [OVERLOADED] * len(noisy)  # between the clear and enter thresholds
    below = run([obs(qps=q) for q in (88, 86, 89, 84, 87)])
    assert below == [ACTIVE] * 5


def test_a_single_quiet_tick_does_not_clear() -> None:
    states = run([obs(qps=100), obs(qps=10), obs(qps=100), obs(qps=10), obs(qps=10)])
    assert states == [OVERLOADED] * 5


def test_interfered_when_slow_below_saturation() -> None:
    assert run([obs(qps=20, busy=0.5, latency_factor=3.0)]) == [INTERFERED]


def test_slow_and_saturated_is_overloaded_not_interfered() -> None:
    assert run([obs(qps=20, busy=0.99, latency_factor=3.0)]) == [OVERLOADED]


def test_latency_needs_enough_batches_to_judge() -> None:
    assert run([obs(qps=2, latency_factor=5.0, batches=2)]) == [ACTIVE]


def test_interfered_clears_when_latency_returns() -> None:
    start = Health(state=INTERFERED)
    between = run([obs(qps=20, latency_factor=2.0)] * 4, start)
    assert between == [INTERFERED] * 4  # 2.0× is below entry (2.5×) but above clear (1.5×)
    cleared = run([obs(qps=20, latency_factor=1.2)] * 3, start)
    assert cleared == [INTERFERED, INTERFERED, ACTIVE]


def test_state_change_records_when_and_why() -> None:
    health = next_health(Health(), obs(qps=100, t=1234.0), PROFILE, S)
    assert health.since_ms == 1234.0
    assert "overload threshold" in health.reason


def test_more_enter_ticks_delay_entry() -> None:
    slow = StateSettings(per_query_overhead_ms=0.0, enter_ticks=2)
    health = next_health(Health(), obs(qps=100), PROFILE, slow)
    assert health.state == ACTIVE
    assert next_health(health, obs(qps=100), PROFILE, slow).state == OVERLOADED


@pytest.mark.parametrize(
    "bad",
    [
        {"interfere_latency_factor": 1.4, "clear_latency_factor": 1.5},
        {"overload_busy": 1.5},
        {"clear_ticks": 0},
        {"backlog_drain_s": -1},
    ],
)
def test_settings_that_make_no_sense_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        StateSettings(**bad)  # type: ignore[arg-type]


def test_queries_waiting_at_half_load_is_overloaded() -> None:
    # the paper's first rule: end-to-end latency far above the profile under real load
    waiting = replace(obs(qps=60, busy=0.6), p50_ms=150.0)
    health = next_health(Health(), waiting, PROFILE, S)
    assert health.state == OVERLOADED
    assert health.reason.startswith("queries wait")


def test_slow_answers_at_light_load_are_not_overload() -> None:
    assert run([replace(obs(qps=20, busy=0.2), p50_ms=150.0)]) == [ACTIVE]


def test_a_batching_replica_busy_with_small_batches_is_not_overloaded() -> None:
    batching = replace(PROFILE, best_batch=32, max_batch=32)
    cap = capacity_qps(batching, 0.0)

    def busy_at(mean_batch: float) -> str:
        o = replace(obs(qps=0.3 * cap, busy=1.0), mean_batch=mean_batch)
        return next_health(Health(), o, batching, S).state

    assert busy_at(8.0) == ACTIVE  # always busy, but a quarter-full batch has room
    assert busy_at(30.0) == OVERLOADED  # busy running full batches: saturated

"""The pure parts of bench/loadgen.py's open loop: the Poisson schedule and the capacity
ramp's stop rule."""

from __future__ import annotations

import numpy as np
import pytest

from bench.loadgen import poisson_schedule, ramp_capacity, step_passes


def test_schedule_is_seeded_ascending_and_within_the_duration() -> None:
    a = poisson_schedule(500.0, 4.0, np.random.default_rng(7))
    b = poisson_schedule(500.0, 4.0, np.random.default_rng(7))
    c = poisson_schedule(500.0, 4.0, np.random.default_rng(8))
    assert np.array_equal(a, b)
    assert not np.array_equal(a[: min(len(a), len(c))], c[: min(len(a), len(c))])
    assert np.all(np.diff(a) > 0)
    assert a[0] >= 0
    assert a[-1] < 4.0


@pytest.mark.parametrize("rate", [50.0, 1000.0, 4000.0])
def test_schedule_mean_rate_and_exponential_gaps(rate: float) -> None:
    duration = 20.0
    times = poisson_schedule(rate, duration, np.random.default_rng(1))
    expected = rate * duration
    # a Poisson count: within 5 standard deviations of its mean
    assert abs(len(times) - expected) < 5 * np.sqrt(expected)
    gaps = np.diff(times)
    assert gaps.mean() == pytest.approx(1 / rate, rel=0.1)
    assert gaps.std() == pytest.approx(1 / rate, rel=0.1)  # exponential: std = mean


def test_schedule_of_nothing() -> None:
    assert len(poisson_schedule(0.0, 5.0, np.random.default_rng(0))) == 0
    assert len(poisson_schedule(100.0, 0.0, np.random.default_rng(0))) == 0


def test_a_step_passes_with_no_errors_and_p99_within_the_limit() -> None:
    assert step_passes(20.0, 0, 20.0)
    assert not step_passes(20.1, 0, 20.0)
    assert not step_passes(3.0, 1, 20.0)
    assert not step_passes(float("nan"), 0, 20.0)


def test_capacity_is_the_last_rate_passed_before_the_first_failure() -> None:
    steps = [(250.0, 2.0, 0), (500.0, 3.0, 0), (1000.0, 25.0, 0), (1500.0, 5.0, 0)]
    assert ramp_capacity(steps, 20.0) == (500.0, 1000.0)


def test_an_error_stops_the_ramp() -> None:
    assert ramp_capacity([(250.0, 2.0, 0), (500.0, 3.0, 2)], 20.0) == (250.0, 500.0)


def test_capacity_when_every_rate_passes_or_the_first_fails() -> None:
    assert ramp_capacity([(250.0, 2.0, 0), (500.0, 3.0, 0)], 20.0) == (500.0, None)
    assert ramp_capacity([(250.0, 30.0, 0)], 20.0) == (0.0, 250.0)
    assert ramp_capacity([], 20.0) == (0.0, None)

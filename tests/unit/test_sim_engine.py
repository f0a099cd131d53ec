"""The simulator against closed forms: an M/D/1 queue's mean wait."""

from __future__ import annotations

import numpy as np
import pytest

from bench.sim.engine import SimSettings, Simulation
from bench.sim.profiles import World
from registry.pricing import PriceTable
from registry.selector import Requirements
from tests import factories as f
from workers.states import StateSettings

SERVICE_MS = 10.0


def _world() -> World:
    # one variant: 10 ms a query whatever the batch, batch limit 1, no jitter
    variant = f.variant("m.onnx-fp32.cpu-t1", 0.9, SERVICE_MS, slope_ms=0.0, max_batch=1)
    return World(
        catalog=f.catalog(variant),
        jitter_sigma={variant.id: 0.0},
        interference_slowdown=1.0,
        mix=(),
        sources={},
    )


@pytest.mark.parametrize("rho", [0.5, 0.9])
def test_mdl1_mean_wait_matches_the_closed_form(rho: float) -> None:
    world = _world()
    rate = rho / (SERVICE_MS / 1000.0)
    rng = np.random.default_rng(7)
    count = 300_000 if rho > 0.8 else 60_000
    times = np.cumsum(rng.exponential(1.0 / rate, count))
    sim = Simulation(
        world,
        times,
        np.zeros(count, dtype=np.int64),
        [("digits", Requirements(app="digits", latency_ms=60_000.0))],
        prices=PriceTable.default(),
        settings=SimSettings(batch_wait_ms=0.0, timeout_factor=1000.0, overhead_ms=0.0),
        states=StateSettings(),
        seed=1,
    )
    sim.start_worker("cpu", {"m.onnx-fp32.cpu-t1": 1})
    sim.run(float(times[-1]) + 5.0, None)
    assert sim.outcome.failed == 0
    assert sim.outcome.served == count
    service_s = SERVICE_MS / 1000.0
    expected_wait_s = rho * service_s / (2 * (1 - rho))
    measured_wait_s = sim.outcome.wait_sum_s / sim.outcome.started
    assert measured_wait_s == pytest.approx(expected_wait_s, rel=0.05)

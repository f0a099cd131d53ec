"""A simulated run of ``ours`` replays exactly for its seed: the ILP stops on its
deterministic work limit, not on the wall clock, and nothing else draws on chance
outside the seeded generator."""

from __future__ import annotations

import numpy as np

from bench.sim.__main__ import run_policy
from bench.sim.engine import SimSettings
from bench.sim.profiles import PROFILES, load_mix, load_world
from bench.sim.workload import Arrivals

# what a run measures about itself rather than about the simulated fleet
TIMINGS = ("wall_s", "plan_ms_p99")


def _run(seed: int) -> dict[str, object]:
    world = load_world(PROFILES, load_mix(None))
    # a ramp from 10 to 200 q/s over 150 s, after a warm-up of its first 120 s (to 162
    # q/s): the scaler holds, then grows past what the warm-up needed
    arrivals = Arrivals("ramp", np.linspace(10, 200, 150).astype(np.int64))
    result, sim = run_policy("ours", world, arrivals, seed, SimSettings())
    assert sim.actions > 0  # the scaler did act in this run
    assert result["served"] > 0
    return {k: v for k, v in result.items() if k not in TIMINGS}


def test_ours_replays_a_seed_exactly() -> None:
    first = _run(seed=3)
    assert _run(seed=3) == first
    assert _run(seed=4) != first  # the seed does reach the run

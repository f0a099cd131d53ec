"""The scaler plans ahead of a rise its learnt season foresees (``season_s``), and not
before it has seen a whole season; off (0), the plan is the one without it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tests import factories as f
from tests.unit.test_scaler_policy import Cluster, Run, settings

SEASON = {"season_s": 40.0, "season_bin_s": 4.0, "forecast_s": 5.0}


def _square(t: int) -> float:
    """100 q/s for 20 s, then 300 q/s for 20 s, every 40 s."""
    return 100.0 if t % 40 < 20 else 300.0


def _planned(ticks: int, **overrides: object) -> float:
    run = Run(Cluster(f.worker_report("w1", cores=4)), settings(max_cpu_workers=8, **overrides))
    return run.steps([_square(t) for t in range(ticks)])[-1].demand[0].planned_qps


def test_a_learnt_season_plans_ahead_of_its_rise() -> None:
    # at t = 96 s the load is 100 q/s, and it rises to 300 q/s at t = 100 s
    without = _planned(97, forecast_s=5.0)
    assert without == pytest.approx(100 * 1.05, rel=0.05)
    ahead = _planned(97, **SEASON)
    assert ahead == pytest.approx(2 * without, rel=0.05)  # foreseen, at most double


def test_no_rise_is_foreseen_before_a_whole_season_or_where_the_load_falls() -> None:
    # the first season (t < 40 s) only collects: at t = 16 s it foresees nothing yet
    assert _planned(17, **SEASON) == pytest.approx(_planned(17, forecast_s=5.0))
    # at t = 156 s the load is 300 q/s and falls at 160 s: nothing to add
    assert _planned(157, **SEASON) == pytest.approx(_planned(157, forecast_s=5.0))


def test_a_season_of_under_two_bins_is_refused() -> None:
    with pytest.raises(ValidationError, match="SEASON_S"):
        settings(season_s=30.0, season_bin_s=30.0)

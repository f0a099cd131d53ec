"""The seasonal forecaster (scaler/forecast.py): it learns a recurring shape from the
load's own past and foresees a rise a season later; bad input is refused."""

from __future__ import annotations

import math

import pytest

from queues.errors import InvalidRequest
from scaler.forecast import Seasonal, SeasonalParams, forecast, observe, rise_ahead

SEASON_S = 600.0
PARAMS = SeasonalParams(season_s=SEASON_S, bin_s=30.0)


def _shape(t_s: float) -> float:
    """A load that swings between 50 and 650 q/s once a season."""
    return 350.0 - 300.0 * math.cos(2 * math.pi * t_s / SEASON_S)


def _bin_mean(at_s: float) -> float:
    """The shape's mean over the bin holding ``at_s``: what the forecaster learns."""
    start = math.floor(at_s / PARAMS.bin_s) * PARAMS.bin_s
    return sum(_shape(start + k) for k in range(int(PARAMS.bin_s))) / PARAMS.bin_s


def _fed(seconds: float, shape: object = _shape) -> Seasonal:
    state = Seasonal()
    for t in range(int(seconds)):
        state = observe(state, float(t), shape(float(t)), PARAMS)  # type: ignore[operator]
    return state


def test_nothing_is_forecast_before_a_whole_season() -> None:
    state = _fed(SEASON_S - 1)
    assert not state.ready
    assert forecast(state, SEASON_S, PARAMS) is None
    assert rise_ahead(state, SEASON_S, 60.0, PARAMS) == 1.0


def test_a_season_later_the_shape_is_foreseen() -> None:
    state = _fed(2.5 * SEASON_S)
    assert state.ready
    for ahead in (0.0, 60.0, 150.0, 300.0):
        at = 2.5 * SEASON_S + ahead
        assert forecast(state, at, PARAMS) == pytest.approx(_bin_mean(at), abs=25.0)


def test_a_coming_rise_is_foreseen_and_a_fall_is_not_a_rise() -> None:
    state = _fed(2 * SEASON_S + 120)  # just past the trough's end: the climb is ahead
    rising = rise_ahead(state, 2 * SEASON_S + 120, 60.0, PARAMS)
    assert rising > 1.3
    state = _fed(2 * SEASON_S + 360)  # past the peak: the load falls from here
    assert rise_ahead(state, 2 * SEASON_S + 360, 60.0, PARAMS) == 1.0


def test_a_flat_load_foresees_no_rise() -> None:
    state = _fed(3 * SEASON_S, lambda _t: 47.0)
    assert forecast(state, 3 * SEASON_S + 30, PARAMS) == pytest.approx(47.0)
    assert rise_ahead(state, 3 * SEASON_S, 60.0, PARAMS) == pytest.approx(1.0)


def test_bins_without_samples_are_filled_by_the_forecast() -> None:
    state = _fed(2 * SEASON_S)
    skipped = observe(state, 2 * SEASON_S + 200, _shape(2 * SEASON_S + 200), PARAMS)
    after = observe(skipped, 2 * SEASON_S + 240, _shape(2 * SEASON_S + 240), PARAMS)
    assert after.last_bin == math.floor((2 * SEASON_S + 200) / PARAMS.bin_s)
    assert forecast(after, 2 * SEASON_S + 300, PARAMS) == pytest.approx(
        _bin_mean(2 * SEASON_S + 300), abs=25.0
    )


def test_bad_samples_and_settings_are_refused() -> None:
    state = _fed(100)
    with pytest.raises(InvalidRequest, match="time order"):
        observe(state, 10.0, 5.0, PARAMS)
    with pytest.raises(InvalidRequest, match="finite rate"):
        observe(state, 200.0, float("nan"), PARAMS)
    with pytest.raises(InvalidRequest, match="two bins"):
        SeasonalParams(season_s=40.0, bin_s=30.0)
    with pytest.raises(InvalidRequest, match="alpha"):
        SeasonalParams(season_s=600.0, alpha=1.5)
    with pytest.raises(InvalidRequest, match="width"):
        SeasonalParams(season_s=600.0, bin_s=0.0)

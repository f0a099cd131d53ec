"""A load's recurring shape, learnt online from its own past: additive Holt-Winters on a
binned series (level, trend and one seasonal offset per phase of the season).

Pure and cheap: :func:`observe` folds one rate sample into an immutable
:class:`Seasonal` (constant time; the season's offsets are a tuple of a few dozen
floats), :func:`forecast` says what the rate will be some seconds ahead, or ``None`` until
a whole season has been seen. The scaler feeds it the fleet's summed load each tick and
provisions ahead of a rise it predicts (``INFAAS_SCALER_SEASON_S``; off by default).

A bin's mean rate ``y`` updates, with ``p`` its phase in the season::

    level'  = α (y − s[p]) + (1 − α)(level + trend)
    trend'  = β (level' − level) + (1 − β) trend
    s[p]'   = γ (y − level') + (1 − γ) s[p]

and the forecast ``h`` bins ahead is ``level + h × trend + s[(p + h) mod m]``. The first
season only collects bins: the level starts at their mean and each offset at its bin's
distance from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from queues.errors import InvalidRequest


@dataclass(frozen=True)
class SeasonalParams:
    """How the shape is learnt: the season's length and its bins, and the smoothing
    weights (0–1) of level, trend and seasonal offsets."""

    season_s: float
    bin_s: float = 30.0
    alpha: float = 0.3
    beta: float = 0.05
    gamma: float = 0.3

    def __post_init__(self) -> None:
        if not (math.isfinite(self.bin_s) and self.bin_s > 0):
            raise InvalidRequest(f"forecast bin {self.bin_s} s: give a width > 0")
        if not (math.isfinite(self.season_s) and self.season_s >= 2 * self.bin_s):
            raise InvalidRequest(
                f"season {self.season_s} s is under two bins of {self.bin_s} s; give a "
                "longer season or narrower bins"
            )
        for name in ("alpha", "beta", "gamma"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise InvalidRequest(f"forecast weight {name}={value}: give one in [0, 1]")

    @property
    def bins(self) -> int:
        return round(self.season_s / self.bin_s)


@dataclass(frozen=True)
class Seasonal:
    """The learnt shape so far; start with ``Seasonal()``."""

    open_bin: int | None = None  # index of the bin being filled (seconds // bin_s)
    open_sum: float = 0.0
    open_count: int = 0
    first_season: tuple[float, ...] = ()  # closed bins' means, until one season is seen
    level: float | None = None
    trend: float = 0.0
    offsets: tuple[float, ...] = ()  # one per phase, once learnt
    last_bin: int | None = None  # the last closed bin

    @property
    def ready(self) -> bool:
        return self.level is not None


def observe(state: Seasonal, now_s: float, qps: float, p: SeasonalParams) -> Seasonal:
    """Fold one rate sample taken at ``now_s`` into the shape (samples in time order)."""
    if not (math.isfinite(qps) and qps >= 0):
        raise InvalidRequest(f"load sample {qps} q/s: give a finite rate >= 0")
    index = math.floor(now_s / p.bin_s)
    if state.open_bin is None:
        return replace(state, open_bin=index, open_sum=qps, open_count=1)
    if index < state.open_bin:
        raise InvalidRequest(
            f"load sample at {now_s} s is older than the bin being filled; give samples "
            "in time order"
        )
    if index == state.open_bin:
        return replace(state, open_sum=state.open_sum + qps, open_count=state.open_count + 1)
    closed = _close(state, state.open_bin, state.open_sum / state.open_count, p)
    return replace(closed, open_bin=index, open_sum=qps, open_count=1)


def _close(state: Seasonal, index: int, mean: float, p: SeasonalParams) -> Seasonal:
    m = p.bins
    if state.level is None:
        if state.last_bin is not None and index != state.last_bin + 1:
            # a gap in the first season: start it again rather than misplace phases
            return replace(state, first_season=(mean,), last_bin=index)
        season = (*state.first_season, mean)
        if len(season) < m:
            return replace(state, first_season=season, last_bin=index)
        level = sum(season) / m
        # offsets by phase: bin ``index - m + 1 + k`` has phase (index - m + 1 + k) % m
        offsets = [0.0] * m
        for k, y in enumerate(season):
            offsets[(index - m + 1 + k) % m] = y - level
        return replace(state, first_season=(), level=level, trend=0.0,
                       offsets=tuple(offsets), last_bin=index)  # fmt: skip
    level, trend, offsets = state.level, state.trend, list(state.offsets)
    assert state.last_bin is not None
    for missing in range(state.last_bin + 1, index):  # bins with no sample: forecast them
        y = level + trend + offsets[missing % m]
        level, trend, offsets = _update(level, trend, offsets, missing % m, y, p)
    level, trend, offsets = _update(level, trend, offsets, index % m, mean, p)
    return replace(state, level=level, trend=trend, offsets=tuple(offsets), last_bin=index)


def _update(
    level: float, trend: float, offsets: list[float], phase: int, y: float, p: SeasonalParams
) -> tuple[float, float, list[float]]:
    new_level = p.alpha * (y - offsets[phase]) + (1 - p.alpha) * (level + trend)
    new_trend = p.beta * (new_level - level) + (1 - p.beta) * trend
    offsets[phase] = p.gamma * (y - new_level) + (1 - p.gamma) * offsets[phase]
    return new_level, new_trend, offsets


def forecast(state: Seasonal, at_s: float, p: SeasonalParams) -> float | None:
    """The rate expected at ``at_s`` (at or after the last closed bin), never below 0;
    ``None`` until a whole season has been seen."""
    if state.level is None or state.last_bin is None:
        return None
    target = math.floor(at_s / p.bin_s)
    h = max(target - state.last_bin, 0)
    value = state.level + h * state.trend + state.offsets[target % p.bins]
    return max(value, 0.0)


def rise_ahead(state: Seasonal, now_s: float, ahead_s: float, p: SeasonalParams) -> float:
    """How much the load is expected to grow between now and ``ahead_s`` later, as a
    ratio of the forecast at the two times (1: no rise foreseen, or nothing learnt)."""
    here = forecast(state, now_s, p)
    later = max(
        (forecast(state, now_s + step, p) or 0.0 for step in _steps(ahead_s, p.bin_s)),
        default=0.0,
    )
    if here is None or later <= here:
        return 1.0
    return later / max(here, 1e-9)


def _steps(ahead_s: float, bin_s: float) -> list[float]:
    """Times to look at between now and ``ahead_s``: each bin the span touches."""
    count = max(math.ceil(ahead_s / bin_s), 1)
    return [min(ahead_s, bin_s * k) for k in range(1, count + 1)]

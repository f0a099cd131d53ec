"""The simulator builds the system's settings from its own values: no ``INFAAS_*``
variable in the shell changes a run."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bench.sim.policies import scaler_settings
from bench.sim.runs import with_overrides
from bench.sim.settings import SimSettings, isolated
from scaler.settings import ScalerSettings
from workers.states import StateSettings


def test_the_environment_changes_no_setting_of_a_run(monkeypatch: pytest.MonkeyPatch) -> None:
    clean = [scaler_settings(p, SimSettings()) for p in ("ours", "infaas")]
    clean_states = isolated(StateSettings)
    monkeypatch.setenv("INFAAS_SCALER_HEADROOM", "3")
    monkeypatch.setenv("INFAAS_SCALER_PLANNER", "greedy")
    monkeypatch.setenv("INFAAS_SCALER_CPU_HOLD_TICKS", "99")
    monkeypatch.setenv("INFAAS_STATE_OVERLOAD_BUSY", "0.5")
    assert ScalerSettings().headroom == 3  # what a deployment reads
    assert [scaler_settings(p, SimSettings()) for p in ("ours", "infaas")] == clean
    assert isolated(StateSettings) == clean_states
    assert (
        isolated(StateSettings).overload_busy == StateSettings.model_fields["overload_busy"].default
    )
    assert with_overrides(clean[0], {"cpu_hold_ticks": 12}).cpu_hold_ticks == 12
    assert with_overrides(clean[0], {"cpu_hold_ticks": 12}).headroom == clean[0].headroom


def test_isolated_settings_are_checked_and_of_the_real_class() -> None:
    built = isolated(ScalerSettings, headroom=1.5)
    assert type(built) is ScalerSettings
    assert built.headroom == 1.5
    with pytest.raises(ValidationError, match="headroom"):
        isolated(ScalerSettings, headroom=0.5)
    with pytest.raises(ValidationError, match="ScalerSettings"):
        isolated(ScalerSettings, min_cpu_workers=5, max_cpu_workers=2)

"""Scaler settings and price tables that make no sense are refused at start, with a
message that names what is wrong."""

from __future__ import annotations

import math
import re

import pytest
from pydantic import ValidationError

from queues.errors import ConfigError
from registry.pricing import DEFAULT_INSTANCES, Instance, PriceTable
from scaler.settings import ScalerSettings, check_price_table


def test_defaults_are_the_papers_numbers() -> None:
    s = ScalerSettings()
    assert s.headroom == 1.05
    assert (s.cpu_hold_ticks, s.gpu_hold_ticks) == (10, 20)
    assert s.hot_threshold == 0.8
    assert s.worker_backoff_s == 30.0
    assert s.ilp_time_limit_s == pytest.approx(s.tick_interval_s / 2)


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFAAS_SCALER_TICK_INTERVAL_S", "2")
    monkeypatch.setenv("INFAAS_SCALER_PLANNER", "greedy")
    monkeypatch.setenv("INFAAS_SCALER_MAX_CPU_WORKERS", "3")
    s = ScalerSettings()
    assert (s.tick_interval_s, s.planner, s.max_cpu_workers) == (2.0, "greedy", 3)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"min_cpu_workers": 5, "max_cpu_workers": 2}, "MIN_CPU_WORKERS (5) exceeds"),
        ({"min_gpu_workers": 2, "max_gpu_workers": 1}, "MIN_GPU_WORKERS (2) exceeds"),
        ({"spare_cpu_workers": 3, "max_cpu_workers": 2}, "SPARE_CPU_WORKERS (3) exceeds"),
        ({"spare_gpu_workers": 1, "max_gpu_workers": 0}, "SPARE_GPU_WORKERS (1) exceeds"),
        ({"spare_cpu_workers": -1}, "greater than or equal to 0"),
        ({"idle_threshold": 0.9, "hot_threshold": 0.8}, "IDLE_THRESHOLD (0.9) must be below"),
        ({"ilp_time_limit_s": 1.0, "tick_interval_s": 1.0}, "ILP_TIME_LIMIT_S (1.0) must be below"),
        ({"hot_threshold": 1.5}, "less than or equal to 1"),
        ({"hot_threshold": 0}, "greater than 0"),
        ({"overloaded_fraction": 2}, "less than or equal to 1"),
        ({"headroom": 0.9}, "greater than or equal to 1"),
        ({"load_penalty_per_s": -1}, "greater than or equal to 0"),
        ({"light_share": 1.5}, "less than or equal to 1"),
        ({"light_share": -0.25}, "greater than or equal to 0"),
        ({"load_smoothing": 0}, "greater than 0"),
        ({"replan_tolerance": 1.0}, "less than 1"),
        ({"replan_tolerance": -0.1}, "greater than or equal to 0"),
        ({"replan_every_s": 0}, "greater than 0"),
        ({"trend_z": -1}, "greater than or equal to 0"),
        ({"trend_z": math.inf}, "finite number"),
        ({"tick_interval_s": 0}, "greater than 0"),
        ({"min_cpu_workers": -1}, "greater than or equal to 0"),
        ({"headroom": math.nan}, "finite number"),
        ({"planner": "simplex"}, "'ilp' or 'greedy'"),
    ],
)
def test_settings_that_make_no_sense_are_refused(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        ScalerSettings(**overrides)  # type: ignore[arg-type]


def test_the_environment_is_checked_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFAAS_SCALER_MIN_CPU_WORKERS", "9")
    with pytest.raises(ValidationError, match="MIN_CPU_WORKERS"):
        ScalerSettings()


def test_hold_down_is_the_load_time_or_the_prototypes_ticks() -> None:
    s = ScalerSettings(tick_interval_s=1.0)
    assert s.hold_ms("cpu", 500.0) == 10_000.0  # 10 ticks beat a short load
    assert s.hold_ms("gpu", 500.0) == 20_000.0
    assert s.hold_ms("cpu", 45_000.0) == 45_000.0  # a long load time wins


def _table(*instances: Instance, cpu: str = "m5.2xlarge", gpu: str = "p3.2xlarge") -> PriceTable:
    return PriceTable({i.name: i for i in instances}, cpu_instance=cpu, gpu_instance=gpu)


def test_the_default_price_table_is_accepted() -> None:
    check_price_table(PriceTable.default(), ScalerSettings())


def test_negative_prices_are_refused_by_the_table() -> None:
    with pytest.raises(ConfigError, match="prices must be >= 0"):
        _table(Instance("m5.2xlarge", "cpu", -0.1, 8), DEFAULT_INSTANCES[2])


def test_a_price_that_is_not_a_number_is_refused() -> None:
    table = _table(Instance("m5.2xlarge", "cpu", math.nan, 8), DEFAULT_INSTANCES[2])
    with pytest.raises(ConfigError, match=r"costs nan \$/h; give a finite price"):
        check_price_table(table, ScalerSettings())


def test_a_cpu_instance_that_is_a_gpu_is_refused() -> None:
    table = _table(*DEFAULT_INSTANCES, cpu="p3.2xlarge")
    with pytest.raises(ConfigError, match=r"the cpu instance 'p3\.2xlarge' is gpu hardware"):
        check_price_table(table, ScalerSettings())


def test_new_cpu_workers_must_fit_their_instance() -> None:
    with pytest.raises(ConfigError, match="CPU_WORKER_CORES \\(16\\) exceeds the 8 vCPUs"):
        check_price_table(PriceTable.default(), ScalerSettings(cpu_worker_cores=16))

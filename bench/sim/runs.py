"""One simulated run of one policy: the arrivals, the fleet, and what it cost and missed.

Shared by the single-workload command and the ``--frontier`` sweep (:mod:`bench.sim.frontier`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from bench.sim.engine import SimSettings, Simulation
from bench.sim.policies import autoscaled, decider_of, place_static, scaler_settings, static_fleet
from bench.sim.profiles import World
from bench.sim.settings import isolated
from bench.sim.workload import Arrivals
from registry.pricing import PriceTable
from registry.selector import Requirements
from scaler.settings import ScalerSettings
from workers.states import StateSettings

WARMUP_S = 120  # longer than a GPU worker takes to join (60 s) and load


def classes_of(world: World) -> tuple[list[tuple[str, Requirements]], np.ndarray]:
    """Every (app, requirements) class of the mix and its share of all queries."""
    classes, shares = [], []
    total = sum(a.share for a in world.mix)
    for app in world.mix:
        for c in app.classes:
            classes.append(
                (
                    app.app,
                    Requirements(
                        app=app.app,
                        latency_ms=c.latency_ms,
                        min_accuracy=c.min_accuracy,
                        max_cost_per_hour=c.max_cost_per_hour,
                    ),
                )
            )
            shares.append(app.share / total * c.share / sum(x.share for x in app.classes))
    return classes, np.asarray(shares) / sum(shares)


def _class_name(req: Requirements) -> str:
    return f"{req.app}|acc>={req.min_accuracy}|lat<={req.latency_ms}ms"


def sim_prices() -> PriceTable:
    """The paper's AWS prices; CPU workers are m5.large (2 vCPUs, $0.096/h)."""
    base = PriceTable.default()
    return PriceTable(base.instances, cpu_instance="m5.large", gpu_instance="p3.2xlarge")


def peak_qps(per_second: np.ndarray, window_s: int = 5) -> float:
    if len(per_second) == 0:
        return 0.0
    kernel = np.ones(min(window_s, len(per_second))) / min(window_s, len(per_second))
    return float(np.convolve(per_second, kernel, mode="valid").max())


def run_policy(
    policy: str,
    world: World,
    arrivals: Arrivals,
    seed: int,
    sim_settings: SimSettings,
    warmup_s: int = WARMUP_S,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], Simulation]:
    """Simulate ``policy`` over ``arrivals``, after a warm-up (not measured) that replays
    their first ``warmup_s`` seconds, or all of them if they are shorter. ``overrides``
    replace scaler settings of an autoscaled policy (checked as the settings are)."""
    if warmup_s < 0:
        raise ValueError(f"warmup_s {warmup_s} is negative; give 0 for no warm-up")
    # measure from where the warm-up really ends: arrivals shorter than the warm-up were
    # measured from ``warmup_s`` on, past their end, and counted nothing
    warmup_s = min(warmup_s, arrivals.duration_s)
    classes, shares = classes_of(world)
    warm = np.concatenate([arrivals.per_second[:warmup_s], arrivals.per_second])
    rng = np.random.default_rng(seed)
    times = Arrivals(arrivals.name, warm).times_s(rng)
    class_of = rng.choice(len(classes), size=len(times), p=shares)
    sim = Simulation(
        world, times, class_of, classes, prices=sim_prices(), settings=sim_settings,
        states=isolated(StateSettings), seed=seed,
    )  # fmt: skip
    duration = warmup_s + arrivals.duration_s
    started = time.perf_counter()
    notes: list[str] = []
    if policy.startswith("static-"):
        hardware = policy.removeprefix("static-")
        choices = static_fleet(
            world.catalog, world.mix, peak_qps(arrivals.per_second), hardware, sim_settings
        )
        place_static(sim, choices)
        notes = [f"{c.app}: {c.replicas} × {c.variant.id} ({c.why})" for c in choices]
        sim.run(duration, None, measure_from_s=warmup_s)
    else:
        sim.start_worker("cpu", {})
        settings = with_overrides(scaler_settings(policy, sim_settings), overrides or {})
        sim.run(duration, autoscaled(decider_of(policy), settings), measure_from_s=warmup_s)
    wall_s = time.perf_counter() - started
    out = sim.outcome
    violations = out.late + out.failed
    result = {
        "cost_usd": round(sim.cost_usd, 4),
        "slo_violation_rate": violations / out.arrivals if out.arrivals else 0.0,
        "throughput_qps": out.served / arrivals.duration_s,
        "mean_accuracy": out.accuracy_sum / out.served if out.served else None,
        "scaling_actions": sim.actions,
        "queries": out.arrivals,
        "served": out.served,
        "late": out.late,
        "failed": out.failed,
        "failures": dict(out.failures),
        "in_flight_at_end": out.in_flight_at_end,
        "late_by_class": {
            _class_name(classes[c][1]): n for c, n in sorted(out.late_by_class.items())
        },
        "simulated_s": arrivals.duration_s,
        "wall_s": round(wall_s, 1),
        "plan_ms_p99": float(np.percentile(sim.plan_ms, 99)) if sim.plan_ms else None,
        "fleet": notes,
    }
    return result, sim


def with_overrides(settings: ScalerSettings, overrides: Mapping[str, Any]) -> ScalerSettings:
    """``settings`` with some fields replaced, validated as a whole (a value out of its
    bounds raises pydantic's ``ValidationError``, naming the field)."""
    unknown = sorted(set(overrides) - set(ScalerSettings.model_fields))
    if unknown:
        raise ValueError(f"unknown scaler settings {unknown}; see scaler/settings.py")
    if not overrides:
        return settings
    return isolated(ScalerSettings, **{**settings.model_dump(), **overrides})


def ratios(results: dict[str, dict[str, Any]], ours: str = "ours") -> dict[str, Any]:
    if ours not in results:
        return {}
    mine = results[ours]
    out = {}
    for name, other in results.items():
        if name == ours:
            continue
        cost = other["cost_usd"] / mine["cost_usd"] if mine["cost_usd"] else math.inf
        v_ours, v_other = mine["slo_violation_rate"], other["slo_violation_rate"]
        out[name] = {
            "cost_x_lower": round(cost, 2),
            "violations_x_fewer": round(v_other / v_ours, 2) if v_ours else None,
            "violations_ours_vs_baseline": [round(v_ours, 5), round(v_other, 5)],
            "throughput_x": round(mine["throughput_qps"] / other["throughput_qps"], 3)
            if other["throughput_qps"]
            else None,
        }
    return out

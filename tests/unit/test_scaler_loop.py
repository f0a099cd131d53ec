"""The control loop's reading of the catalog: a variant made ready while the scaler runs
is in the very next tick's view (the loop reloads the catalog when its revision moves)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from queues.depth import QueueDepth
from queues.settings import BrokerSettings
from registry import live_docs
from registry.catalog import Catalog
from registry.livestate import MemoryLiveState
from registry.pricing import PriceTable
from registry.types import PROFILING
from scaler.actuators import WorkerRef
from scaler.loop import ScalerLoop
from scaler.policy import LOAD
from scaler.settings import ScalerSettings
from tests import factories as f

VARIANT = "m.onnx-fp32.cpu-t1"


class Probe:
    def depths(self, queues: dict[str, str]) -> dict[str, QueueDepth]:
        return {}

    def close(self) -> None:
        return None


class Actuator:
    name = "fake"

    def add_worker(self, hardware: str) -> str:
        return f"asked for a {hardware} worker"

    def remove_worker(self, worker: WorkerRef) -> str:
        return f"removed {worker.worker_id}"

    def close(self) -> None:
        return None


class Control:
    def broadcast(self, command: str, **kwargs: Any) -> list[dict[str, dict[str, bool]]]:
        return [{"w1": {"ok": True}}]


class Celery:
    control = Control()


def test_a_variant_made_ready_after_the_first_tick_is_in_the_next_ticks_view(
    tmp_path: Path,
) -> None:
    ready = f.variant(VARIANT, 0.9, 10.0)
    records = f.catalog(ready)
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    live = MemoryLiveState(ttl_s=60)
    loop = ScalerLoop(
        settings=ScalerSettings(planner="greedy"),
        broker=BrokerSettings(broker_url=None, queue_prefix="t"),
        catalog=catalog,
        live=live,
        prices=PriceTable.default(),
        celery=Celery(),
        actuator=Actuator(),
        probe=Probe(),  # type: ignore[arg-type]
    )
    try:
        for app in records.apps.values():
            catalog.create_app(app)
        for model in records.models.values():
            catalog.add_model(model)
        catalog.upsert_variant(replace(ready, status=PROFILING, profile=None))
        live.put_worker(f.worker_report("w1", cores=2))
        demand = live_docs.ClassDemand(live_docs.RequirementClass("digits"), 1.0)
        live_docs.put_demand(live, live_docs.DemandDoc("gw", 0.0, (demand,)))

        first = loop.tick()
        assert first.actions == ()
        assert any("no ready variant" in n for n in first.notes)

        assert ready.profile is not None
        catalog.set_variant_profile(VARIANT, ready.profile)  # as a worker's profiler does
        second = loop.tick()
        assert [(a.kind, a.variant) for a in second.actions] == [(LOAD, VARIANT)]
        assert second.targets == {(VARIANT, "w1"): 1}
        assert not any("no ready variant" in n for n in second.notes)
    finally:
        loop.close()
        catalog.close()

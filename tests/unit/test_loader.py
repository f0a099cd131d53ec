"""Loading on demand (workers/loader.py): the pure rule, and the loop's effects on live
state (a loaded variant is reported at once; a failed load is published, never silent)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from queues.errors import ObjectMissing
from registry import live_docs
from registry.live_docs import LoadRequest
from registry.livestate import MemoryLiveState, now_ms
from tests import factories as f
from workers.loader import Loader, LoaderView, designated_worker, loads_to_make

REQ = LoadRequest("m.onnx-fp32.cpu-t1", "digits", "cpu", 1.0)
GPU_REQ = LoadRequest("m.onnx-fp32.gpu", "digits", "gpu", 2.0)


def view(**changes: object) -> LoaderView:
    base = LoaderView(
        worker_id="w1",
        hardware="cpu",
        requests=(REQ, GPU_REQ),
        live=f.live(f.worker("w1"), f.worker("w2", {"other": "active"})),
        failed=frozenset(),
        scaler_running=False,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_the_worker_with_fewest_variants_of_the_hardware_is_designated() -> None:
    live = f.live(f.worker("w2"), f.worker("w1", {"x": "active"}), f.worker("g", hardware="gpu"))
    assert designated_worker(live, "cpu") == "w2"
    assert designated_worker(live, "gpu") == "g"
    assert designated_worker(f.live(f.worker("b"), f.worker("a")), "cpu") == "a"  # ties: id
    assert designated_worker(live, "tpu") is None


def test_a_worker_that_does_not_load_on_demand_is_never_designated() -> None:
    pinned = replace(f.worker("a"), loads_on_demand=False)
    assert designated_worker(f.live(pinned, f.worker("b", {"x": "active"})), "cpu") == "b"
    assert designated_worker(f.live(pinned), "cpu") is None


def test_the_designated_worker_loads_requests_of_its_hardware() -> None:
    assert loads_to_make(view()) == [REQ]


@pytest.mark.parametrize(
    "changes",
    [
        {"worker_id": "w2"},  # another worker is designated
        {"scaler_running": True},  # the scaler decides
        {"failed": frozenset({REQ.variant})},  # failed a moment ago
        {"live": f.live(f.worker("w1"), f.worker("w2", {REQ.variant: "active"}))},  # placed
        {"requests": (GPU_REQ,)},  # not this hardware
    ],
    ids=["not-designated", "scaler-runs", "failed", "already-placed", "other-hardware"],
)
def test_nothing_is_loaded(changes: dict[str, object]) -> None:
    assert loads_to_make(view(**changes)) == []


def test_requests_are_taken_oldest_first() -> None:
    newer = LoadRequest("n.onnx-fp32.cpu-t1", "digits", "cpu", 0.5)
    assert loads_to_make(view(requests=(REQ, newer))) == [newer, REQ]


def _loader(live: MemoryLiveState, load: object, reported: list[int]) -> Loader:
    return Loader(
        worker_id="w1",
        hardware="cpu",
        live=live,
        load=load,  # type: ignore[arg-type]
        report_now=lambda: reported.append(1),
    )


def test_a_load_is_reported_at_once_and_its_request_cleared() -> None:
    live = MemoryLiveState()
    live.put_worker(f.worker("w1"))
    live_docs.put_load_request(live, REQ)
    loaded: list[str] = []
    reported: list[int] = []
    loader = _loader(live, loaded.append, reported)
    assert loader.tick() == [REQ.variant]
    assert loaded == [REQ.variant]
    assert reported == [1]
    assert live_docs.read_load_requests(live) == []
    assert loader.tick() == []  # nothing asked any more


def test_a_failed_load_is_published_for_the_waiting_queries() -> None:
    live = MemoryLiveState()
    live.put_worker(f.worker("w1"))
    live_docs.put_load_request(live, REQ)

    def load(variant: str) -> None:
        raise ObjectMissing(f"the artifact of {variant} is gone")

    reported: list[int] = []
    assert _loader(live, load, reported).tick() == []
    failure = live_docs.read_load_failures(live)[REQ.variant]
    assert (failure.worker, failure.code) == ("w1", "object_missing")
    assert "is gone" in failure.message
    assert reported == []
    assert live_docs.read_load_requests(live) == []


def test_an_unexpected_exception_is_a_worker_error() -> None:
    live = MemoryLiveState()
    live.put_worker(f.worker("w1"))
    live_docs.put_load_request(live, REQ)

    def load(variant: str) -> None:
        raise MemoryError("out of memory")

    _loader(live, load, []).tick()
    failure = live_docs.read_load_failures(live)[REQ.variant]
    assert failure.code == "worker_error"
    assert "MemoryError: out of memory" in failure.message


def test_the_loader_stands_by_while_a_scaler_runs() -> None:
    live = MemoryLiveState()
    live.put_worker(f.worker("w1"))
    live_docs.put_load_request(live, REQ)
    live_docs.put_plan(live, {"now_ms": now_ms(), "tick": 1})
    loaded: list[str] = []
    assert _loader(live, loaded.append, []).tick() == []
    assert loaded == []
    assert live_docs.read_load_requests(live) == [REQ]

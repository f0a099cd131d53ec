"""The live-state documents between processes: one key function, round trips, and no
process that writes or reads a document outside registry/live_docs.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from api_gateway.accounting import Accounting
from registry import live_docs
from registry.live_docs import (
    ClassDemand,
    DemandDoc,
    LoadFailure,
    LoadRequest,
    PlanHeader,
    RequirementClass,
    class_key,
)
from registry.livestate import MemoryLiveState
from scaler.snapshot import Demand

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ((23.4, 0.9876, 0.0512), (23.0, 0.988, 0.051)),
        ((None, None, None), (None, None, None)),
        ((150.0, 0.95, None), (150.0, 0.95, None)),
        ((123.0, 0.9755, 0.125), (120.0, 0.976, 0.12)),
        ((129.9, 0.975, 0.0), (120.0, 0.975, 0.0)),
        ((0.57, 0.9991, 5.0), (0.57, 1.0, 5.0)),
    ],
)
def test_a_class_rounds_to_the_strict_side(
    given: tuple[float | None, float | None, float | None],
    expected: tuple[float | None, float | None, float | None],
) -> None:
    r = RequirementClass.of("a", *given)
    assert (r.latency_ms, r.min_accuracy, r.max_cost_per_hour) == expected


@pytest.mark.parametrize("latency_ms", [0.5, 1.0, 2.0, 7.3, 10.0, 19.99, 20.0, 123.0, 999.0])
@pytest.mark.parametrize("accuracy", [0.0, 0.5, 0.9, 0.97, 0.975, 0.9755, 0.985, 0.999])
def test_rounding_is_strict_and_idempotent(latency_ms: float, accuracy: float) -> None:
    once = RequirementClass.of("a", latency_ms, accuracy, latency_ms / 100)
    assert once.latency_ms is not None
    assert once.min_accuracy is not None
    assert once.latency_ms <= latency_ms
    assert once.min_accuracy >= accuracy
    again = RequirementClass.of("a", once.latency_ms, once.min_accuracy, once.max_cost_per_hour)
    assert again == once


def test_the_key_is_the_same_in_the_gateway_the_selector_and_the_scaler() -> None:
    """A query of 123 ms / 0.9755: the accounting counts it, the scaler plans its class,
    and the selector looks the same key up in the plan's routes."""
    acc = Accounting()
    acc.arrival("digits", 100.5, 123.0, 0.9755, None)
    published = DemandDoc("g1", 101.0, tuple(acc.demand(102.0))).to_doc()
    (read,) = DemandDoc.from_doc(published).classes
    r = read.requirements
    scaler_key = Demand(r.app, read.qps, r.latency_ms, r.min_accuracy, r.max_cost_per_hour).key
    selector_key = class_key("digits", 123.0, 0.9755, None)
    assert scaler_key == selector_key == "digits|acc>=0.976|lat<=120ms"


@pytest.mark.parametrize(
    "doc",
    [
        DemandDoc("g1", 5.0, (ClassDemand(RequirementClass("a", 20.0, 0.9, None), 1.5),)),
        LoadRequest("m.onnx-fp32.cpu-t1", "a", "cpu", 12.5),
        LoadFailure("m.onnx-fp32.cpu-t1", "w1", "object_missing", "gone", 13.0),
    ],
    ids=["demand", "load-request", "load-failure"],
)
def test_documents_round_trip(doc: DemandDoc | LoadRequest | LoadFailure) -> None:
    assert type(doc).from_doc(doc.to_doc()) == doc


def test_a_plan_header_is_fresh_while_its_scaler_publishes() -> None:
    header = PlanHeader.from_doc({"now_ms": 1000.0, "tick": 3, "routes": {"k": []}})
    assert header.fresh(1000.0 + live_docs.PLAN_MAX_AGE_S * 1000)
    assert not header.fresh(1001.0 + live_docs.PLAN_MAX_AGE_S * 1000)


def test_writer_and_reader_meet_and_a_malformed_document_is_skipped() -> None:
    live = MemoryLiveState()
    live_docs.put_load_request(live, LoadRequest("v1", "a", "cpu", 1.0))
    live.put_doc(live_docs.LOAD_REQUEST_PREFIX + "v2", {"variant": "v2"}, 30.0)  # no app
    assert live_docs.read_load_requests(live) == [LoadRequest("v1", "a", "cpu", 1.0)]
    live_docs.clear_load_request(live, "v1")
    assert live_docs.read_load_requests(live) == []
    live_docs.put_load_failure(live, LoadFailure("v1", "w", "worker_error", "boom", 2.0))
    assert set(live_docs.read_load_failures(live)) == {"v1"}


def test_no_process_writes_or_reads_live_documents_by_hand() -> None:
    """Every document kind's name, TTL and parsing live in registry/live_docs.py."""
    allowed = {ROOT / "registry" / "live_docs.py", ROOT / "registry" / "livestate.py"}
    pattern = re.compile(r"\.(put_doc|get_doc|list_docs|delete_doc)\(")
    offenders = [
        f"{path.relative_to(ROOT)}:{n}"
        for package in ("api_gateway", "queues", "registry", "scaler", "workers", "infaas")
        for path in sorted((ROOT / package).rglob("*.py"))
        if path not in allowed
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []

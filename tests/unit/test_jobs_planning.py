"""The pure decisions of batch jobs: locations, chunks, the variant, claims, sweeps and
status transitions, on hand-built records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from queues.errors import InvalidRequest, NoEligibleVariant, NoWorker
from registry.jobs.chunking import InputObject, chunk_priority, plan_chunks
from registry.jobs.locations import Location, manifest_key, output_key, parse_location
from registry.jobs.pacing import online_pressure, required_items_per_s
from registry.jobs.records import request_fingerprint
from registry.jobs.recovery import (
    CLAIM_DONE,
    CLAIM_EXHAUSTED,
    CLAIM_HELD,
    CLAIM_RUN,
    ChunkView,
    chunks_to_republish,
    claim_decision,
)
from registry.jobs.settings import JobSettings
from registry.jobs.status import (
    CHUNK_DONE,
    CHUNK_FAILED,
    CHUNK_QUEUED,
    CHUNK_RUNNING,
    EVENT_CANCEL,
    EVENT_FAIL,
    EVENT_START,
    EVENT_SUCCEED,
    JOB_CANCELLED,
    JOB_FAILED,
    JOB_QUEUED,
    JOB_RUNNING,
    JOB_SUCCEEDED,
    next_job_status,
)
from registry.jobs.variant_choice import JobNeeds, choose_variant, estimate
from registry.livestate import ACTIVE, INTERFERED, OVERLOADED, VariantLoad, WorkerReport
from tests.factories import variant

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
SETTINGS = JobSettings(time_factor=1.0, chunk_overhead_ms=0.0, assumed_replicas=1)


# ------------------------------------------------------------------------ locations


@pytest.mark.parametrize(
    ("text", "bucket", "prefix"),
    [
        ("s3://jobs-in/run1", "jobs-in", "run1"),
        ("s3://jobs-in/run1/", "jobs-in", "run1"),
        ("s3://jobs-in", "jobs-in", ""),
        ("s3://jobs-in/a/b/part-0.npz", "jobs-in", "a/b/part-0.npz"),
        ("  s3://jobs-in/x  ", "jobs-in", "x"),
    ],
)
def test_locations_parse(text: str, bucket: str, prefix: str) -> None:
    assert parse_location(text, "input") == Location(bucket, prefix)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("/data/inputs", "not an s3://BUCKET/PREFIX location"),
        ("https://host/bucket/x", "not an s3://BUCKET/PREFIX location"),
        ("s3://", "bucket name"),
        ("s3://Bad_Bucket/x", "bucket name"),
        ("s3://jobs/../etc", "'..'"),
        ("s3://jobs/a//b", "empty or '.' part"),
    ],
)
def test_bad_locations_are_refused_clearly(text: str, says: str) -> None:
    with pytest.raises(InvalidRequest, match="output") as caught:
        parse_location(text, "output")
    assert says in caught.value.message


def test_location_keys_urls_and_containment() -> None:
    out = Location("jobs-out", "daily")
    assert out.url == "s3://jobs-out/daily"
    assert Location("jobs-out", "").url == "s3://jobs-out"
    assert Location("", "jobs/j1/input").url == "upload:jobs/j1/input"
    assert output_key(out, "j1", 7) == "daily/j1/chunk-00007.npz"
    assert output_key(Location("b", ""), "j1", 0) == "j1/chunk-00000.npz"
    assert manifest_key(out, "j1") == "daily/j1/manifest.json"
    inputs = Location("data", "in")
    assert inputs.contains(Location("data", "in"))
    assert inputs.contains(Location("data", "in/out"))
    assert not inputs.contains(Location("data", "in2"))
    assert not inputs.contains(Location("other", "in/out"))
    assert Location("data", "").contains(Location("data", "anything"))


# --------------------------------------------------------------------------- chunks


def test_chunks_split_each_object_and_number_items_across_objects() -> None:
    objects = [
        InputObject("a.npz", 2500, 1),
        InputObject("b.npz", 0, 1),
        InputObject("c.npz", 700, 1),
    ]
    plan = plan_chunks(objects, 1000)
    assert [(c.index, c.input_key, c.row_start, c.row_stop, c.first_item) for c in plan] == [
        (0, "a.npz", 0, 1000, 0),
        (1, "a.npz", 1000, 2000, 1000),
        (2, "a.npz", 2000, 2500, 2000),
        (3, "c.npz", 0, 700, 2500),
    ]
    assert sum(c.items for c in plan) == 3200
    assert len(plan_chunks([InputObject("a.npz", 10, 1)], 1000)) == 1
    with pytest.raises(InvalidRequest, match="chunk_items"):
        plan_chunks(objects, 0)


@pytest.mark.parametrize(
    ("hours", "priority"), [(None, 1), (0.5, 9), (3.2, 6), (7, 2), (100, 2), (-1, 9)]
)
def test_sooner_deadlines_get_higher_priority(hours: float | None, priority: int) -> None:
    deadline = None if hours is None else NOW + timedelta(hours=hours)
    assert chunk_priority(deadline, NOW) == priority


def test_fingerprints_ignore_key_order_and_see_every_value() -> None:
    a = request_fingerprint({"app": "digits", "min_accuracy": 0.95})
    assert a == request_fingerprint({"min_accuracy": 0.95, "app": "digits"})
    assert a != request_fingerprint({"app": "digits", "min_accuracy": 0.96})


@pytest.mark.parametrize(
    ("current", "event", "after"),
    [
        (JOB_QUEUED, EVENT_START, JOB_RUNNING),
        (JOB_RUNNING, EVENT_START, None),
        (JOB_RUNNING, EVENT_SUCCEED, JOB_SUCCEEDED),
        (JOB_QUEUED, EVENT_CANCEL, JOB_CANCELLED),
        (JOB_RUNNING, EVENT_CANCEL, JOB_CANCELLED),
        (JOB_RUNNING, EVENT_FAIL, JOB_FAILED),
        (JOB_SUCCEEDED, EVENT_CANCEL, None),
        (JOB_CANCELLED, EVENT_SUCCEED, None),
        (JOB_CANCELLED, EVENT_START, None),
        (JOB_FAILED, EVENT_SUCCEED, None),
        (JOB_SUCCEEDED, EVENT_FAIL, None),
    ],
)
def test_finished_jobs_stay_finished(current: str, event: str, after: str | None) -> None:
    assert next_job_status(current, event) == after


# -------------------------------------------------------------------------- variant


def _needs(items: int = 100_000, **kwargs: object) -> JobNeeds:
    base: dict[str, object] = {"items": items, "chunks": 100, "min_accuracy": 0.9, "now": NOW}
    base.update(kwargs)
    return JobNeeds(**base)  # type: ignore[arg-type]


# per item at the best batch (32): slow-cheap 1.0 ms × 0.02 $/h, fast-dear 0.1 ms × 1 $/h
SLOW_CHEAP = variant("slow.onnx-fp32.cpu-t1", 0.95, 1.0, slope_ms=1.0, cost=0.02)
FAST_DEAR = variant("fast.onnx-fp32.gpu", 0.97, 0.1, slope_ms=0.1, cost=1.0, hardware="gpu")
INACCURATE = variant("tiny.onnx-fp32.cpu-t1", 0.80, 0.01, slope_ms=0.01, cost=0.001)
BOTH = frozenset({"cpu", "gpu"})


def test_estimate_uses_the_throughput_optimal_batch() -> None:
    option = estimate(SLOW_CHEAP, _needs(items=3600), SETTINGS)
    assert option.batch == 32
    assert option.per_item_ms == pytest.approx(1.0)
    assert option.cost_usd == pytest.approx(0.02 * 3600 * 1.0 / 3_600_000)
    assert option.duration_s == pytest.approx(3.6)
    slower = JobSettings(time_factor=2.0, chunk_overhead_ms=100.0, assumed_replicas=2)
    option = estimate(SLOW_CHEAP, _needs(items=3600, chunks=4), slower)
    assert option.duration_s == pytest.approx((3600 * 2.0 + 4 * 100.0) / 1000 / 2)
    assert option.finish_at == NOW + timedelta(seconds=option.duration_s)


def test_the_cheapest_variant_meeting_the_floor_wins() -> None:
    variants = [SLOW_CHEAP, FAST_DEAR, INACCURATE]
    chosen = choose_variant(variants, BOTH, _needs(), SETTINGS, app="digits")
    assert chosen.variant.id == SLOW_CHEAP.id  # INACCURATE is cheaper but below the floor
    chosen = choose_variant(variants, BOTH, _needs(min_accuracy=0.5), SETTINGS, app="digits")
    assert chosen.variant.id == INACCURATE.id


def test_a_tight_deadline_buys_the_faster_variant() -> None:
    # 100,000 items: 100 s on SLOW_CHEAP, 10 s on FAST_DEAR
    needs = _needs(deadline=NOW + timedelta(seconds=50))
    chosen = choose_variant([SLOW_CHEAP, FAST_DEAR], BOTH, needs, SETTINGS, app="digits")
    assert chosen.variant.id == FAST_DEAR.id


def test_a_variant_whose_hardware_has_no_worker_is_not_chosen() -> None:
    needs = _needs(deadline=NOW + timedelta(seconds=50))
    with pytest.raises(NoEligibleVariant, match="move the deadline"):
        choose_variant([SLOW_CHEAP, FAST_DEAR], frozenset({"cpu"}), needs, SETTINGS, app="digits")
    with pytest.raises(NoWorker, match="--hardware gpu"):
        choose_variant([FAST_DEAR], frozenset({"cpu"}), _needs(), SETTINGS, app="digits")


def test_an_unreachable_floor_names_the_best_accuracy() -> None:
    with pytest.raises(NoEligibleVariant) as caught:
        choose_variant([SLOW_CHEAP, FAST_DEAR], BOTH, _needs(min_accuracy=0.99), SETTINGS, app="d")
    assert "0.9700 (fast.onnx-fp32.gpu)" in caught.value.message
    assert caught.value.details["best_accuracy"]["variant"] == FAST_DEAR.id


def test_no_ready_variant_is_said() -> None:
    with pytest.raises(NoEligibleVariant, match="no ready variant"):
        choose_variant([], BOTH, _needs(), SETTINGS, app="digits")


def test_deadline_and_cost_cap_that_nothing_meets_name_what_is_on_offer() -> None:
    needs = _needs(deadline=NOW + timedelta(seconds=5), max_cost_usd=1e-6)
    with pytest.raises(NoEligibleVariant) as caught:
        choose_variant([SLOW_CHEAP, FAST_DEAR], BOTH, needs, SETTINGS, app="digits")
    details = caught.value.details
    assert details["cheapest"]["variant"] == SLOW_CHEAP.id
    assert details["fastest"]["variant"] == FAST_DEAR.id
    assert "by 2030-01-01T12:00:05+00:00 and for at most $1e-06" in caught.value.message


def test_a_cost_cap_excludes_the_dear_variant() -> None:
    dear_only = _needs(min_accuracy=0.96, max_cost_usd=1e-3)
    with pytest.raises(NoEligibleVariant, match="raise max_cost_usd"):
        choose_variant([SLOW_CHEAP, FAST_DEAR], BOTH, dear_only, SETTINGS, app="digits")
    fine = _needs(min_accuracy=0.96, max_cost_usd=1.0)
    assert choose_variant([FAST_DEAR], BOTH, fine, SETTINGS, app="d").variant.id == FAST_DEAR.id


def test_equal_cost_goes_to_the_faster_then_the_id() -> None:
    a = variant("a.onnx-fp32.cpu-t1", 0.95, 1.0, slope_ms=1.0, cost=0.02)
    b = variant("b.onnx-fp32.cpu-t1", 0.95, 1.0, slope_ms=1.0, cost=0.02)
    assert choose_variant([b, a], BOTH, _needs(), SETTINGS, app="d").variant.id == a.id


# ------------------------------------------------------------------- claims, sweeps


@pytest.mark.parametrize(
    ("status", "holder", "lease_s", "attempts", "alive", "decision"),
    [
        (CHUNK_QUEUED, "", None, 0, False, CLAIM_RUN),
        (CHUNK_DONE, "w1", None, 1, True, CLAIM_DONE),
        (CHUNK_RUNNING, "w1", 30, 1, True, CLAIM_HELD),
        (CHUNK_RUNNING, "w1", 30, 1, False, CLAIM_RUN),  # its worker died: run it here
        (CHUNK_RUNNING, "w1", -1, 1, True, CLAIM_RUN),  # alive but silent past its lease
        (CHUNK_RUNNING, "w1", -1, 3, False, CLAIM_EXHAUSTED),
        (CHUNK_QUEUED, "", None, 3, False, CLAIM_EXHAUSTED),
        (CHUNK_FAILED, "", None, 1, False, CLAIM_EXHAUSTED),
    ],
)
def test_claim_decisions(
    status: str, holder: str, lease_s: float | None, attempts: int, alive: bool, decision: str
) -> None:
    lease = None if lease_s is None else NOW + timedelta(seconds=lease_s)
    assert (
        claim_decision(
            status=status,
            holder=holder,
            lease_until=lease,
            attempts=attempts,
            holder_alive=alive,
            now=NOW,
            max_attempts=3,
        )
        == decision
    )


def _chunk(
    index: int,
    status: str = CHUNK_QUEUED,
    *,
    published_s_ago: float | None = 300,
    created_s_ago: float = 300,
    holder: str = "",
    lease_s: float | None = None,
    job: str = "j1",
) -> ChunkView:
    return ChunkView(
        job_id=job,
        index=index,
        status=status,
        holder=holder,
        lease_until=None if lease_s is None else NOW + timedelta(seconds=lease_s),
        published_at=None if published_s_ago is None else NOW - timedelta(seconds=published_s_ago),
        created_at=NOW - timedelta(seconds=created_s_ago),
    )


def test_sweeper_publishes_what_a_dead_gateway_never_published() -> None:
    chunks = [
        _chunk(0, published_s_ago=None, created_s_ago=60),  # its gateway died
        _chunk(1, published_s_ago=None, created_s_ago=1),  # still being published
        _chunk(2, published_s_ago=5),  # waiting in the queue
    ]
    due = chunks_to_republish(
        chunks, now=NOW, queue_ready={"j1": 5}, alive=frozenset(), settings=JobSettings()
    )
    assert due == {"j1": [0]}


def test_sweeper_publishes_lost_messages_only_when_the_queue_is_empty() -> None:
    chunks = [
        _chunk(0),  # queued long ago
        _chunk(1, CHUNK_RUNNING, holder="dead", lease_s=30),  # its worker is gone
        _chunk(2, CHUNK_RUNNING, holder="w1", lease_s=30),  # running fine
        _chunk(3, CHUNK_RUNNING, holder="w1", lease_s=-5),  # alive but silent
        _chunk(4, CHUNK_DONE),
        _chunk(5, published_s_ago=10),  # published recently
        _chunk(0, job="j2"),
    ]
    kwargs = {"now": NOW, "alive": frozenset({"w1"}), "settings": JobSettings()}
    assert chunks_to_republish(chunks, queue_ready={"j1": 0, "j2": 0}, **kwargs) == {  # type: ignore[arg-type]
        "j1": [0, 1, 3],
        "j2": [0],
    }
    # messages are waiting (they will be delivered), or the depth is unknown: nothing
    assert chunks_to_republish(chunks, queue_ready={"j1": 2, "j2": None}, **kwargs) == {}  # type: ignore[arg-type]


def _report(**loads: VariantLoad) -> WorkerReport:
    return WorkerReport(worker_id="w", hardware="cpu", host="h", pid=1, cores=2, variants=loads)


def test_batch_work_pauses_while_online_variants_are_under_pressure() -> None:
    def load(**kwargs: object) -> VariantLoad:
        base: dict[str, object] = {"variant": "v", "app": "a", "state": ACTIVE, "busy": 0.3}
        base.update(kwargs)
        return VariantLoad(**base)  # type: ignore[arg-type]

    calm = load(backlog=8, replicas=1, max_batch=8)
    assert not online_pressure(None, 0.8)
    assert not online_pressure(_report(v=calm), 0.8)
    assert not online_pressure(_report(v=calm, w=load(state=INTERFERED)), 0.8)
    assert online_pressure(_report(v=calm, w=load(busy=0.9)), 0.8)
    assert online_pressure(_report(v=calm, w=load(state=OVERLOADED)), 0.8)
    assert online_pressure(_report(v=load(backlog=9, replicas=1, max_batch=8)), 0.8)
    assert not online_pressure(_report(v=load(backlog=9, replicas=2, max_batch=8)), 0.8)


def test_the_rate_a_deadline_needs() -> None:
    assert required_items_per_s(3600, NOW + timedelta(hours=1), NOW) == pytest.approx(1.0)
    assert required_items_per_s(3600, None, NOW) == 0.0
    assert required_items_per_s(0, NOW + timedelta(hours=1), NOW) == 0.0
    assert required_items_per_s(50, NOW - timedelta(1), NOW) == 50.0  # past: all at once

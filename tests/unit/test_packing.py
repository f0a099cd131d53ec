"""Packing queries at the gateway: grouping, chunking, the packed message, and the split."""

from __future__ import annotations

import numpy as np
import pytest

from queues.messages import (
    Query,
    Reply,
    decode_query,
    encode_query,
    message_count,
    pack_queries,
    split_reply,
)
from queues.packing import Outbox, Packs


def _query(
    rid: str, rows: int, *, width: int = 4, deadline: float = 1000.0, slo: float = 0.0
) -> Query:
    x = np.full((rows, width), float(len(rid)), dtype=np.float32)
    return Query(rid, "app", "v", x, deadline_ms=deadline, sent_ms=10.0, slo_deadline_ms=slo)


def test_outbox_groups_by_queue_and_row_shape_and_chunks_by_rows() -> None:
    box = Outbox(max_rows=4)
    assert box.add("q1", _query("a", 2), "a") is True
    assert box.add("q1", _query("b", 2), "b") is False
    assert box.add("q1", _query("c", 1), "c") is False
    assert box.add("q2", _query("d", 1), "d") is False
    assert box.add("q1", _query("e", 1, width=8), "e") is False
    assert box.add("q1", _query("f", 9), "f") is False  # over max_rows: alone
    assert len(box) == 6
    messages = [[w.correlation_id for w in m] for m in box.take()]
    assert messages == [["a", "b"], ["c"], ["f"], ["d"], ["e"]]
    assert len(box) == 0
    assert box.add("q1", _query("g", 1), "g") is True  # empty again: a new flush


def test_a_query_larger_than_a_message_goes_alone() -> None:
    box = Outbox(max_rows=4)
    for rid, rows in (("a", 1), ("b", 9), ("c", 1)):
        box.add("q", _query(rid, rows), rid)
    assert [[w.correlation_id for w in m] for m in box.take()] == [["a"], ["b"], ["c"]]


def test_outbox_is_full_once_a_group_holds_a_message() -> None:
    box = Outbox(max_rows=3)
    box.add("q", _query("a", 2), "a")
    assert not box.full()
    box.add("q", _query("b", 1), "b")
    assert box.full()


def test_outbox_refuses_a_nonsense_size() -> None:
    with pytest.raises(ValueError, match="max_rows must be at least 1"):
        Outbox(max_rows=0)


def test_packed_query_lives_to_the_last_deadline_and_is_as_urgent_as_the_first() -> None:
    packed = pack_queries(
        [
            _query("a", 1, deadline=500, slo=0),
            _query("bb", 2, deadline=900, slo=300),
            _query("c", 1, deadline=700, slo=200),
        ],
        "pack",
    )
    assert packed.request_id == "pack"
    assert packed.parts == (1, 2, 1)
    assert packed.count == 3
    assert packed.deadline_ms == 900
    assert packed.slo_deadline_ms == 200
    assert packed.inputs.shape == (4, 4)
    np.testing.assert_array_equal(packed.inputs[1:3], 2.0)


def test_parts_travel_in_the_headers_and_are_checked() -> None:
    packed = pack_queries([_query("a", 1), _query("bb", 2)], "pack")
    body, headers = encode_query(packed)
    assert message_count(headers) == 2
    assert decode_query(body, headers).parts == (1, 2)
    single_body, single = encode_query(_query("a", 3))
    assert "parts" not in single
    assert message_count(single) == 1
    assert decode_query(single_body, single).count == 1
    for bad, match in (([1, 1], "do not add up"), ([0, 3], "do not add up"), ("3", "list")):
        with pytest.raises(ValueError, match=match):
            decode_query(body, {**headers, "parts": bad})


def _reply(outputs: np.ndarray | None, ok: bool = True) -> Reply:
    return Reply("pack", ok, outputs, "" if ok else "worker_error", "", 1.5, "w", 8, 0.2)


def test_a_packed_reply_is_split_back_in_order() -> None:
    out = np.arange(8, dtype=np.float32).reshape(4, 2)
    replies = split_reply(_reply(out), [("a", 1), ("b", 2), ("c", 1)])
    assert [r.request_id for r in replies] == ["a", "b", "c"]
    np.testing.assert_array_equal(replies[1].outputs, out[1:3])
    assert all(r.ok and r.batch_size == 8 and r.model_ms == 1.5 for r in replies)


def test_an_error_or_a_short_answer_is_every_members_error() -> None:
    failed = split_reply(_reply(None, ok=False), [("a", 1), ("b", 1)])
    assert [(r.request_id, r.ok, r.error_code) for r in failed] == [
        ("a", False, "worker_error"),
        ("b", False, "worker_error"),
    ]
    short = split_reply(_reply(np.zeros((1, 2))), [("a", 1), ("b", 1)])
    assert all(not r.ok and "answered 1 rows" in r.error_message for r in short)


def test_packs_forget_members_and_answered_packs() -> None:
    packs = Packs()
    packs.open("p", [("a", 1), ("b", 2)])
    assert "p" in packs
    packs.forget_member("a")
    assert packs.take("p") == [("b", 2)]
    assert "p" not in packs
    assert packs.take("p") is None
    packs.open("q", [("c", 1)])
    packs.forget_member("c")  # its last member stopped waiting: the pack goes
    assert len(packs) == 0


def test_a_variants_batch_lowers_the_rows_of_its_messages() -> None:
    """The gateway packs no more rows than the variant's batch, which the worker never
    exceeds in one model call; the outbox's own limit still caps a larger batch."""
    box = Outbox(max_rows=8)
    for rid in "abcde":
        box.add("small", _query(rid, 1), rid, max_rows=2)
    for rid in "fgh":
        box.add("large", _query(rid, 4), rid, max_rows=64)
    assert [[w.correlation_id for w in m] for m in box.take()] == [
        ["a", "b"],
        ["c", "d"],
        ["e"],
        ["f", "g"],
        ["h"],
    ]
    box.add("small", _query("i", 1), "i", max_rows=2)
    assert not box.full()
    box.add("small", _query("j", 1), "j", max_rows=2)
    assert box.full()

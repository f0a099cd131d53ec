"""The query clients' shared bookkeeping: replies awaited by correlation id, and
publisher confirms matched to the queries they settle."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from queues.confirms import PublishConfirms
from queues.errors import BrokerUnavailable
from queues.messages import Reply
from queues.replies import PendingReplies, no_answer, no_worker


def _reply(cid: str) -> Reply:
    return Reply(request_id=cid, ok=True, outputs=np.zeros((1, 1)))


def test_a_reply_completes_its_query_once_and_late_answers_change_nothing() -> None:
    async def scenario() -> None:
        pending = PendingReplies()
        future = pending.open("a")
        assert "a" in pending
        assert "b" not in pending
        pending.resolve("a", _reply("a"))
        pending.resolve("a", BrokerUnavailable("too late"))  # already answered
        pending.resolve("unknown", _reply("unknown"))  # nobody waits: ignored
        assert (await future).request_id == "a"
        pending.discard("a")
        assert "a" not in pending

    asyncio.run(scenario())


def test_failing_all_answers_every_waiting_query_and_forgets_them() -> None:
    async def scenario() -> None:
        pending = PendingReplies()
        first, second = pending.open("a"), pending.open("b")
        pending.resolve("b", _reply("b"))
        pending.fail_all(BrokerUnavailable("the gateway is shutting down"))
        with pytest.raises(BrokerUnavailable, match="shutting down"):
            await first
        assert (await second).request_id == "b"
        assert "a" not in pending
        assert "b" not in pending

    asyncio.run(scenario())


def test_confirms_settle_one_tag_or_every_tag_up_to_one() -> None:
    confirms = PublishConfirms()
    for cid in ("a", "b", "c", "d"):
        confirms.published(cid)  # tags 1..4
    assert confirms.settle(3, multiple=False) == ["c"]
    assert confirms.settle(3, multiple=False) == []  # settled already
    assert confirms.settle(2, multiple=True) == ["a", "b"]
    assert confirms.settle(9, multiple=True) == ["d"]


def test_a_new_channel_numbers_its_publishes_from_one_again() -> None:
    confirms = PublishConfirms()
    confirms.published("old-1")
    confirms.published("old-2")
    confirms.reset()
    confirms.published("new")
    assert confirms.settle(1, multiple=False) == ["new"]
    confirms.published("next")
    confirms.clear()
    assert confirms.settle(2, multiple=True) == []


def test_the_errors_name_the_queue_and_the_wait() -> None:
    assert "queue infaas.q" in no_worker("infaas.q").message
    late = no_answer("infaas.q", 0.25)
    assert "within 250 ms" in late.message
    assert late.code == "deadline_exceeded"

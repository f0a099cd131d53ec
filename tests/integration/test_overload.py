"""Overload on the real services: a variant pushed past its saturation becomes Overloaded
in live state, new model-less queries move to another eligible variant, and it returns to
Active once the pressure ends. How fast (the 3 s target) is measured by
``python -m bench.overload``, not here: this test waits generously."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from infaas.demo import DEMO_APP
from infaas.demo_models import load_validation
from registry.livestate import ACTIVE, OVERLOADED, VariantLoad
from tests.e2e_support import DEDICATED, Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]
OTHER = "digits-cnn.onnx-fp32.cpu-t2"  # the main worker serves it
# generous waits, the benchmark's (``--timeout-s 30``): a test on a busy machine waits for
# the behaviour; how fast it comes (median 1.71 s in the README) is the benchmark's figure
OVERLOAD_WITHIN_S = 30.0
RECOVER_WITHIN_S = 60.0


def _load_of(stack: Stack, variant: str) -> VariantLoad | None:
    for worker in stack.services.live.snapshot().workers.values():
        load = worker.variants.get(variant)
        if load is not None:
            return load
    return None


def _state_of(stack: Stack, variant: str) -> str | None:
    load = _load_of(stack, variant)
    return load.state if load is not None else None


def _seen(load: VariantLoad | None) -> str:
    """What the monitor saw, for a failure's message."""
    if load is None:
        return "not reported"
    return (
        f"{load.state} ({load.state_reason or '-'}): {load.qps:.0f} q/s, busy {load.busy:.2f}, "
        f"mean batch {load.mean_batch:.1f} of {load.max_batch}, backlog {load.backlog}"
    )


def _cheaper_per_query(stack: Stack, *variant_ids: str) -> str:
    """The variant the selector prefers among running ones: the least cost per query at
    batch 1 (dollars per hour × predicted latency), ties to the id, as registry/selector.py
    ranks them. Which of digits-cnn's two thread counts wins depends on how they profiled."""

    def cost(variant_id: str) -> tuple[float, str]:
        variant = stack.services.catalog.get_variant(variant_id)
        assert variant.profile is not None
        return variant.cost_per_hour * variant.profile.predict_latency_ms(1), variant_id

    return min(variant_ids, key=cost)


def _until_chosen(stack: Stack, path: str, query: dict[str, object], variant: str) -> None:
    """Ask until the gateway answers ``query`` with ``variant``: it sees a replica that
    joined or recovered at its next live-state refresh, and chooses another until then."""
    deadline, chosen = time.monotonic() + OVERLOAD_WITHIN_S, None
    while chosen != variant and time.monotonic() < deadline:
        chosen = httpx.post(path, json=query, timeout=30).json()["variant"]
        time.sleep(0.0 if chosen == variant else 0.5)
    assert chosen == variant, (
        f"the gateway kept choosing {chosen}; {variant}: {_seen(_load_of(stack, variant))}"
        f"; {chosen}: {_seen(_load_of(stack, str(chosen)))}"
    )


def test_overloaded_variant_is_avoided_then_recovers(services_e2e: Stack, tmp_path: Path) -> None:
    stack = services_e2e
    inputs, _ = load_validation(stack.demo.validation_path)
    row = inputs[:1].tolist()
    workers_before = len(stack.services.live.snapshot().workers)
    dedicated = stack.start_worker("--variants", DEDICATED, log=tmp_path / "dedicated.log")
    try:
        stack.wait_for_workers(workers_before + 1)
        # both digits-cnn variants now run: the strict query goes to the cheaper per query
        # (DEDICATED as they usually profile). DEDICATED is flooded: Overloaded, it is
        # avoided (the strict query goes to OTHER), and once recovered the strict query
        # goes where it went before.
        preferred = _cheaper_per_query(stack, DEDICATED, OTHER)
        strict = {"inputs": row, "min_accuracy": 0.995, "latency_ms": 1000}
        path = f"{stack.url}/v1/apps/{DEMO_APP}/infer"
        _until_chosen(stack, path, strict, preferred)

        # Each flood query is a full batch, so the replica runs full batches back to back
        # however fast this process can send: saturated by construction, not by outrunning
        # a replica the machine's other load may have slowed as much as the senders.
        profile = stack.services.catalog.get_variant(DEDICATED).profile
        assert profile is not None
        full_batch = {"inputs": inputs[: profile.batch_limit].tolist()}
        stop = threading.Event()

        def flood() -> None:
            with httpx.Client(timeout=30) as client:
                while not stop.is_set():
                    client.post(f"{stack.url}/v1/variants/{DEDICATED}/infer", json=full_batch)

        threads = [threading.Thread(target=flood) for _ in range(16)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        timeline: list[tuple[float, VariantLoad | None]] = []
        try:
            while time.monotonic() - started < OVERLOAD_WITHIN_S:
                load = _load_of(stack, DEDICATED)
                timeline.append((time.monotonic() - started, load))
                if load is not None and load.state == OVERLOADED:
                    break
                time.sleep(0.1)
            seen = "\n".join(f"{t_s:.1f} s: {_seen(each)}" for t_s, each in timeline[::10])
            final = timeline[-1][1]
            assert final is not None, seen
            assert final.state == OVERLOADED, seen
            time.sleep(0.7)  # the gateway re-reads live state every 0.5 s
            moved = httpx.post(path, json=strict, timeout=30).json()
            assert moved["variant"] == OTHER, moved
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
        ended = time.monotonic()
        recovered_after_s = None
        while time.monotonic() - ended < RECOVER_WITHIN_S:
            if _state_of(stack, DEDICATED) == ACTIVE:
                recovered_after_s = time.monotonic() - ended
                break
            time.sleep(0.2)
        assert recovered_after_s is not None, "the variant stayed Overloaded after the load"
        time.sleep(0.7)
        _until_chosen(stack, path, strict, preferred)
    finally:
        os.killpg(dedicated.pid, signal.SIGTERM)
        dedicated.wait(30)

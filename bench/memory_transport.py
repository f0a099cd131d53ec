"""The embedded broker: kombu's memory transport polled every 1 ms (as the embedded
default ran it) against the transport woken by arrivals (queues/memory_transport.py),
in one process, one after the other.

    python -m bench.memory_transport [--idle-consumers 18] [--idle-s 5]
                                     [--round-trips 2000] [--out FILE]

Per transport: the CPU that ``--idle-consumers`` consumers spend waiting on empty
queues (the demo's embedded stack runs 18 replicas and a reply drainer), and the round
trip of a message to an echoing consumer and back, with those idle consumers beside it.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kombu import Connection, Consumer, Producer, Queue
from kombu.message import Message

from queues.memory_transport import Transport

POLLED_INTERVAL_S = 0.001  # what queues/memory_rpc.py used before


def polled() -> Connection:
    return Connection("memory://", transport_options={"polling_interval": POLLED_INTERVAL_S})


def woken() -> Connection:
    return Connection("memory://", transport=Transport)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _idle_consumer(connect: Callable[[], Connection], stop: threading.Event) -> None:
    name = f"idle.{uuid.uuid4().hex[:10]}"
    with connect() as conn, Consumer(conn.channel(), [Queue(name)], on_message=print):
        _drain_until(conn, stop)


def _drain_until(conn: Connection, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            conn.drain_events(timeout=0.5)
        except TimeoutError:
            continue


def _echo(connect: Callable[[], Connection], name: str, stop: threading.Event) -> None:
    with connect() as conn:
        producer = Producer(conn.channel())

        def on_message(message: Message) -> None:
            producer.publish(message.body, routing_key=f"{name}.back", serializer=None)
            message.ack()

        with Consumer(conn.channel(), [Queue(name)], on_message=on_message):
            _drain_until(conn, stop)


def measure(
    connect: Callable[[], Connection], idle_consumers: int, idle_s: float, trips: int
) -> dict[str, Any]:
    stop = threading.Event()
    threads = [
        threading.Thread(target=_idle_consumer, args=(connect, stop), daemon=True)
        for _ in range(idle_consumers)
    ]
    for thread in threads:
        thread.start()
    time.sleep(1.0)  # all waiting
    before, started = _cpu_s(), time.monotonic()
    time.sleep(idle_s)
    idle_cpu_per_s = (_cpu_s() - before) / (time.monotonic() - started)

    name = f"echo.{uuid.uuid4().hex[:10]}"
    with connect() as conn:
        Queue(name)(conn.channel()).declare()
        back = Queue(f"{name}.back")
        back(conn.channel()).declare()
        echo = threading.Thread(target=_echo, args=(connect, name, stop), daemon=True)
        echo.start()
        producer = Producer(conn.channel())
        got: list[bytes] = []
        round_trips_us: list[float] = []

        def on_back(message: Message) -> None:
            got.append(message.body)
            message.ack()

        with Consumer(conn.channel(), [back], on_message=on_back):
            for _ in range(trips):
                sent = time.perf_counter()
                producer.publish(b"x", routing_key=name, serializer=None)
                while not got:
                    conn.drain_events(timeout=5)
                got.clear()
                round_trips_us.append((time.perf_counter() - sent) * 1e6)
    stop.set()
    for thread in [*threads, echo]:
        thread.join(5)
    round_trips_us.sort()
    return {
        "idle_consumers": idle_consumers,
        "idle_cpu_s_per_s": round(idle_cpu_per_s, 4),
        "round_trip_us_p50": round(statistics.median(round_trips_us), 1),
        "round_trip_us_p99": round(round_trips_us[int(len(round_trips_us) * 0.99) - 1], 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle-consumers", type=int, default=18)
    parser.add_argument("--idle-s", type=float, default=5.0)
    parser.add_argument("--round-trips", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path("bench/results/memory_transport.json"))
    args = parser.parse_args(argv)
    if args.idle_consumers < 0 or args.idle_s <= 0 or args.round_trips < 1:
        parser.error("--idle-consumers >= 0, --idle-s > 0 and --round-trips >= 1")
    results = {
        label: measure(connect, args.idle_consumers, args.idle_s, args.round_trips)
        for label, connect in (("polled_1ms", polled), ("woken", woken))
    }
    polled_r, woken_r = results["polled_1ms"], results["woken"]
    doc = {
        "benchmark": "memory_transport",
        "command": (
            f"python -m bench.memory_transport --idle-consumers {args.idle_consumers} "
            f"--idle-s {args.idle_s:g} --round-trips {args.round_trips}"
        ),
        "results": results,
        "idle_cpu_ratio_woken_to_polled": round(
            woken_r["idle_cpu_s_per_s"] / max(polled_r["idle_cpu_s_per_s"], 1e-9), 4
        ),
        "round_trip_p50_ratio_woken_to_polled": round(
            woken_r["round_trip_us_p50"] / polled_r["round_trip_us_p50"], 3
        ),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()

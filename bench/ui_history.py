"""The console's last-hour history (api_gateway/history.py) at scale: memory and the time
of the once-a-second sample with many apps busy every second, on a simulated clock.

Each simulated second every app answers one query per variant through the gateway's own
accounting, then the history samples; the figures are the sample's time (median and
p99 over the run) and the memory the process grew by, against the bound the module
states (an hour: 300 points a second plus 330 of ten seconds per app).

    python -m bench.ui_history --apps 200 --variants-per-app 3 --seconds 3600

Writes bench/results/ui_history.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import time
from pathlib import Path

import psutil

from api_gateway.accounting import Accounting
from api_gateway.history import LoadHistory

RESULTS = Path(__file__).resolve().parent / "results" / "ui_history.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--apps", type=int, default=200)
    parser.add_argument("--variants-per-app", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=3600)
    args = parser.parse_args()
    process = psutil.Process()
    accounting, history = Accounting(), LoadHistory(max_apps=args.apps)
    apps = [f"app{i:04d}" for i in range(args.apps)]
    variants = {a: [f"{a}-v{v}" for v in range(args.variants_per_app)] for a in apps}

    def one_second(second: int) -> float:
        for app in apps:
            for v, variant in enumerate(variants[app]):
                accounting.answered(
                    app, variant, "cpu",
                    elapsed_ms=1.0 + second % 7 + v, latency_ms=5.0, min_accuracy=0.9,
                    accuracy=0.95, cost_usd=1e-6,
                )  # fmt: skip
        started = time.perf_counter()
        history.sample(accounting.apps, 1_000_000.0 + second)
        return (time.perf_counter() - started) * 1000

    one_second(-1)  # every app's first tallies, before the memory is read
    gc.collect()
    before = process.memory_info().rss
    times_ms = sorted(one_second(s) for s in range(args.seconds))
    gc.collect()
    grown_mb = (process.memory_info().rss - before) / 1e6
    points = len(history.since(apps[0]))
    result = {
        "command": f"python -m bench.ui_history --apps {args.apps} "
        f"--variants-per-app {args.variants_per_app} --seconds {args.seconds}",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "sample_ms": {
            "median": round(statistics.median(times_ms), 3),
            "p99": round(times_ms[int(0.99 * (len(times_ms) - 1))], 3),
            "max": round(times_ms[-1], 3),
        },
        "points_per_app": points,
        "memory_grown_mb": round(grown_mb, 1),
        "note": "the memory includes the accounting's own growth (its latency histograms)",
    }
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

"""Closed-loop cells for the pipeline benchmark: each route (a server, a path and a body,
with the processes that serve it) at each client count, interleaved in rounds so the
machine's drift falls on every route alike; throughput, latency, and CPU time per
answered query and memory of each route's own process trees (bench/procstat.py).

Routes: ours pinned (``/v1/variants/{id}/infer``), ours model-less
(``/v1/apps/{app}/infer``), ours model-less with one message per query (a second gateway
with ``INFAAS_EDGE_BATCH_ROWS=1``), ours model-less through FastAPI alone (a third
gateway with ``INFAAS_QUERY_FAST_PATH=false``) and NVIDIA Triton with dynamic batching
(bench/triton_peer.py), each against the same model.
"""

from __future__ import annotations

import asyncio
import math
import statistics
from dataclasses import dataclass
from typing import Any

from bench import oip, procstat
from bench.loadgen import LoadResult, closed_loop

CPU_TARGET_MS = 0.22  # gateway + worker CPU per query at CPU_TARGET_CLIENTS clients
CPU_TARGET_CLIENTS = 32
MODELLESS_TARGET_RATIO = 0.95  # model-less throughput within 5 % of the pinned route's
# (numerator, denominator) route pairs whose throughput ratios are reported
RATIOS = (
    ("modelless", "pinned"),
    ("modelless", "modelless-unpacked"),
    ("modelless", "modelless-fastapi"),
    ("pinned", "triton"),
    ("modelless", "triton"),
)


@dataclass(frozen=True)
class Route:
    url: str
    path: str
    body: bytes
    watch: procstat.ProcWatch  # the processes that serve this route


def run_cells(
    routes: dict[str, Route], clients: tuple[int, ...], rounds: int, duration_s: float
) -> dict[str, Any]:
    """Each route at each client count for ``duration_s`` in all, in ``rounds`` rounds:
    per round, every client count in turn, and at each the routes in an order rotated
    each round. Throughput is the median of the rounds, latency pools them, the process
    figures are the rounds' medians; a ratio is the median of the per-round ratios."""
    names = list(routes)
    loads: dict[str, dict[str, list[LoadResult]]] = {
        n: {str(c): [] for c in clients} for n in names
    }
    procs: dict[str, dict[str, list[dict[str, Any]]]] = {
        n: {str(c): [] for c in clients} for n in names
    }
    for r in routes.values():  # warm every route
        asyncio.run(closed_loop(r.url, r.path, r.body, concurrency=4, duration_s=1.0, record=False))
    for turn in range(rounds):
        order = names[turn % len(names) :] + names[: turn % len(names)]
        for c in clients:
            for name in order:
                r = routes[name]
                finish = r.watch.begin()
                result = asyncio.run(
                    closed_loop(
                        r.url, r.path, r.body, concurrency=c, duration_s=duration_s / rounds
                    )
                )
                procs[name][str(c)].append(finish(result.ok))
                loads[name][str(c)].append(result)
    figures = {
        name: {
            key: oip.pooled(results) | {"procs": procstat.median_figures(procs[name][key])}
            for key, results in by_clients.items()
        }
        for name, by_clients in loads.items()
    }
    ratios = {
        f"{a}/{b}": _ratio(figures[a], figures[b])
        for a, b in RATIOS
        if a in figures and b in figures
    }
    for name, by_clients in figures.items():
        for key, cell in by_clients.items():
            if cell["errors"]:
                print(f"{name} at {key} clients: errors such as {cell.get('error_samples')}")
    return {
        "routes": figures,
        "throughput_ratio_modelless_to_pinned": ratios.get("modelless/pinned", {}),
        "throughput_ratios": ratios,
        "target_ratio": MODELLESS_TARGET_RATIO,
        "rounds": rounds,
        "cell_s": round(duration_s / rounds, 3),
    }


def _ratio(top: dict[str, Any], bottom: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key in top:
        pairs = zip(top[key]["rounds_qps"], bottom[key]["rounds_qps"], strict=True)
        out[key] = round(statistics.median(a / max(b, 1e-9) for a, b in pairs), 3)
    return out


def cpu_per_query(cells: dict[str, Any]) -> dict[str, Any]:
    """CPU ms per answered query, per route, client count and process tree; the target
    is gateway + worker at 32 clients on the model-less route."""
    table = {
        name: {
            c: {proc: f["cpu_ms_per_query"] for proc, f in cell["procs"].items()}
            for c, cell in by_clients.items()
        }
        for name, by_clients in cells["routes"].items()
    }
    at_target = table.get("modelless", {}).get(str(CPU_TARGET_CLIENTS), {}).get("gateway+worker")
    return {
        "ms": table,
        "note": procstat.SHARED_NOTE,
        "target_gateway_worker_ms": CPU_TARGET_MS,
        "target_clients": CPU_TARGET_CLIENTS,
        "met": at_target is not None and at_target <= CPU_TARGET_MS,
    }


def rss_mb(cells: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Each process tree's resident memory: idle (the least seen before a cell) and
    under load (the most sampled during any)."""
    out: dict[str, dict[str, float]] = {}
    for by_clients in cells["routes"].values():
        for cell in by_clients.values():
            for proc, f in cell["procs"].items():
                if "rss_mb_idle" not in f or proc == "all":
                    continue
                seen = out.setdefault(proc, {"idle": f["rss_mb_idle"], "load": f["rss_mb_load"]})
                seen["idle"] = min(seen["idle"], f["rss_mb_idle"])
                seen["load"] = max(seen["load"], f["rss_mb_load"])
    return out


def _ms(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) and not math.isnan(value) else "-"


def report_cells(result: dict[str, Any]) -> None:
    cells, cpu = result["cells"], result["cpu_per_query"]
    print(
        f"closed loop, {cells['rounds']} interleaved rounds of {cells['cell_s']:g} s per "
        f"cell (medians); CPU ms per answered query per process tree ({cpu['note']})"
    )
    procs = ("gateway", "worker", "gateway+worker", "triton", "broker", "redis", "all", "client")
    heads = ("gw", "worker", "gw+wk", "triton", "broker", "redis", "all", "client")
    print(
        f"{'route':18} {'clients':>7} {'q/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} |"
        + "".join(f" {h:>7}" for h in heads)
    )
    for name, by_clients in cells["routes"].items():
        for c, m in by_clients.items():
            row = cpu["ms"][name][c]
            print(
                f"{name:18} {c:>7} {m['throughput_qps']:7.0f} {m['p50_ms']:7.2f} "
                f"{m['p99_ms']:7.2f} {m['errors']:6} |"
                + "".join(f" {_ms(row.get(p)):>7}" for p in procs)
            )
    for pair, by_clients in cells.get("throughput_ratios", {}).items():
        print(
            f"throughput {pair}: "
            + ", ".join(f"{c} clients {r:.3f}" for c, r in by_clients.items())
        )
    print(f"target: model-less / pinned >= {cells['target_ratio']}")
    print(
        f"gateway + worker CPU per query at {cpu['target_clients']} clients, model-less: "
        f"target <= {cpu['target_gateway_worker_ms']} ms, met={cpu['met']}"
    )
    print(f"{'RSS MB':16} {'idle':>8} {'load':>8}")
    for proc, m in result["rss_mb"].items():
        print(f"{proc:16} {m['idle']:8.1f} {m['load']:8.1f}")

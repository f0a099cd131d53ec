"""What the web console's pages read that the other routes do not answer (pure): an
overview of many apps with their live figures, the workers and what each holds, paged so
that no answer grows with the catalog (routes/ui.py does the reading). A caller sees its
own tenant's apps and variants under the names it gives them (registry/tenancy.py); an
admin sees every tenant's, by their internal ids."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from api_gateway.history import LoadHistory
from queues.errors import InvalidRequest
from registry.live_docs import ClassDemand
from registry.livestate import LiveSnapshot, WorkerReport
from registry.tenancy import Namespace
from registry.types import READY, CatalogSnapshot

MAX_PER_PAGE = 200
MAX_PAGE = 1_000_000  # beyond any catalog; and the page number stays a 64-bit integer
DEFAULT_PER_PAGE = 50
MAX_FILTER_CHARS = 128


@dataclass(frozen=True, slots=True)
class Page:
    """A 1-based page of ``per_page`` rows."""

    number: int = 1
    per_page: int = DEFAULT_PER_PAGE

    @classmethod
    def of(cls, number: int, per_page: int) -> Page:
        if not 1 <= number <= MAX_PAGE:
            raise InvalidRequest(
                f"page must be between 1 and {MAX_PAGE:,}, not {number}; pages count from 1"
            )
        if not 1 <= per_page <= MAX_PER_PAGE:
            raise InvalidRequest(
                f"per_page must be between 1 and {MAX_PER_PAGE}, not {per_page}; "
                "ask for the next page instead"
            )
        return cls(number, per_page)

    def cut(self, rows: Sequence[Any]) -> tuple[Sequence[Any], dict[str, int]]:
        start = (self.number - 1) * self.per_page
        pages = max(1, math.ceil(len(rows) / self.per_page))
        meta = {"page": self.number, "per_page": self.per_page, "total": len(rows), "pages": pages}
        return rows[start : start + self.per_page], meta


def check_filter(text: str) -> str:
    if len(text) > MAX_FILTER_CHARS:
        raise InvalidRequest(
            f"the filter is {len(text)} characters long; at most {MAX_FILTER_CHARS}"
        )
    return text.strip().lower()


def objectives(demand: Iterable[ClassDemand]) -> dict[str, dict[str, float | None]]:
    """Per app, the tightest latency objective and highest accuracy floor asked for in
    the demand window (what its p99 and accuracy delivered are held against)."""
    out: dict[str, dict[str, float | None]] = {}
    for d in demand:
        r = d.requirements
        seen = out.setdefault(r.app, {"latency_ms": None, "min_accuracy": None, "qps": 0.0})
        if r.latency_ms is not None:
            seen["latency_ms"] = min(r.latency_ms, seen["latency_ms"] or math.inf)
        if r.min_accuracy is not None:
            seen["min_accuracy"] = max(r.min_accuracy, seen["min_accuracy"] or 0.0)
        seen["qps"] = (seen["qps"] or 0.0) + d.qps
    return out


def app_row(
    app: str,
    catalog: CatalogSnapshot,
    live: LiveSnapshot,
    history: LoadHistory,
    objective: dict[str, float | None] | None,
    now_s: float,
    models: int,
    names: Namespace,
) -> dict[str, Any]:
    """An app (its internal id) on the overview: its size, what runs, what it costs,
    what it gets."""
    variants = catalog.variants_of_app(app)
    replicas = running = 0
    cost_per_hour = 0.0
    for variant in variants:
        placed = sum(p.load.replicas for p in live.placements(variant.id))
        if placed:
            running += 1
            replicas += placed
            cost_per_hour += placed * variant.cost_per_hour
    return {
        "app": names.outside(app),
        "models": models,
        "variants": len(variants),
        "ready_variants": sum(1 for v in variants if v.status == READY),
        "running_variants": running,
        "replicas": replicas,
        "cost_per_hour_usd": cost_per_hour,
        "objective": objective or {"latency_ms": None, "min_accuracy": None, "qps": 0.0},
        "live": history.recent(app, now_s),
    }


def overview(
    catalog: CatalogSnapshot,
    live: LiveSnapshot,
    history: LoadHistory,
    demand: Iterable[ClassDemand],
    now_s: float,
    *,
    apps_page: Page,
    workers_page: Page,
    app_filter: str = "",
    names: Namespace | None = None,
) -> dict[str, Any]:
    """One page of the caller's apps (by the names it sees, those containing
    ``app_filter``) with their live figures, one page of workers (holding only the
    caller's variants), and the totals. ``names`` None: everything, as an admin."""
    names = names or Namespace("default", everything=True)
    apps = sorted(
        (names.outside(a), a)
        for a in catalog.apps
        if names.owns(a) and app_filter in names.outside(a).lower()
    )
    shown, apps_meta = apps_page.cut(apps)
    wanted = objectives(demand)
    models: dict[str, int] = {}
    for model in catalog.models.values():
        models[model.app] = models.get(model.app, 0) + 1
    workers = sorted(live.workers.values(), key=lambda w: (w.hardware, w.worker_id))
    shown_workers, workers_meta = workers_page.cut(workers)
    return {
        "now_s": now_s,
        "totals": {
            "apps": sum(1 for a in catalog.apps if names.owns(a)),
            "models": sum(1 for m in catalog.models if names.owns(m)),
            "variants": sum(1 for v in catalog.variants if names.owns(v)),
            "workers": len(live.workers),
        },
        "apps": [
            app_row(a, catalog, live, history, wanted.get(a), now_s, models.get(a, 0), names)
            for _, a in shown
        ],
        "apps_page": apps_meta,
        "workers": [worker_row(w, live.taken_ms, names) for w in shown_workers],
        "workers_page": workers_meta,
        "hardware": hardware_rows(workers),
    }


def worker_row(worker: WorkerReport, now_ms: float, names: Namespace) -> dict[str, Any]:
    """A worker and the variants of the caller's it holds (others' are counted only)."""
    mine = [v for v in worker.variants.values() if names.owns(v.variant)]
    return {
        "worker": worker.worker_id,
        "hardware": worker.hardware,
        "host": worker.host,
        "cores": worker.cores,
        "cpu_util": worker.cpu_util,
        "gpu_util": worker.gpu_util,
        "memory_mb": worker.memory_mb,
        "gpu_memory_mb": worker.gpu_memory_mb,
        "heartbeat_age_s": max(0.0, (now_ms - worker.heartbeat_ms) / 1000.0)
        if worker.heartbeat_ms
        else None,
        "others_replicas": sum(
            v.replicas for v in worker.variants.values() if not names.owns(v.variant)
        ),
        "holds": [
            {
                "variant": names.outside(load.variant),
                "app": names.outside(load.app),
                "state": load.state,
                "replicas": load.replicas,
                "qps": load.qps,
                "busy": load.busy,
            }
            for load in sorted(mine, key=lambda v: v.variant)
        ],
    }


def hardware_rows(workers: Iterable[WorkerReport]) -> list[dict[str, Any]]:
    """Per hardware kind: how many workers, their mean use, how many replicas they hold."""
    kinds: dict[str, list[WorkerReport]] = {}
    for w in workers:
        kinds.setdefault(w.hardware, []).append(w)
    return [
        {
            "hardware": kind,
            "workers": len(group),
            "mean_cpu_util": sum(w.cpu_util for w in group) / len(group),
            "mean_gpu_util": sum(w.gpu_util for w in group) / len(group),
            "replicas": sum(v.replicas for w in group for v in w.variants.values()),
        }
        for kind, group in sorted(kinds.items())
    ]

"""Choosing the variant for a query (pure; runs in the gateway on every query).

Input: the query's requirements and a :class:`SelectorIndex`, built from a catalog
snapshot and a live-state snapshot whenever either changes (not per query). Output: a
:class:`Decision` that names the variant and says why, or one of the errors of
:mod:`queues.errors` that says which requirement cannot be met and what is on offer.

Rules (INFAAS.md, issue 4): precedence variant > model > app. A variant is eligible
when it takes the query's batch, meets the accuracy floor, its predicted latency at
this batch (plus the pipeline's overhead) fits the latency objective and its cost fits
the cost cap. Among eligible variants running healthy somewhere, the cheapest per query
wins (cost per hour × latency at this batch ÷ batch), ties to the closest fit, then the
least-loaded worker. If none runs, the cold one with the least load time + latency
(then cost) is chosen and its load requested; meanwhile a loaded variant that still
meets the accuracy floor serves the query if there is one.

Where the scaler's last plan splits the query's class between two or more running
eligible variants (:mod:`registry.routing`), the query goes where the plan deals it
instead of always to the cheapest, so each variant gets the load its replicas were sized for.
"""

from __future__ import annotations

from dataclasses import dataclass

from queues.errors import (
    BatchTooLarge,
    NoEligibleVariant,
    UnknownApp,
    UnknownModel,
    UnknownVariant,
)
from registry.live_docs import class_key
from registry.livestate import HEALTHY_STATES, LOADING, OVERLOADED, LiveSnapshot
from registry.pricing import usd_for
from registry.routing import RoundRobin, Routes
from registry.types import CatalogSnapshot, Variant

UNHEALTHY_PREFIX = "running only where it is "


@dataclass(frozen=True, slots=True)
class Requirements:
    app: str | None = None
    model: str | None = None
    variant: str | None = None
    batch: int = 1
    latency_ms: float | None = None
    min_accuracy: float | None = None
    max_cost_per_hour: float | None = None


@dataclass(frozen=True, slots=True)
class Entry:
    """A ready variant with what the selector needs about it, precomputed."""

    variant: Variant
    accuracy: float
    cost_per_hour: float
    max_batch: int
    load_ms: float
    healthy_replicas: int
    placed_states: tuple[str, ...]
    least_loaded_worker: str | None
    latencies: tuple[float, ...]  # predicted p50 at batch b is latencies[b], b ≤ max_batch
    running: bool
    loadable: bool = True  # a live worker of its hardware could load it now

    def latency_ms(self, batch: int) -> float:
        if 0 < batch < len(self.latencies):
            return self.latencies[batch]
        profile = self.variant.profile
        return profile.predict_latency_ms(batch) if profile is not None else float("inf")

    def cost_per_query_usd(self, batch: int) -> float:
        return usd_for(self.cost_per_hour, self.latency_ms(batch) / batch)


@dataclass(frozen=True, slots=True)
class Candidate:
    """One variant as the selector saw it for a query (for ``explain``)."""

    variant: str
    eligible: bool
    running: bool
    accuracy: float
    predicted_latency_ms: float
    cost_per_hour: float
    cost_per_query_usd: float
    reason: str


@dataclass(frozen=True, slots=True)
class Decision:
    variant: Variant
    reason: str
    worker: str | None = None
    load_request: str | None = None
    candidates: tuple[Candidate, ...] = ()
    dealt: bool = False  # split by the scaler's plan: the next query may go elsewhere


class SelectorIndex:
    """Catalog and live state, indexed per app and model for cheap selection.

    Rebuilt whenever the gateway re-reads live state (twice a second): pass the previous
    index, and the per-variant latency tables of an unchanged catalog are reused, so a
    rebuild costs only the live-state part.
    """

    def __init__(
        self,
        catalog: CatalogSnapshot,
        live: LiveSnapshot,
        *,
        overhead_ms: float = 0.5,
        previous: SelectorIndex | None = None,
        routes: Routes | None = None,
    ) -> None:
        self.catalog = catalog
        self.live = live
        self.overhead_ms = overhead_ms
        self.routes = routes or Routes()
        # the rotation carries over rebuilds, so a split stays even across refreshes
        self.round_robin: RoundRobin = (
            previous.round_robin if previous is not None else RoundRobin()
        )
        reuse = previous is not None and previous.catalog is catalog
        self.latency_tables: dict[str, tuple[float, ...]] = (
            previous.latency_tables if previous is not None and reuse else {}
        )
        entries = []
        live_hardware = frozenset(w.hardware for w in live.workers.values() if w.loads_on_demand)
        for variant in catalog.variants.values():
            if not variant.ready:
                continue
            table = self.latency_tables.get(variant.id)
            if table is None:
                table = self.latency_tables[variant.id] = _latency_table(variant)
            entries.append(_entry(variant, live, table, live_hardware))
        entries.sort(key=lambda e: e.variant.id)
        self.by_id: dict[str, Entry] = {e.variant.id: e for e in entries}
        by_app: dict[str, list[Entry]] = {}
        by_model: dict[str, list[Entry]] = {}
        for entry in entries:
            by_app.setdefault(entry.variant.app, []).append(entry)
            by_model.setdefault(entry.variant.model, []).append(entry)
        self.by_app = {k: tuple(v) for k, v in by_app.items()}
        self.by_model = {k: tuple(v) for k, v in by_model.items()}


def _latency_table(variant: Variant) -> tuple[float, ...]:
    profile = variant.profile
    assert profile is not None
    return (0.0, *(profile.predict_latency_ms(b) for b in range(1, profile.max_batch + 1)))


def _entry(
    variant: Variant,
    live: LiveSnapshot,
    latencies: tuple[float, ...],
    live_hardware: frozenset[str],
) -> Entry:
    assert variant.profile is not None
    placements = live.placements(variant.id)
    healthy = [p for p in placements if p.load.state in HEALTHY_STATES]
    least = min(
        healthy,
        key=lambda p: (p.load.outstanding / max(p.load.replicas, 1), p.worker.worker_id),
        default=None,
    )
    profile = variant.profile
    healthy_replicas = sum(p.load.replicas for p in healthy)
    return Entry(
        variant=variant,
        accuracy=profile.accuracy,
        cost_per_hour=variant.cost_per_hour,
        max_batch=profile.max_batch,
        load_ms=profile.load_ms,
        healthy_replicas=healthy_replicas,
        placed_states=tuple(p.load.state for p in placements),
        least_loaded_worker=least.worker.worker_id if least else None,
        latencies=latencies,
        running=healthy_replicas > 0,
        loadable=variant.hardware in live_hardware,
    )


def _verdict(entry: Entry, req: Requirements, overhead_ms: float) -> str:
    """Empty when ``entry`` is eligible, else why not."""
    if req.batch > entry.max_batch:
        return f"takes at most {entry.max_batch} inputs per query, this one has {req.batch}"
    if req.min_accuracy is not None and entry.accuracy < req.min_accuracy:
        return f"accuracy {entry.accuracy:.4f} < {req.min_accuracy:.4f}"
    if req.latency_ms is not None:
        predicted = entry.latency_ms(req.batch) + overhead_ms
        if predicted > req.latency_ms:
            return (
                f"predicted latency {predicted:.2f} ms at batch {req.batch} > {req.latency_ms:g} ms"
            )
    if req.max_cost_per_hour is not None and entry.cost_per_hour > req.max_cost_per_hour:
        return f"cost {entry.cost_per_hour:.4f} $/h > {req.max_cost_per_hour:g} $/h"
    if entry.placed_states and not entry.running:
        return UNHEALTHY_PREFIX + "/".join(sorted(set(entry.placed_states)))
    return ""


def _candidates_for(index: SelectorIndex, req: Requirements) -> tuple[tuple[Entry, ...], str]:
    catalog = index.catalog
    if req.model is not None:
        if req.model not in catalog.models:
            raise UnknownModel(f"no model named {req.model!r}; GET /v1/apps lists the models")
        return index.by_model.get(req.model, ()), f"model {req.model}"
    if req.app is None or req.app not in catalog.apps:
        raise UnknownApp(f"no app named {req.app!r}; GET /v1/apps lists the apps")
    return index.by_app.get(req.app, ()), f"app {req.app}"


def select(index: SelectorIndex, req: Requirements, *, explain: bool = False) -> Decision:
    if req.variant is not None:
        return _select_variant(index, req)
    entries, scope = _candidates_for(index, req)
    if not entries:
        raise NoEligibleVariant(
            f"{scope} has no ready variant yet; register a model or wait for its profiling"
        )
    largest = max(e.max_batch for e in entries)
    if req.batch > largest:
        raise BatchTooLarge(
            f"{req.batch} inputs in one query, but the largest batch any variant of {scope} "
            f"takes is {largest}; split the query",
            details={"max_batch": largest},
        )
    best_running, best_cold, verdicts = _rank(entries, req, index.overhead_ms, explain=explain)
    routed = _routed(index, req) if index.routes else None
    if routed is not None:
        chosen, reason, _ = routed
        load_request = None
    elif best_running is not None:
        chosen, reason = best_running, "cheapest per query among running eligible variants"
        load_request = None
    elif best_cold is not None:
        fill_in = _fill_in(entries, req)
        load_request = best_cold.variant.id
        if fill_in is not None:
            chosen = fill_in
            reason = (
                f"{best_cold.variant.id} fits best but is not running (load requested); "
                "served meanwhile by a running variant that meets the accuracy floor"
            )
        else:
            chosen = best_cold
            reason = (
                "no eligible variant is running; the cheapest of those soonest to load "
                "and answer was chosen"
            )
    else:
        verdicts = {e.variant.id: _verdict(e, req, index.overhead_ms) for e in entries}
        raise _no_eligible(entries, req, scope, verdicts, index.overhead_ms)
    candidates = _explain(entries, req, verdicts, chosen) if explain else ()
    return Decision(
        variant=chosen.variant,
        reason=reason,
        worker=chosen.least_loaded_worker,
        load_request=load_request,
        candidates=candidates,
        dealt=routed is not None and routed[2],
    )


def _rank(
    entries: tuple[Entry, ...], req: Requirements, overhead_ms: float, *, explain: bool
) -> tuple[Entry | None, Entry | None, dict[str, str]]:
    """The best running and the best cold eligible entry (and, to explain, why the others
    are not). This runs on every query: the checks are inlined and no text is built."""
    batch, floor, cap = req.batch, req.min_accuracy, req.max_cost_per_hour
    limit = None if req.latency_ms is None else req.latency_ms - overhead_ms
    best_running: Entry | None = None
    best_running_key: tuple[float, float, str] | None = None
    colds: list[_Cold] = []
    for entry in entries:
        if (
            batch > entry.max_batch
            or (floor is not None and entry.accuracy < floor)
            or (cap is not None and entry.cost_per_hour > cap)
        ):
            continue
        latency = entry.latencies[batch]
        if limit is not None and latency > limit:
            continue
        if entry.running:
            # cheapest per query, ties to the closest fit (least slack), then the id
            key = (entry.cost_per_hour * latency / batch, -latency, entry.variant.id)
            if best_running_key is None or key < best_running_key:
                best_running, best_running_key = entry, key
        else:
            cost = entry.cost_per_hour * latency / batch
            colds.append(
                (not entry.loadable, entry.load_ms + latency, cost, entry.variant.id, entry)
            )
    verdicts = {e.variant.id: _verdict(e, req, overhead_ms) for e in entries} if explain else {}
    return best_running, _soon_and_cheap(colds), verdicts


# (no live worker could load it, load + answer ms, cost per query, id, entry)
_Cold = tuple[bool, float, float, str, Entry]
# Cold variants that would answer within this much of the soonest count as equally soon,
# and the cheapest of them is loaded: a 2-thread copy that loads 0.2 ms sooner is not
# worth twice the cost per hour it goes on costing once loaded.
COLD_TIE_MS = 5.0
COLD_TIE_FRACTION = 0.02


def _soon_and_cheap(colds: list[_Cold]) -> Entry | None:
    """The cold variant to load: among those a live worker could load (else all), the
    cheapest per query of those that would answer about as soon as the soonest."""
    if not colds:
        return None
    loadable = [c for c in colds if not c[0]] or colds
    soonest = min(c[1] for c in loadable)
    tie = soonest + max(COLD_TIE_MS, soonest * COLD_TIE_FRACTION)
    return min((c for c in loadable if c[1] <= tie), key=lambda c: (c[2], c[1], c[3]))[4]


def _routed(index: SelectorIndex, req: Requirements) -> tuple[Entry, str, bool] | None:
    """The variant the scaler's plan sends this query to, when the plan routes the
    query's class to variants that run and are eligible now — healthy ones first, else
    Overloaded ones (and whether it was dealt between several)."""
    if req.app is None or req.model is not None:
        return None
    key = class_key(req.app, req.latency_ms, req.min_accuracy, req.max_cost_per_hour)
    route = index.routes.get(key)
    if route is None:
        return None
    limit = None if req.latency_ms is None else req.latency_ms - index.overhead_ms
    usable = []
    strained = []
    for vid, qps in route:
        entry = index.by_id.get(vid)
        if (
            entry is None
            or entry.variant.app != req.app
            or req.batch > entry.max_batch
            or (req.min_accuracy is not None and entry.accuracy < req.min_accuracy)
            or (req.max_cost_per_hour is not None and entry.cost_per_hour > req.max_cost_per_hour)
            or (limit is not None and entry.latencies[req.batch] > limit)
        ):
            continue
        if entry.running:
            usable.append((entry, qps))
        elif OVERLOADED in entry.placed_states:
            strained.append((entry, qps))
    # Planned variants that are all Overloaded still serve the class: the plan gave them
    # its load and the scaler grows them. Spilling it onto a variant the plan sized for
    # other classes (or none) would overload that one too, and at a slower variant's
    # latency a tight class misses its objective there.
    note = ""
    if not usable and strained:
        usable, note = strained, "; its variants are Overloaded"
    if not usable:
        return None  # nothing planned runs yet: the selector's own rule decides
    if len(usable) == 1:
        return usable[0][0], f"routed by the scaler's plan (all of class {key}{note})", False
    vid = index.round_robin.pick(key, [(e.variant.id, q) for e, q in usable])
    total = sum(q for _, q in usable)
    entry, qps = next((e, q) for e, q in usable if e.variant.id == vid)
    return entry, f"routed by the scaler's plan ({qps / total:.0%} of class {key}{note})", True


def _fill_in(entries: tuple[Entry, ...], req: Requirements) -> Entry | None:
    """A loaded variant that meets the accuracy floor, batch and cost cap: the fastest
    healthy one, else the fastest Overloaded or Interfered one (a slow answer beats no
    answer while the better variant loads)."""
    usable = [
        e
        for e in entries
        if (e.running or any(state != LOADING for state in e.placed_states))
        and req.batch <= e.max_batch
        and (req.min_accuracy is None or e.accuracy >= req.min_accuracy)
        and (req.max_cost_per_hour is None or e.cost_per_hour <= req.max_cost_per_hour)
    ]
    return min(
        usable,
        key=lambda e: (not e.running, e.latency_ms(req.batch), e.variant.id),
        default=None,
    )


def _select_variant(index: SelectorIndex, req: Requirements) -> Decision:
    assert req.variant is not None
    entry = index.by_id.get(req.variant)
    if entry is None:
        if req.variant in index.catalog.variants:
            status = index.catalog.variants[req.variant].status
            raise NoEligibleVariant(f"variant {req.variant} is {status}, not ready to serve")
        raise UnknownVariant(
            f"no variant named {req.variant!r}; GET /v1/apps/<app> lists the variants"
        )
    if req.batch > entry.max_batch:
        raise BatchTooLarge(
            f"variant {req.variant} takes at most {entry.max_batch} inputs per query, "
            f"this one has {req.batch}; split the query",
            details={"max_batch": entry.max_batch},
        )
    return Decision(
        variant=entry.variant,
        reason="variant named by the query",
        worker=entry.least_loaded_worker,
        load_request=None if entry.running else entry.variant.id,
    )


def _no_eligible(
    entries: tuple[Entry, ...],
    req: Requirements,
    scope: str,
    verdicts: dict[str, str],
    overhead_ms: float,
) -> NoEligibleVariant:
    most_accurate = max(entries, key=lambda e: (e.accuracy, e.variant.id))
    fastest = min(entries, key=lambda e: (e.latency_ms(req.batch), e.variant.id))
    fastest_ms = fastest.latency_ms(req.batch) + overhead_ms
    asked = ", ".join(
        part
        for part in (
            f"accuracy >= {req.min_accuracy:g}" if req.min_accuracy is not None else "",
            f"latency <= {req.latency_ms:g} ms" if req.latency_ms is not None else "",
            f"cost <= {req.max_cost_per_hour:g} $/h" if req.max_cost_per_hour is not None else "",
        )
        if part
    )
    closest = sorted(entries, key=lambda e: _distance(e, req))[:3]
    return NoEligibleVariant(
        f"no variant of {scope} meets {asked or 'the request'} at batch {req.batch}; "
        f"the best accuracy is {most_accurate.accuracy:.4f} ({most_accurate.variant.id}) and "
        f"the fastest latency is {fastest_ms:.2f} ms ({fastest.variant.id}); "
        "relax a requirement",
        details={
            "best_accuracy": {
                "variant": most_accurate.variant.id,
                "accuracy": most_accurate.accuracy,
            },
            "fastest": {"variant": fastest.variant.id, "latency_ms": round(fastest_ms, 3)},
            "closest": [
                {"variant": e.variant.id, "why_not": verdicts.get(e.variant.id, "")}
                for e in closest
            ],
        },
    )


def _distance(entry: Entry, req: Requirements) -> float:
    """How far a variant is from meeting the requirements (relative shortfalls summed)."""
    gap = 0.0
    if req.min_accuracy:
        gap += max(0.0, req.min_accuracy - entry.accuracy) / req.min_accuracy
    if req.latency_ms:
        gap += max(0.0, entry.latency_ms(req.batch) - req.latency_ms) / req.latency_ms
    if req.max_cost_per_hour:
        gap += max(0.0, entry.cost_per_hour - req.max_cost_per_hour) / req.max_cost_per_hour
    return gap


def _explain(
    entries: tuple[Entry, ...], req: Requirements, verdicts: dict[str, str], chosen: Entry
) -> tuple[Candidate, ...]:
    out = []
    for entry in entries:
        verdict = verdicts.get(entry.variant.id, "")
        if entry is chosen:
            reason = "chosen"
        elif verdict:
            reason = verdict
        elif entry.running:
            reason = "eligible, but costs more per query"
        else:
            reason = "eligible, but not running"
        out.append(
            Candidate(
                variant=entry.variant.id,
                eligible=not verdict,
                running=entry.running,
                accuracy=entry.accuracy,
                predicted_latency_ms=round(entry.latency_ms(req.batch), 4),
                cost_per_hour=entry.cost_per_hour,
                cost_per_query_usd=entry.cost_per_query_usd(req.batch),
                reason=reason,
            )
        )
    return tuple(out)

"""Which variant runs a job: among ready variants meeting the accuracy floor whose
hardware has a live worker, the cheapest per item at its throughput-optimal batch, as
long as the estimate finishes by the deadline and fits the cost cap."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from queues.errors import NoEligibleVariant, NoWorker
from registry.jobs.settings import JobSettings
from registry.pricing import usd_for
from registry.types import Variant


@dataclass(frozen=True, slots=True)
class JobNeeds:
    items: int
    chunks: int
    min_accuracy: float
    now: datetime
    deadline: datetime | None = None
    max_cost_usd: float | None = None


@dataclass(frozen=True, slots=True)
class JobOption:
    """One variant's estimate for a job."""

    variant: Variant
    batch: int
    per_item_ms: float
    cost_usd: float
    duration_s: float
    finish_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant.id,
            "batch": self.batch,
            "per_item_ms": _significant(self.per_item_ms),
            "cost_usd": _significant(self.cost_usd),
            "duration_s": round(self.duration_s, 3),
            "finish_at": self.finish_at.isoformat(),
        }


def _significant(value: float, digits: int = 6) -> float:
    """Rounded to significant digits: costs of a few items are tiny fractions of a cent."""
    return float(f"{value:.{digits}g}")


def estimate(variant: Variant, needs: JobNeeds, settings: JobSettings) -> JobOption:
    """Cost and time of the job on ``variant`` at its throughput-optimal batch.

    Cost counts model time at the variant's price (what the job is charged as it runs);
    time adds the per-chunk overhead, slows the model by ``time_factor`` (spare
    capacity) and shares the work among the replicas the job can count on."""
    profile = variant.profile
    assert profile is not None
    batch = profile.batch_limit
    per_item_ms = profile.predict_latency_ms(batch) / batch
    model_ms = needs.items * per_item_ms
    cost_usd = usd_for(variant.cost_per_hour, model_ms)
    total_ms = model_ms * settings.time_factor + needs.chunks * settings.chunk_overhead_ms
    duration_s = total_ms / 1000.0 / settings.assumed_replicas
    finish_at = needs.now + timedelta(seconds=duration_s)
    return JobOption(variant, batch, per_item_ms, cost_usd, duration_s, finish_at)


def choose_variant(
    variants: Iterable[Variant],
    live_hardware: frozenset[str],
    needs: JobNeeds,
    settings: JobSettings,
    *,
    app: str,
) -> JobOption:
    """The cheapest variant for the job (ties: the faster, then the id), or the error
    that names what stands in the way and what is on offer."""
    ready = sorted((v for v in variants if v.ready), key=lambda v: v.id)
    if not ready:
        raise NoEligibleVariant(
            f"app {app} has no ready variant yet; register a model or wait for its profiling"
        )
    floor = [v for v in ready if v.profile is not None and v.profile.accuracy >= needs.min_accuracy]
    if not floor:
        best = max(ready, key=lambda v: (v.profile.accuracy if v.profile else 0.0, v.id))
        accuracy = best.profile.accuracy if best.profile else 0.0
        raise NoEligibleVariant(
            f"no variant of app {app} reaches accuracy {needs.min_accuracy:g}; the best is "
            f"{accuracy:.4f} ({best.id}); lower min_accuracy",
            details={"best_accuracy": {"variant": best.id, "accuracy": accuracy}},
        )
    served = [v for v in floor if v.hardware in live_hardware]
    if not served:
        kinds = sorted({v.hardware for v in floor})
        raise NoWorker(
            f"variants of app {app} reaching accuracy {needs.min_accuracy:g} run on "
            f"{'/'.join(kinds)}, and no worker of that hardware is live; start one "
            f"(infaas worker --hardware {kinds[0]}) and submit again"
        )
    options = [estimate(v, needs, settings) for v in served]
    fits = [
        o
        for o in options
        if (needs.max_cost_usd is None or o.cost_usd <= needs.max_cost_usd)
        and (needs.deadline is None or o.finish_at <= needs.deadline)
    ]
    if fits:
        return min(fits, key=lambda o: (o.cost_usd, o.duration_s, o.variant.id))
    raise _no_fit(options, needs, app)


def _no_fit(options: list[JobOption], needs: JobNeeds, app: str) -> NoEligibleVariant:
    cheapest = min(options, key=lambda o: (o.cost_usd, o.duration_s, o.variant.id))
    fastest = min(options, key=lambda o: (o.duration_s, o.cost_usd, o.variant.id))
    asked = " and ".join(
        part
        for part in (
            f"by {needs.deadline.isoformat()}" if needs.deadline is not None else "",
            f"for at most ${needs.max_cost_usd:g}" if needs.max_cost_usd is not None else "",
        )
        if part
    )
    return NoEligibleVariant(
        f"no variant of app {app} reaching accuracy {needs.min_accuracy:g} can run "
        f"{needs.items} items {asked}: the cheapest, {cheapest.variant.id}, costs about "
        f"${cheapest.cost_usd:.6f} and finishes about {cheapest.finish_at.isoformat()}; the "
        f"fastest, {fastest.variant.id}, finishes about {fastest.finish_at.isoformat()} for "
        f"${fastest.cost_usd:.6f}; move the deadline or raise max_cost_usd",
        details={"cheapest": cheapest.to_dict(), "fastest": fastest.to_dict()},
    )

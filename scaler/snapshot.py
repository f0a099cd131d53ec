"""What the scaler decides from: one frozen snapshot with the time inside it.

:func:`build_snapshot` turns plain records (the catalog, live state, the gateway's demand
counts, queue depths and the price table) into a :class:`ScalerSnapshot`, checking them
on the way; the control loop and a discrete-event simulator build snapshots the same way.

Demand comes per *class*: the queries of one app that share their requirements (minimum
accuracy, latency objective, cost cap). A variant serves a class when its accuracy and
cost meet the class's floor and cap and its predicted latency at some batch, plus the
pipeline's overhead, fits the latency objective. The largest such batch (at most the
variant's batch limit) sets what one replica serves of that class: workers batch what
waits, so at that arrival rate batches stay that small.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from queues.errors import InvalidRequest
from registry.live_docs import class_key
from registry.livestate import INTERFERED, OVERLOADED, LiveSnapshot, VariantLoad, WorkerReport
from registry.pricing import PriceTable
from registry.types import CatalogSnapshot, Variant
from scaler.settings import ScalerSettings, check_price_table


@dataclass(frozen=True, slots=True)
class Demand:
    """Queries of one requirement class of an app, as the gateway counted them.

    ``queue_depth``: queries of this class waiting outside variant queues (held at the
    gateway); queries already in a variant's queue are given per variant to
    :func:`build_snapshot` instead, so that none is counted twice.
    """

    app: str
    qps: float
    latency_ms: float | None = None
    min_accuracy: float | None = None
    max_cost_per_hour: float | None = None
    queue_depth: int = 0

    @property
    def key(self) -> str:
        """The class this demand belongs to: the app and its requirements."""
        return class_key(self.app, self.latency_ms, self.min_accuracy, self.max_cost_per_hour)


@dataclass(frozen=True, slots=True)
class DemandClass:
    """One class of queries with its measured rate and backlog."""

    key: str
    app: str
    qps: float
    backlog: int
    latency_ms: float | None
    min_accuracy: float | None
    max_cost_per_hour: float | None

    def to_dict(self) -> dict[str, object]:
        return {
            "key": self.key,
            "app": self.app,
            "qps": self.qps,
            "backlog": self.backlog,
            "latency_ms": self.latency_ms,
            "min_accuracy": self.min_accuracy,
            "max_cost_per_hour": self.max_cost_per_hour,
        }


@dataclass(frozen=True, slots=True)
class VariantInfo:
    """A ready variant as the scaler sees it: cost, size and speed of one replica."""

    id: str
    app: str
    hardware: str
    cores: int  # a CPU replica takes its threads in cores; a GPU replica takes none
    memory_mb: float
    load_ms: float
    cost_per_hour: float
    saturation_qps: float
    accuracy: float
    batch_limit: int
    capacity_qps: Mapping[str, float]  # class key -> qps one replica serves of that class
    # the catalog's record, for classes the policy still holds but this tick's demand
    # no longer names (see :meth:`capacity_for`)
    source: Variant | None = field(default=None, compare=False, repr=False)

    def capacity_for(self, demand: DemandClass, settings: ScalerSettings) -> float:
        """Queries per second one replica serves of ``demand`` (0: it cannot): as counted
        in the snapshot where the class is in it, else worked out the same way."""
        if demand.key in self.capacity_qps:
            return self.capacity_qps[demand.key]
        if self.source is None or demand.app != self.app:
            return 0.0
        return replica_capacity_qps(
            self.source,
            demand,
            self.cost_per_hour,
            settings.overhead_ms,
            tail=settings.queueing_tail,
        )


@dataclass(frozen=True, slots=True)
class WorkerView:
    """One live worker: its hardware, its room, what it runs and how that goes."""

    worker_id: str
    hardware: str
    cores: int
    memory_mb: float  # capacity, not use
    max_replicas: int
    replicas: Mapping[str, int]
    states: Mapping[str, str]
    qps: Mapping[str, float]
    capacity_factor: Mapping[str, float]  # variant -> share of profiled capacity left (≤ 1)
    utilisation: float
    started_ms: float

    @property
    def troubled(self) -> bool:
        """Holds a variant that is Overloaded or Interfered."""
        return any(s in (OVERLOADED, INTERFERED) for s in self.states.values())


@dataclass(frozen=True, slots=True)
class ScalerSnapshot:
    now_ms: float
    classes: tuple[DemandClass, ...]
    variants: Mapping[str, VariantInfo]
    workers: Mapping[str, WorkerView]
    backlog: Mapping[str, int]  # variant -> queries waiting in its queue
    prices: PriceTable
    by_app: Mapping[str, tuple[str, ...]] = field(init=False)

    def __post_init__(self) -> None:
        index: dict[str, list[str]] = {}
        for vid in sorted(self.variants):
            index.setdefault(self.variants[vid].app, []).append(vid)
        object.__setattr__(self, "by_app", {k: tuple(v) for k, v in index.items()})

    def worker_price_per_hour(self, hardware: str) -> float:
        return self.prices.instance_for(hardware).usd_per_hour


def _bad(message: str) -> InvalidRequest:
    return InvalidRequest(f"scaler snapshot: {message}")


def _check_demand(demand: Demand, catalog: CatalogSnapshot) -> None:
    where = f"demand for app {demand.app!r}"
    if demand.app not in catalog.apps:
        raise _bad(f"{where}: no such app in the catalog; drop the demand or register the app")
    if not math.isfinite(demand.qps) or demand.qps < 0:
        raise _bad(f"{where}: qps {demand.qps} must be a finite number >= 0")
    if demand.latency_ms is not None and (
        not math.isfinite(demand.latency_ms) or demand.latency_ms <= 0
    ):
        raise _bad(f"{where}: latency_ms {demand.latency_ms} must be > 0 (or None)")
    if demand.min_accuracy is not None and not 0.0 <= demand.min_accuracy <= 1.0:
        raise _bad(f"{where}: min_accuracy {demand.min_accuracy} must lie in [0, 1] (or None)")
    if demand.max_cost_per_hour is not None and (
        not math.isfinite(demand.max_cost_per_hour) or demand.max_cost_per_hour < 0
    ):
        raise _bad(f"{where}: max_cost_per_hour {demand.max_cost_per_hour} must be >= 0")
    if demand.queue_depth < 0:
        raise _bad(f"{where}: queue_depth {demand.queue_depth} must be >= 0")


def _merge_demands(demands: Sequence[Demand], catalog: CatalogSnapshot) -> tuple[DemandClass, ...]:
    """One class per key; two reports of the same class (two gateways) add up."""
    merged: dict[str, DemandClass] = {}
    for demand in demands:
        _check_demand(demand, catalog)
        key = demand.key
        prior = merged.get(key)
        merged[key] = DemandClass(
            key=key,
            app=demand.app,
            qps=demand.qps + (prior.qps if prior else 0.0),
            backlog=demand.queue_depth + (prior.backlog if prior else 0),
            latency_ms=demand.latency_ms,
            min_accuracy=demand.min_accuracy,
            max_cost_per_hour=demand.max_cost_per_hour,
        )
    return tuple(merged[k] for k in sorted(merged))


def replica_capacity_qps(
    variant: Variant,
    demand: DemandClass,
    cost_per_hour: float,
    overhead_ms: float,
    *,
    tail: float | None = None,
) -> float:
    """Queries per second one replica of ``variant`` serves of ``demand``; 0: it cannot.

    The batch is the largest one (up to the batch limit) whose predicted latency plus the
    pipeline's overhead fits the class's latency objective (the paper's rule).

    With ``tail`` (a share of queries, e.g. 0.01), queueing counts too: a query may wait
    for the batch being run before its own, so the batch is the largest whose *two*
    batch times fit; where not even two single queries fit, the replica runs only as
    busy as keeps the chance of waiting past the objective's slack below ``tail``
    (an M/D/1 queue's exponential waiting-time tail).
    """
    profile = variant.profile
    if profile is None:
        return 0.0
    if demand.min_accuracy is not None and profile.accuracy < demand.min_accuracy:
        return 0.0
    if demand.max_cost_per_hour is not None and cost_per_hour > demand.max_cost_per_hour:
        return 0.0
    limit = max(profile.batch_limit, 1)
    share = 1.0
    if demand.latency_ms is None:
        batch = limit
    else:
        sizes = sorted({b for b in profile.latency_ms if b <= limit} | {1, limit})
        fitting = [
            b for b in sizes if profile.predict_latency_ms(b) + overhead_ms <= demand.latency_ms
        ]
        if not fitting:
            return 0.0
        batch = fitting[-1]
        if tail is not None:
            waits = [
                b
                for b in fitting
                if 2 * profile.predict_latency_ms(b) + overhead_ms <= demand.latency_ms
            ]
            if waits:
                batch = waits[-1]
            else:
                batch = 1
                service_ms = profile.predict_latency_ms(1)
                slack_ms = demand.latency_ms - overhead_ms - service_ms
                share = busy_share_for_tail(slack_ms / service_ms, tail)
    latency_ms = profile.predict_latency_ms(batch)
    if latency_ms <= 0:
        return profile.saturation_qps
    return share * min(profile.saturation_qps, 1000.0 * batch / latency_ms)


def busy_share_for_tail(slack_in_services: float, tail: float) -> float:
    """The highest utilisation ρ of an M/D/1 queue at which a query waits longer than
    ``slack_in_services`` service times with probability at most ``tail``, using the
    exponential tail P(W > t) ≈ ρ · exp(−2 (1 − ρ) t / (ρ S))."""
    if slack_in_services <= 0:
        return 0.0

    def exceed(rho: float) -> float:
        return rho * math.exp(-2.0 * (1.0 - rho) * slack_in_services / rho)

    low, high = 0.0, 1.0
    for _ in range(40):
        mid = (low + high) / 2
        if exceed(mid) <= tail:
            low = mid
        else:
            high = mid
    return low


def variant_cost_per_hour(variant: Variant, prices: PriceTable) -> float:
    """Price of one replica from the current price table (the catalog's may be stale)."""
    inst = prices.instances.get(variant.instance_class)
    if inst is None or inst.hardware != variant.hardware:
        return prices.variant_cost_per_hour(variant.hardware, variant.threads)[1]
    if variant.hardware == "cpu":
        return inst.usd_per_hour * min(max(variant.threads, 1), inst.vcpus) / inst.vcpus
    return inst.usd_per_hour


def _variant_info(
    variant: Variant,
    classes: Sequence[DemandClass],
    prices: PriceTable,
    settings: ScalerSettings,
) -> VariantInfo:
    profile = variant.profile
    assert profile is not None
    cost = variant_cost_per_hour(variant, prices)
    capacity: dict[str, float] = {}
    for demand in classes:
        if demand.app != variant.app:
            continue
        qps = replica_capacity_qps(
            variant, demand, cost, settings.overhead_ms, tail=settings.queueing_tail
        )
        if qps > 0:
            capacity[demand.key] = qps
    return VariantInfo(
        id=variant.id,
        app=variant.app,
        hardware=variant.hardware,
        cores=max(variant.threads, 1) if variant.hardware == "cpu" else 0,
        memory_mb=max(profile.memory_mb, 0.0),
        load_ms=max(profile.load_ms, 0.0),
        cost_per_hour=cost,
        saturation_qps=profile.saturation_qps,
        accuracy=profile.accuracy,
        batch_limit=profile.batch_limit,
        capacity_qps=capacity,
        source=variant,
    )


def _capacity_factor(load: VariantLoad, variant: Variant | None, settings: ScalerSettings) -> float:
    """Share of its profiled capacity an Interfered replica still has (measured if we can)."""
    if load.state != INTERFERED:
        return 1.0
    measured = load.model_p50_ms or load.p50_ms
    if variant is None or variant.profile is None or measured <= 0:
        return settings.interfered_capacity
    batch = max(round(load.mean_batch), 1)
    expected = variant.profile.predict_latency_ms(batch)
    return min(1.0, max(0.05, expected / measured))


def _worker_view(
    report: WorkerReport, catalog: CatalogSnapshot, settings: ScalerSettings
) -> WorkerView:
    gpu = report.hardware == "gpu"
    loads = sorted(report.variants.values(), key=lambda v: v.variant)
    return WorkerView(
        worker_id=report.worker_id,
        hardware=report.hardware,
        cores=max(report.cores, 1),
        memory_mb=settings.gpu_memory_mb if gpu else settings.cpu_worker_memory_mb,
        max_replicas=settings.gpu_max_replicas if gpu else 1_000_000,
        replicas={v.variant: max(v.replicas, 0) for v in loads},
        states={v.variant: v.state for v in loads},
        qps={v.variant: v.qps for v in loads},
        capacity_factor={
            v.variant: _capacity_factor(v, catalog.variants.get(v.variant), settings) for v in loads
        },
        utilisation=min(max(report.gpu_util if gpu else report.cpu_util, 0.0), 1.0),
        started_ms=report.started_ms,
    )


def build_snapshot(
    now_ms: float,
    catalog: CatalogSnapshot,
    live: LiveSnapshot,
    demands: Sequence[Demand],
    queue_depths: Mapping[str, int],
    prices: PriceTable,
    settings: ScalerSettings,
) -> ScalerSnapshot:
    """Check the records and freeze them into one snapshot (raises :class:`InvalidRequest`
    on bad demand or queue depths, :class:`ConfigError` on a price table that makes no
    sense; the inputs are never changed)."""
    if not math.isfinite(now_ms) or now_ms < 0:
        raise _bad(f"now_ms {now_ms} must be a finite time >= 0")
    check_price_table(prices, settings)
    classes = _merge_demands(demands, catalog)
    backlog: dict[str, int] = {}
    for vid, depth in sorted(queue_depths.items()):
        if vid not in catalog.variants:
            raise _bad(
                f"queue depth given for {vid!r}, which is no variant of the catalog; "
                "give depths of variant queues only"
            )
        if depth < 0:
            raise _bad(f"queue depth {depth} of {vid} must be >= 0")
        if depth:
            backlog[vid] = int(depth)
    variants = {
        v.id: _variant_info(v, classes, prices, settings)
        for v in sorted(catalog.variants.values(), key=lambda v: v.id)
        if v.ready and v.hardware in ("cpu", "gpu")
    }
    workers = {
        w.worker_id: _worker_view(w, catalog, settings)
        for w in sorted(live.workers.values(), key=lambda w: w.worker_id)
        if w.hardware in ("cpu", "gpu")
    }
    return ScalerSnapshot(
        now_ms=now_ms,
        classes=classes,
        variants=variants,
        workers=workers,
        backlog=backlog,
        prices=prices,
    )

"""The live-state documents that pass between processes, defined once.

Gateways, workers and the scaler talk through small short-lived documents in live state
(Redis in the stack, a dict in the embedded default). Each kind has one name prefix, one
time-to-live and one typed to/from-document pair here, and writer and reader both use
them; a document that nobody reads is not written.

| kind | written by | read by |
| --- | --- | --- |
| ``demand:<gateway>`` | each gateway, every second | the scaler (what to plan for) |
| ``gateway:<gateway>`` | each gateway, every second | ``GET /v1/apps/{app}/stats`` |
| ``load-request:<variant>`` | a gateway whose selector chose an idle variant | the loader |
| ``load-failure:<variant>`` | the worker whose load of it failed | gateways (waiting queries) |
| ``scaler:last-plan`` | the scaler, every tick | gateways, ``GET /v1/scaler``, the loader |

A requirement class (an app and a query's requirements, rounded so that similar queries
count as one) has one key function, :meth:`RequirementClass.key`, used by the gateway's
accounting, the selector's routing and the scaler alike.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from registry.livestate import LiveState

log = logging.getLogger(__name__)

T = TypeVar("T")

DEMAND_PREFIX = "demand:"
DEMAND_TTL_S = 5.0  # current demand: gone soon after its gateway
GATEWAY_TOTALS_PREFIX = "gateway:"
GATEWAY_TOTALS_TTL_S = 3600.0  # cumulative totals outlive their gateway for an hour
LOAD_REQUEST_PREFIX = "load-request:"
LOAD_REQUEST_TTL_S = 30.0
LOAD_FAILURE_PREFIX = "load-failure:"
LOAD_FAILURE_TTL_S = 60.0  # a failed variant is not asked for again for this long
SCALER_PLAN_DOC = "scaler:last-plan"
SCALER_PLAN_TTL_S = 300.0
PLAN_MAX_AGE_S = 10.0  # a plan older than this: its scaler stopped (routes nothing)

_EPSILON = 1e-9


def _floor_sig2(value: float | None) -> float | None:
    """``value`` rounded down to two significant digits (123 -> 120, 0.0512 -> 0.051)."""
    if value is None or value <= 0:
        return value
    digits = 1 - math.floor(math.log10(value))
    scaled = math.floor(value * 10.0**digits + _EPSILON)
    return round(scaled / 10.0**digits, 12)


def _ceil_milli(value: float | None) -> float | None:
    """``value`` rounded up to a thousandth (0.9755 -> 0.976), at most 1."""
    if value is None:
        return None
    return min(round(math.ceil(value * 1000 - _EPSILON) / 1000, 3), 1.0)


@dataclass(frozen=True, slots=True)
class RequirementClass:
    """An app and a query's requirements, rounded to the strict side (latency and cost
    down, accuracy up), so a plan sized for the class serves every query in it."""

    app: str
    latency_ms: float | None = None
    min_accuracy: float | None = None
    max_cost_per_hour: float | None = None

    @classmethod
    def of(
        cls,
        app: str,
        latency_ms: float | None,
        min_accuracy: float | None,
        max_cost_per_hour: float | None,
    ) -> RequirementClass:
        return cls(
            app, _floor_sig2(latency_ms), _ceil_milli(min_accuracy), _floor_sig2(max_cost_per_hour)
        )

    @property
    def key(self) -> str:
        """The class's name, the same in the gateway, the selector and the scaler's plan."""
        parts = [self.app]
        if self.min_accuracy is not None:
            parts.append(f"acc>={self.min_accuracy:g}")
        if self.latency_ms is not None:
            parts.append(f"lat<={self.latency_ms:g}ms")
        if self.max_cost_per_hour is not None:
            parts.append(f"cost<={self.max_cost_per_hour:g}")
        return "|".join(parts)


def class_key(
    app: str,
    latency_ms: float | None,
    min_accuracy: float | None,
    max_cost_per_hour: float | None,
) -> str:
    """The key of the requirement class a query (or a demand) belongs to."""
    return RequirementClass.of(app, latency_ms, min_accuracy, max_cost_per_hour).key


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


# -- demand -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClassDemand:
    """Queries per second of one requirement class, as one gateway counted them."""

    requirements: RequirementClass
    qps: float

    def to_doc(self) -> dict[str, Any]:
        r = self.requirements
        return {
            "app": r.app,
            "latency_ms": r.latency_ms,
            "min_accuracy": r.min_accuracy,
            "max_cost_per_hour": r.max_cost_per_hour,
            "qps": self.qps,
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> ClassDemand:
        return cls(
            RequirementClass.of(
                str(doc["app"]),
                _opt_float(doc.get("latency_ms")),
                _opt_float(doc.get("min_accuracy")),
                _opt_float(doc.get("max_cost_per_hour")),
            ),
            float(doc["qps"]),
        )


@dataclass(frozen=True, slots=True)
class DemandDoc:
    gateway: str
    at_s: float
    classes: tuple[ClassDemand, ...]

    @property
    def name(self) -> str:
        return DEMAND_PREFIX + self.gateway

    def to_doc(self) -> dict[str, Any]:
        return {
            "gateway": self.gateway,
            "at_s": self.at_s,
            "classes": [c.to_doc() for c in self.classes],
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> DemandDoc:
        return cls(
            str(doc["gateway"]),
            float(doc["at_s"]),
            tuple(ClassDemand.from_doc(c) for c in doc.get("classes", [])),
        )


# -- loading on demand ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoadRequest:
    """A gateway's selector chose ``variant`` and no live worker runs it."""

    variant: str
    app: str
    hardware: str
    requested_ms: float

    @property
    def name(self) -> str:
        return LOAD_REQUEST_PREFIX + self.variant

    def to_doc(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "app": self.app,
            "hardware": self.hardware,
            "requested_ms": self.requested_ms,
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> LoadRequest:
        return cls(
            str(doc["variant"]), str(doc["app"]), str(doc["hardware"]), float(doc["requested_ms"])
        )


@dataclass(frozen=True, slots=True)
class LoadFailure:
    """A worker tried to load ``variant`` and could not: queries waiting for it get
    this error, and it is not asked for again until the document expires."""

    variant: str
    worker: str
    code: str
    message: str
    failed_ms: float

    @property
    def name(self) -> str:
        return LOAD_FAILURE_PREFIX + self.variant

    def to_doc(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "worker": self.worker,
            "code": self.code,
            "message": self.message,
            "failed_ms": self.failed_ms,
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> LoadFailure:
        return cls(
            str(doc["variant"]),
            str(doc["worker"]),
            str(doc["code"]),
            str(doc["message"]),
            float(doc["failed_ms"]),
        )


# -- the scaler's plan ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlanHeader:
    """What other processes need of the scaler's published plan (the rest of the
    document is the plan's own view, shown as is by ``GET /v1/scaler``)."""

    now_ms: float
    tick: int
    routes: Mapping[str, Any]

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> PlanHeader:
        routes = doc.get("routes")
        return cls(
            float(doc["now_ms"]), int(doc["tick"]), routes if isinstance(routes, dict) else {}
        )

    def fresh(self, now_ms: float) -> bool:
        """Whether its scaler is running (it publishes every tick)."""
        return now_ms - self.now_ms <= PLAN_MAX_AGE_S * 1000


# -- reading and writing ----------------------------------------------------------------


def put_demand(live: LiveState, demand: DemandDoc) -> None:
    live.put_doc(demand.name, demand.to_doc(), DEMAND_TTL_S)


def put_gateway_totals(live: LiveState, gateway: str, totals: dict[str, Any]) -> None:
    live.put_doc(GATEWAY_TOTALS_PREFIX + gateway, totals, GATEWAY_TOTALS_TTL_S)


def put_load_request(live: LiveState, request: LoadRequest) -> None:
    live.put_doc(request.name, request.to_doc(), LOAD_REQUEST_TTL_S)


def put_load_failure(live: LiveState, failure: LoadFailure) -> None:
    live.put_doc(failure.name, failure.to_doc(), LOAD_FAILURE_TTL_S)


def clear_load_request(live: LiveState, variant: str) -> None:
    live.delete_doc(LOAD_REQUEST_PREFIX + variant)


def put_plan(live: LiveState, plan: dict[str, Any]) -> None:
    live.put_doc(SCALER_PLAN_DOC, plan, SCALER_PLAN_TTL_S)


def read_all(live: LiveState, prefix: str, parse: Callable[[Mapping[str, Any]], T]) -> list[T]:
    """Every live document of one kind; one that does not parse is skipped and logged
    (a writer of another version must not stop the reader)."""
    out = []
    for name, doc in sorted(live.list_docs(prefix).items()):
        try:
            out.append(parse(doc))
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("ignoring the malformed live document %s: %r", name, exc)
    return out


def read_demands(live: LiveState) -> list[DemandDoc]:
    return read_all(live, DEMAND_PREFIX, DemandDoc.from_doc)


def read_gateway_totals(live: LiveState) -> list[dict[str, Any]]:
    return read_all(live, GATEWAY_TOTALS_PREFIX, dict)


def read_load_requests(live: LiveState) -> list[LoadRequest]:
    return read_all(live, LOAD_REQUEST_PREFIX, LoadRequest.from_doc)


def read_load_failures(live: LiveState) -> dict[str, LoadFailure]:
    return {f.variant: f for f in read_all(live, LOAD_FAILURE_PREFIX, LoadFailure.from_doc)}


def read_plan(live: LiveState) -> dict[str, Any] | None:
    return live.get_doc(SCALER_PLAN_DOC)


def read_plan_header(live: LiveState) -> PlanHeader | None:
    doc = live.get_doc(SCALER_PLAN_DOC)
    if doc is None:
        return None
    try:
        return PlanHeader.from_doc(doc)
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("ignoring a malformed scaler plan: %r", exc)
        return None

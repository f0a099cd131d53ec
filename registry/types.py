"""Plain, frozen records of the catalog: what the selector, scaler and workers read.

They carry no database session and no I/O, so snapshots of them can be handed to the
pure decision code and built by hand in tests.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# Status of a variant (and of a model, which is "ready" once any variant is).
QUEUED = "queued"
GENERATING = "generating"
PROFILING = "profiling"
READY = "ready"
FAILED = "failed"
VARIANT_STATUSES = (QUEUED, GENERATING, PROFILING, READY, FAILED)


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 text of a moment, or None."""
    return moment.isoformat() if moment is not None else None


@dataclass(frozen=True, slots=True)
class InputSignature:
    """One named input tensor; ``shape[0]`` is the batch dimension and is -1."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def item_shape(self) -> tuple[int, ...]:
        return self.shape[1:]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputSignature:
        return cls(str(data["name"]), str(data["dtype"]), tuple(int(d) for d in data["shape"]))


@dataclass(frozen=True, slots=True)
class App:
    id: str
    task: str
    signature: InputSignature
    output_kind: str = "probabilities"
    num_classes: int | None = None
    description: str = ""
    created_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, slots=True)
class Model:
    id: str
    app: str
    format: str
    artifact_key: str
    validation_key: str
    output_name: str = ""
    status: str = READY
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, slots=True)
class Profile:
    """What measuring a variant on its hardware found. Latencies in milliseconds."""

    accuracy: float
    metric: str
    latency_ms: dict[int, float]
    latency_p99_ms: dict[int, float]
    latency_slope_ms: float
    latency_intercept_ms: float
    memory_mb: float
    load_ms: float
    saturation_qps: float
    artifact_bytes: int
    max_batch: int
    profiled_on: str = ""
    cores: int = 0
    best_batch: int = 0  # past it throughput stops growing; 0: same as max_batch

    @property
    def batch_limit(self) -> int:
        """The batch dynamic batching aims for: the throughput knee, within max_batch."""
        return min(self.best_batch or self.max_batch, self.max_batch)

    def predict_latency_ms(self, batch: int) -> float:
        """p50 latency at ``batch``: measured where measured, interpolated between
        measured sizes, the fitted line beyond them."""
        sizes = sorted(self.latency_ms)
        if not sizes:
            return self.latency_slope_ms * batch + self.latency_intercept_ms
        if batch in self.latency_ms:
            return self.latency_ms[batch]
        if batch < sizes[0]:
            return self.latency_ms[sizes[0]]
        if batch > sizes[-1]:
            fitted = self.latency_slope_ms * batch + self.latency_intercept_ms
            return max(fitted, self.latency_ms[sizes[-1]])
        hi = bisect.bisect_left(sizes, batch)
        b0, b1 = sizes[hi - 1], sizes[hi]
        l0, l1 = self.latency_ms[b0], self.latency_ms[b1]
        return l0 + (l1 - l0) * (batch - b0) / (b1 - b0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "metric": self.metric,
            "latency_ms": {str(k): v for k, v in sorted(self.latency_ms.items())},
            "latency_p99_ms": {str(k): v for k, v in sorted(self.latency_p99_ms.items())},
            "latency_slope_ms": self.latency_slope_ms,
            "latency_intercept_ms": self.latency_intercept_ms,
            "memory_mb": self.memory_mb,
            "load_ms": self.load_ms,
            "saturation_qps": self.saturation_qps,
            "artifact_bytes": self.artifact_bytes,
            "max_batch": self.max_batch,
            "profiled_on": self.profiled_on,
            "cores": self.cores,
            "best_batch": self.best_batch,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Profile:
        return cls(
            accuracy=float(data["accuracy"]),
            metric=str(data["metric"]),
            latency_ms={int(k): float(v) for k, v in data["latency_ms"].items()},
            latency_p99_ms={int(k): float(v) for k, v in data["latency_p99_ms"].items()},
            latency_slope_ms=float(data["latency_slope_ms"]),
            latency_intercept_ms=float(data["latency_intercept_ms"]),
            memory_mb=float(data["memory_mb"]),
            load_ms=float(data["load_ms"]),
            saturation_qps=float(data["saturation_qps"]),
            artifact_bytes=int(data["artifact_bytes"]),
            max_batch=int(data["max_batch"]),
            profiled_on=str(data.get("profiled_on", "")),
            cores=int(data.get("cores", 0)),
            best_batch=int(data.get("best_batch", 0)),
        )


@dataclass(frozen=True, slots=True)
class Variant:
    id: str
    model: str
    app: str
    runtime: str
    precision: str
    hardware: str
    threads: int
    artifact_key: str
    instance_class: str
    cost_per_hour: float
    opt: str = ""
    status: str = READY
    error: str = ""
    profile: Profile | None = None
    created_at: datetime = field(default_factory=utcnow)

    @property
    def ready(self) -> bool:
        return self.status == READY and self.profile is not None


@dataclass(frozen=True, slots=True)
class CatalogSnapshot:
    """Everything in the catalog at one revision, indexed for the selector."""

    revision: int
    apps: dict[str, App]
    models: dict[str, Model]
    variants: dict[str, Variant]
    by_app: dict[str, tuple[Variant, ...]] = field(init=False)
    by_model: dict[str, tuple[Variant, ...]] = field(init=False)

    def __post_init__(self) -> None:
        by_app: dict[str, list[Variant]] = {app: [] for app in self.apps}
        by_model: dict[str, list[Variant]] = {model: [] for model in self.models}
        for variant in sorted(self.variants.values(), key=lambda v: v.id):
            by_app.setdefault(variant.app, []).append(variant)
            by_model.setdefault(variant.model, []).append(variant)
        object.__setattr__(self, "by_app", {k: tuple(v) for k, v in by_app.items()})
        object.__setattr__(self, "by_model", {k: tuple(v) for k, v in by_model.items()})

    @classmethod
    def empty(cls) -> CatalogSnapshot:
        return cls(revision=0, apps={}, models={}, variants={})

    def variants_of_app(self, app: str) -> tuple[Variant, ...]:
        return self.by_app.get(app, ())

    def variants_of_model(self, model: str) -> tuple[Variant, ...]:
        return self.by_model.get(model, ())

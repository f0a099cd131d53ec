"""The simulator's world: variant profiles (measured here, or published for GPUs) and the
app mix (apps with their share of the traffic and their requirement classes)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from queues.errors import InvalidRequest
from registry.types import App, CatalogSnapshot, InputSignature, Model, Profile, Variant
from workers.profiler import choose_best_batch, fit_latency

PROFILES = Path(__file__).resolve().parents[1] / "results" / "sim_profiles.json"
Z99 = 2.326  # the standard normal's 99th percentile


@dataclass(frozen=True)
class ClassSpec:
    """One requirement class of an app and its share of the app's queries."""

    share: float
    latency_ms: float | None = None
    min_accuracy: float | None = None
    max_cost_per_hour: float | None = None


@dataclass(frozen=True)
class AppSpec:
    """An app, its share of all queries, its classes, and whose profiled models it has
    (``profiles``: an app of the profile file; default its own name). Apps that share
    profiles get variants of their own, as separate registrations of the same
    architectures would."""

    app: str
    share: float
    classes: tuple[ClassSpec, ...]
    profiles: str | None = None

    @property
    def source(self) -> str:
        return self.profiles or self.app


# The demo app and three ImageNet-class apps with their own objectives (each registered
# ResNet-50, EfficientNet-B0 and EfficientNet-B4): several apps share the fleet, so
# bin-packing and interference matter, and CPU against GPU is a real trade-off.
DEFAULT_MIX: tuple[AppSpec, ...] = (
    AppSpec(
        "digits",
        0.4,
        (
            ClassSpec(0.3, latency_ms=50.0, min_accuracy=0.985),
            ClassSpec(0.4, latency_ms=10.0, min_accuracy=0.97),
            ClassSpec(0.3, latency_ms=5.0, min_accuracy=0.9),
        ),
    ),
    AppSpec(
        "imagenet",
        0.2,
        (
            ClassSpec(0.6, latency_ms=200.0, min_accuracy=0.765),
            ClassSpec(0.4, latency_ms=800.0, min_accuracy=0.82),
        ),
    ),
    AppSpec(
        "products",
        0.2,
        (
            ClassSpec(0.5, latency_ms=100.0, min_accuracy=0.765),
            ClassSpec(0.5, latency_ms=400.0, min_accuracy=0.77),
        ),
        profiles="imagenet",
    ),
    AppSpec(
        "moderation",
        0.2,
        (ClassSpec(1.0, latency_ms=1000.0, min_accuracy=0.82),),
        profiles="imagenet",
    ),
)


@dataclass(frozen=True)
class World:
    catalog: CatalogSnapshot
    jitter_sigma: dict[str, float]  # lognormal sigma of each variant's service time
    interference_slowdown: float  # two busy single-thread replicas on one core
    mix: tuple[AppSpec, ...]
    sources: dict[str, str]


def load_mix(path: Path | None) -> tuple[AppSpec, ...]:
    """The default mix, or a JSON file: [{"app", "share", "profiles"?, "classes":
    [{"share", "latency_ms"?, "min_accuracy"?, "max_cost_per_hour"?}]}]."""
    if path is None:
        return DEFAULT_MIX
    try:
        data: list[dict[str, Any]] = json.loads(path.read_text())
        mix = tuple(
            AppSpec(
                str(a["app"]),
                float(a["share"]),
                tuple(
                    ClassSpec(
                        float(c["share"]),
                        c.get("latency_ms"),
                        c.get("min_accuracy"),
                        c.get("max_cost_per_hour"),
                    )
                    for c in a["classes"]
                ),
            )
            for a in data
        )
        mix = tuple(
            AppSpec(a.app, a.share, a.classes, str(d["profiles"]) if d.get("profiles") else None)
            for a, d in zip(mix, data, strict=True)
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidRequest(f"cannot read the app mix {path}: {exc}") from exc
    if not mix or any(a.share <= 0 or not a.classes for a in mix):
        raise InvalidRequest(f"{path}: every app needs a share > 0 and at least one class")
    return mix


def _profile(row: dict[str, Any]) -> Profile:
    latency = {int(k): float(v) for k, v in row["latency_ms"].items()}
    p99 = {int(k): float(v) for k, v in row["latency_p99_ms"].items()}
    slope, intercept = fit_latency(latency)
    return Profile(
        accuracy=float(row["accuracy"]),
        metric="top1",
        latency_ms=latency,
        latency_p99_ms=p99,
        latency_slope_ms=slope,
        latency_intercept_ms=intercept,
        memory_mb=float(row["memory_mb"]),
        load_ms=float(row["load_ms"]),
        saturation_qps=max(1000.0 * b / v for b, v in latency.items()),
        artifact_bytes=0,
        max_batch=max(latency),
        best_batch=choose_best_batch(latency),
    )


def load_world(path: Path = PROFILES, mix: tuple[AppSpec, ...] = DEFAULT_MIX) -> World:
    if not path.exists():
        raise InvalidRequest(
            f"no simulator profiles at {path}; measure them with `python -m bench.sim.measure`"
        )
    doc = json.loads(path.read_text())
    sig = InputSignature("input", "float32", (-1, 1))
    apps, models, variants, jitter, sources = {}, {}, {}, {}, {}
    rows = [(spec, row) for spec in mix for row in doc["variants"] if row["app"] == spec.source]
    for spec, row in rows:
        profile = _profile(row)
        own = spec.app == spec.source  # a copy for another app gets ids of its own
        vid = str(row["id"]) if own else f"{spec.app}-{row['id']}"
        model = str(row["model"]) if own else f"{spec.app}-{row['model']}"
        apps[spec.app] = App(spec.app, "classification", sig)
        models[model] = Model(model, spec.app, "onnx", "-", "-")
        variants[vid] = Variant(
            id=vid,
            model=model,
            app=spec.app,
            runtime=vid.split(".")[1].split("-", maxsplit=1)[0],
            precision=row["precision"],
            hardware=row["hardware"],
            threads=int(row["threads"]),
            artifact_key="-",
            instance_class=row["instance_class"],
            cost_per_hour=float(row["cost_per_hour"]),
            profile=profile,
        )
        b1 = min(profile.latency_ms)
        ratio = max(profile.latency_p99_ms[b1] / profile.latency_ms[b1], 1.0)
        jitter[vid] = math.log(ratio) / Z99
        sources[vid] = str(row["source"])
    missing = {a.source for a in mix if a.app not in apps}
    if missing:
        raise InvalidRequest(f"no profiles for apps {sorted(missing)} in {path}")
    catalog = CatalogSnapshot(revision=1, apps=apps, models=models, variants=variants)
    return World(catalog, jitter, float(doc["interference"]["slowdown"]), mix, sources)

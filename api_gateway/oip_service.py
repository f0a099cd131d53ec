"""The Open Inference Protocol (KServe v2) without its transport: names, metadata,
readiness and inference, shared by REST (routes/oip.py) and gRPC (grpc_server.py).

``{name}`` is a variant, a model or an app, looked up in that order: naming an app is
the model-less query, its needs in the request's ``parameters`` (``latency_ms``,
``min_accuracy``, ``max_cost_per_hour``, and ``timeout_ms``); naming a model lets the
system pick its variant; a version is a variant of the name. A query goes through
:func:`api_gateway.routes.infer.serve`, so selection, waiting for a load, dispatch and
accounting are those of ``/v1``. Each transport decodes its request into an
:class:`InferCall` (tensors as JSON values or raw bytes) and encodes the
:class:`Answer`; every check is made here, before the query path counts anything.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from api_gateway.oip_tensors import decode_input, decode_raw_input, tensor_metadata
from api_gateway.routes.infer import Served, serve
from api_gateway.state import GatewayState
from queues.errors import InvalidInput, InvalidRequest, NotFound, UnknownVariant
from registry.selector import Requirements
from registry.tenancy import DEFAULT_NAMESPACE, Namespace
from registry.types import App, CatalogSnapshot, Model, Variant

SERVER_NAME = "infaas"
EXTENSIONS = ("binary_tensor_data",)
DEFAULT_OUTPUT = "output"
_APP_ONLY = ("min_accuracy", "max_cost_per_hour")


class InferParameters(BaseModel):
    """The query's needs; other parameters are the client's and are ignored."""

    model_config = ConfigDict(extra="allow")

    latency_ms: float | None = Field(default=None, gt=0, le=60_000)
    min_accuracy: float | None = Field(default=None, ge=0, le=1)
    max_cost_per_hour: float | None = Field(default=None, gt=0)
    timeout_ms: float | None = Field(default=None, gt=0, le=600_000)


def parameters_of(values: Mapping[str, Any]) -> InferParameters:
    """The request-level parameters of a transport that does not validate them itself."""
    try:
        return InferParameters.model_validate(dict(values))
    except ValidationError as exc:
        problems = "; ".join(
            f"parameters.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidRequest(f"invalid request: {problems}") from exc


@dataclass(frozen=True, slots=True)
class Tensor:
    """One input tensor of a request: its values as JSON (``data``) or as raw bytes."""

    name: str
    shape: tuple[int, ...]
    datatype: str
    data: list[Any] | None = None
    raw: bytes | memoryview | None = None


@dataclass(frozen=True, slots=True)
class InferCall:
    """An inference request, decoded from its transport. ``outputs``: the names asked
    for, None when the client asked for every output."""

    name: str
    version: str | None
    id: str | None
    parameters: InferParameters
    inputs: Sequence[Tensor]
    outputs: Sequence[str] | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """A query served, with what the transports need to encode it."""

    served: Served
    output_name: str

    @property
    def variant(self) -> Variant:
        return self.served.decision.variant

    @property
    def outputs(self) -> np.ndarray:
        return self.served.outputs


@dataclass(frozen=True, slots=True)
class Target:
    """What ``{name}`` (and its version) named: ``variant`` is set when one is fixed."""

    name: str
    kind: str  # "variant", "model" or "app"
    app: App
    model: Model | None
    variant: Variant | None
    scope: tuple[Variant, ...]  # the variants the name covers

    @property
    def output_name(self) -> str:
        return (self.model.output_name if self.model else "") or DEFAULT_OUTPUT


def resolve(snapshot: CatalogSnapshot, name: str, version: str | None) -> Target | None:
    """The variant, model or app called ``name`` (in that order), None if none is."""
    variant = snapshot.variants.get(name)
    if variant is not None:
        target = Target(
            name,
            "variant",
            snapshot.apps[variant.app],
            snapshot.models.get(variant.model),
            variant,
            (variant,),
        )
    elif name in snapshot.models:
        model = snapshot.models[name]
        scope = snapshot.variants_of_model(name)
        target = Target(name, "model", snapshot.apps[model.app], model, None, scope)
    elif name in snapshot.apps:
        scope = snapshot.variants_of_app(name)
        target = Target(name, "app", snapshot.apps[name], None, None, scope)
    else:
        return None
    if version is None:
        return target
    chosen = next((v for v in target.scope if v.id == version), None)
    if chosen is None:
        known = ", ".join(v.id for v in target.scope) or "none yet"
        raise UnknownVariant(
            f"{target.kind} {name!r} has no version {version!r}; its versions (variants) "
            f"are: {known}"
        )
    return Target(name, target.kind, target.app, target.model, chosen, (chosen,))


async def find_target(
    state: GatewayState, names: Namespace, name: str, version: str | None
) -> Target:
    """:func:`resolve` on the gateway's catalog, re-read once when the name is unknown,
    among the caller's names (another tenant's are as unknown as those that are not);
    the target's ``name`` is the caller's."""
    internal = names.inside(name)
    inner_version = names.inside(version) if version is not None else None
    target = None
    if internal is not None:
        target = _resolve_as(state.catalog_snapshot, names, internal, inner_version, version)
        if target is None:
            await state.refresh(force=True)
            target = _resolve_as(state.catalog_snapshot, names, internal, inner_version, version)
    if target is None:
        raise NotFound(
            f"no variant, model or app named {name!r}; GET /v1/apps lists the apps, "
            "GET /v1/apps/{app} their models and variants"
        )
    return target if target.name == name else replace(target, name=name)


def _resolve_as(
    snapshot: CatalogSnapshot,
    names: Namespace,
    internal: str,
    inner_version: str | None,
    version: str | None,
) -> Target | None:
    if version is not None and inner_version is None:
        target = resolve(snapshot, internal, None)
        if target is not None:  # a version no id of the caller's can be
            raise UnknownVariant(f"{names.outside(internal)!r} has no version {version!r}")
        return None
    try:
        return resolve(snapshot, internal, inner_version)
    except UnknownVariant as exc:
        names.shown(exc)
        raise


def requirements(
    target: Target, params: InferParameters, names: Namespace = DEFAULT_NAMESPACE
) -> Callable[[int], Requirements]:
    given = {k for k in ("latency_ms", *_APP_ONLY) if getattr(params, k) is not None}
    if target.variant is not None:
        refused, what = given, f"variant {names.outside(target.variant.id)!r}"
    elif target.kind == "model":
        refused, what = given & set(_APP_ONLY), f"model {target.name!r}"
    else:
        refused, what = set(), ""
    if refused:
        raise InvalidRequest(
            f"parameters {', '.join(sorted(refused))} do not apply when naming {what}; "
            f"name the app {names.outside(target.app.id)!r} to have the system choose by them"
        )
    variant = target.variant
    if variant is not None:
        return lambda batch: Requirements(variant=variant.id, batch=batch)
    if target.model is not None:
        model = target.model.id
        return lambda batch: Requirements(model=model, batch=batch, latency_ms=params.latency_ms)
    return lambda batch: Requirements(
        app=target.app.id,
        batch=batch,
        latency_ms=params.latency_ms,
        min_accuracy=params.min_accuracy,
        max_cost_per_hour=params.max_cost_per_hour,
    )


def metadata(target: Target, names: Namespace = DEFAULT_NAMESPACE) -> dict[str, Any]:
    app = target.app
    signature = app.signature
    if target.variant is not None:
        platform = target.variant.runtime
    elif target.model is not None:
        platform = target.model.format
    else:
        platform = "infaas_app"
    return {
        "name": target.name,
        # what a client may name as a version: the variants that can serve (a variant
        # named itself is listed whatever its state; the index says why it cannot)
        "versions": [
            names.outside(v.id) for v in target.scope if v.ready or target.variant is not None
        ],
        "platform": platform,
        "inputs": [tensor_metadata(signature.name, signature.dtype, signature.shape)],
        "outputs": [tensor_metadata(target.output_name, "float32", [-1, app.num_classes or -1])],
        "parameters": {"kind": target.kind, "app": names.outside(app.id), "task": app.task},
    }


def repository_index(
    snapshot: CatalogSnapshot, *, ready_only: bool, names: Namespace = DEFAULT_NAMESPACE
) -> list[dict[str, str]]:
    """The model repository extension's index: each app, then each model's variants as
    its versions; READY when a query can be served (a variant not running is loaded on
    the first one). Only the caller's, by its names."""
    index = []
    for app in sorted(a for a in snapshot.apps if names.owns(a)):
        ready = any(v.ready for v in snapshot.variants_of_app(app))
        index.append({"name": names.outside(app), "state": "READY" if ready else "UNAVAILABLE"})
    owned = (v for v in snapshot.variants.values() if names.owns(v.id))
    for variant in sorted(owned, key=lambda v: (v.model, v.id)):
        entry = {
            "name": names.outside(variant.model),
            "version": names.outside(variant.id),
            "state": "READY",
        }
        if not variant.ready:
            entry |= {"state": "UNAVAILABLE", "reason": f"variant is {variant.status}"}
        index.append(entry)
    return [e for e in index if e["state"] == "READY"] if ready_only else index


def server_ready(state: GatewayState) -> bool:
    return state.services.client.connected and not state.catalog_error and not state.live_error


async def model_ready(
    state: GatewayState, names: Namespace, name: str, version: str | None
) -> bool:
    """Ready when the gateway is and a ready variant of the name exists (one that is not
    running is loaded on the first query)."""
    target = await find_target(state, names, name, version)
    return server_ready(state) and any(v.ready for v in target.scope)


def _decode(tensor: Tensor, target: Target) -> np.ndarray:
    signature = target.app.signature
    if tensor.raw is not None:
        return decode_raw_input(tensor.name, tensor.shape, tensor.datatype, tensor.raw, signature)
    if tensor.data is None:
        raise InvalidInput(
            f"input {tensor.name!r} has no data: send its values as data, or as binary "
            "data (parameters.binary_data_size on REST, raw_input_contents on gRPC)"
        )
    return decode_input(tensor.name, tensor.shape, tensor.datatype, tensor.data, signature)


async def infer(state: GatewayState, names: Namespace, call: InferCall) -> Answer:
    """Check the call against its target, then query it; nothing is counted for a call
    refused here."""
    target = await find_target(state, names, call.name, call.version)
    if len(call.inputs) != 1:
        given = ", ".join(repr(t.name) for t in call.inputs)
        raise InvalidInput(
            f"{len(call.inputs)} inputs ({given}); {call.name!r} takes one, "
            f"{target.app.signature.name!r}"
        )
    unknown = [o for o in call.outputs or () if o != target.output_name]
    if unknown:
        raise InvalidInput(
            f"output {unknown[0]!r} is not an output of {call.name!r}; it has one, "
            f"{target.output_name!r}"
        )
    needs = requirements(target, call.parameters, names)
    batch = _decode(call.inputs[0], target)
    served = await serve(
        state,
        names,
        batch,
        needs,
        timeout_ms=call.parameters.timeout_ms,
        explain=False,
        scope=target.app.id,
    )
    return Answer(served, target.output_name)

"""Taking in a model: check the upload, store its files, record model and registration.

All checks run before anything is written, so a refused upload leaves the catalog and
the object store exactly as they were. Files go under a key that includes the
registration id (two uploads racing for one model id never touch each other's files);
the model and its registration are inserted in one transaction; if that fails, the
files just stored are removed again. An upload may ask for its app to be made from the
model's input: that app is inserted in the model's transaction, after every check, so
a refused registration never leaves an empty app behind."""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from queues.errors import (
    Conflict,
    InfaasError,
    InvalidModel,
    InvalidRequest,
    UnknownApp,
    UnknownModel,
)
from registry.catalog import Catalog, UsageCheck
from registry.model_info import DEFAULT_MAX_UNPACKED_BYTES, TORCH, ModelInfo
from registry.names import HARDWARE, check_id
from registry.registrations import (
    Registration,
    RegistrationOptions,
    RegistrationStore,
    new_registration_id,
    new_registration_rows,
)
from registry.store import ObjectStore
from registry.tenancy import owner_of
from registry.types import QUEUED, App, InputSignature, Model, Variant
from registry.uploads import (
    check_model_fits_app,
    check_validation_set,
    inspect_model,
)

log = logging.getLogger(__name__)
MAX_METADATA_BYTES = 64 * 1024
# The check of a tenant's usage (its quotas) before it stores this many more bytes, or
# None when it has no quota to check (api_gateway/quotas.py).
Quota = Callable[[str, int], UsageCheck | None]


@dataclass(frozen=True, slots=True)
class NewApp:
    """An app to create from the uploaded model's own input (it must not exist yet)."""

    num_classes: int | None = None  # default: the width of the model's output
    description: str = ""


@dataclass(frozen=True)
class Upload:
    app: str
    model_id: str
    model_path: Path
    validation_path: Path
    hardware: tuple[str, ...] = ("cpu",)
    metadata: dict[str, Any] = field(default_factory=dict)
    options: RegistrationOptions = field(default_factory=RegistrationOptions)
    declared_format: str | None = None
    output: str | None = None
    new_app: NewApp | None = None  # create ``app`` with the model, in one transaction


def model_prefix(model_id: str) -> str:
    return f"models/{model_id}/"


def upload_keys(model_id: str, registration_id: str, suffix: str) -> tuple[str, str]:
    """(model file key, validation set key) of one upload."""
    base = f"{model_prefix(model_id)}{registration_id}"
    return f"{base}/source{suffix}", f"{base}/validation.npz"


def check_hardware(hardware: Sequence[str]) -> tuple[str, ...]:
    targets = tuple(sorted(set(hardware)))
    unknown = [h for h in targets if h not in HARDWARE]
    if not targets or unknown:
        raise InvalidRequest(
            f"hardware {list(hardware)} is not valid; name one or more of {sorted(HARDWARE)}"
        )
    return targets


def check_metadata(metadata: Any) -> dict[str, Any]:
    if not isinstance(metadata, dict):
        raise InvalidRequest('metadata must be a JSON object, e.g. {"source": "..."}')
    try:
        size = len(json.dumps(metadata))
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"metadata cannot be stored as JSON ({exc})") from exc
    if size > MAX_METADATA_BYTES:
        raise InvalidRequest(
            f"metadata is {size} bytes of JSON; keep it under {MAX_METADATA_BYTES} bytes"
        )
    return metadata


def app_from_model(app_id: str, info: ModelInfo, new: NewApp) -> App:
    """The app a model's input defines: its input name, dtype and fixed item shape."""
    shape = list(info.input.shape)
    if any(d < 1 for d in shape[1:]):
        raise InvalidModel(
            f"the model's input {info.input.name!r} has shape {shape}, with dynamic "
            "dimensions after the batch, so no app can be made from it; create the app "
            "first with POST /v1/apps and a fixed input shape"
        )
    if np.dtype(info.input.dtype).kind not in "fiu":
        raise InvalidModel(
            f"the model's input {info.input.name!r} is {info.input.dtype}; an app takes "
            "numbers (float or integer inputs)"
        )
    if new.num_classes is not None and new.num_classes < 2:
        raise InvalidRequest(f"num_classes must be at least 2, got {new.num_classes}")
    return App(
        id=check_id("app", app_id),
        task="classification",
        signature=InputSignature(info.input.name, info.input.dtype, (-1, *shape[1:])),
        num_classes=new.num_classes or info.output_width,
        description=new.description,
    )


def _require_no_app(catalog: Catalog, app_id: str) -> None:
    check_id("app", app_id)
    try:
        catalog.get_app(app_id)
    except UnknownApp:
        return
    raise Conflict(
        f"app {app_id!r} already exists; register the model into it without asking for a new app"
    )


def require_free_model_id(catalog: Catalog, model_id: str) -> None:
    check_id("model", model_id)
    try:
        taken = catalog.get_model(model_id)
    except UnknownModel:
        return
    raise Conflict(
        f"model {model_id!r} already exists (in app {taken.app!r}); model ids are unique "
        "across apps, so pick another id or delete that model first"
    )


def accept_upload(
    catalog: Catalog,
    store: ObjectStore,
    upload: Upload,
    *,
    max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES,
    quota: Quota | None = None,
) -> Registration:
    """Check ``upload`` against its app, then store and record it (model status queued,
    one queued task per hardware). Raises a 4xx :class:`InfaasError` and changes nothing
    when the upload is refused. With ``upload.new_app`` the app must not exist yet; it is
    made from the model's input and recorded with the model, or not at all. ``quota``
    gives the check of the model's tenant's usage, made before the files are stored and
    again in the transaction that records the model."""
    if upload.new_app is None:
        catalog.get_app(upload.app)  # unknown app: refused before anything is read
    else:
        _require_no_app(catalog, upload.app)
    require_free_model_id(catalog, upload.model_id)
    tenant = owner_of(upload.model_id)
    if quota is not None:  # before anything is read: the upload's files as they came
        given = upload.model_path.stat().st_size + upload.validation_path.stat().st_size
        early = quota(tenant, given)
        if early is not None:
            early(catalog.usage(tenant))
    hardware = check_hardware(upload.hardware)
    metadata = check_metadata(upload.metadata)
    info = inspect_model(
        upload.model_path,
        declared=upload.declared_format,
        output=upload.output,
        max_unpacked_bytes=max_unpacked_bytes,
    )
    new_app = None
    if upload.new_app is not None:
        new_app = app_from_model(upload.app, info, upload.new_app)
    app = new_app or catalog.get_app(upload.app)
    check_model_fits_app(info, app)
    check_validation_set(
        upload.validation_path,
        app,
        num_classes=app.num_classes or info.output_width,
        max_unpacked_bytes=max_unpacked_bytes,
    )
    registration_id = new_registration_id()
    model_key, validation_key = upload_keys(upload.model_id, registration_id, info.suffix)
    with tempfile.TemporaryDirectory(prefix="infaas-intake-") as tmp:
        stored = upload.model_path
        if info.format == TORCH:
            from registry.torch_programs import sanitize_archive

            # only the sanitized copy is ever stored and loaded
            stored = sanitize_archive(
                upload.model_path, Path(tmp) / "program.pt2", max_unpacked_bytes=max_unpacked_bytes
            )
        stored_bytes = stored.stat().st_size + upload.validation_path.stat().st_size
        check_usage = quota(tenant, stored_bytes) if quota is not None else None
        try:
            store.put_file(model_key, stored)
            store.put_file(validation_key, upload.validation_path)
            catalog.add_model(
                Model(
                    id=upload.model_id,
                    app=app.id,
                    format=info.format,
                    artifact_key=model_key,
                    validation_key=validation_key,
                    output_name=info.output_name,
                    status=QUEUED,
                    metadata=metadata,
                ),
                with_rows=new_registration_rows(
                    registration_id, app.id, upload.model_id, hardware, upload.options
                ),
                new_app=new_app,
                stored_bytes=stored_bytes,
                check_usage=check_usage,
            )
        except BaseException:
            _delete_quietly(store, [model_key, validation_key])
            raise
    return RegistrationStore(catalog).get(registration_id)


def register_again(
    catalog: Catalog,
    model_id: str,
    hardware: Sequence[str],
    options: RegistrationOptions | None = None,
) -> Registration:
    """A new registration of a model already in the catalog (its variants are rebuilt)."""
    model = catalog.get_model(model_id)
    registration_id = new_registration_id()
    rows = new_registration_rows(
        registration_id,
        model.app,
        model.id,
        check_hardware(hardware),
        options or RegistrationOptions(),
    )
    with catalog.write_session(bump=False) as session:
        session.add_all(rows)
    return RegistrationStore(catalog).get(registration_id)


def remove_model(catalog: Catalog, store: ObjectStore, model_id: str) -> list[Variant]:
    """Delete the model, its variants and its registrations from the catalog, then its
    files and its variants' artifacts from the store. Returns the deleted variants."""
    model = catalog.get_model(model_id)
    variants = catalog.delete_model(model_id)
    RegistrationStore(catalog).delete_for_model(model_id)
    prefix = model_prefix(model_id)
    store.delete_prefix(prefix)
    others = {v.artifact_key for v in variants} | {model.artifact_key}
    for key in sorted(k for k in others if not k.startswith(prefix)):
        store.delete(key)  # artifacts of variants built before keys sat under the model
    return variants


def _delete_quietly(store: ObjectStore, keys: Sequence[str]) -> None:
    """Best effort: used while another error is on its way to the caller."""
    for key in keys:
        try:
            store.delete(key)
        except InfaasError as exc:
            log.warning("could not delete %s from the store: %s", key, exc.message)

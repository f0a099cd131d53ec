"""A registration's multipart form: its fields and files, checked and turned into an
:class:`registry.intake.Upload` (the route is api_gateway/routes/registration.py)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request

from api_gateway.state import GatewayState
from api_gateway.upload_limits import MB, UploadLimit
from queues.errors import InvalidRequest
from registry import json_limits
from registry.intake import NewApp, Upload, check_hardware
from registry.names import check_id
from registry.registrations import RegistrationOptions
from registry.tenancy import Namespace, member_id

FORM_FIELDS = (
    "id",
    "metadata",
    "hardware",
    "format",
    "output",
    "budget_s_per_batch",
    "batch_sizes",
    "num_classes",
    "description",
)
NEW_APP_FIELDS = ("num_classes", "description")
FORM_FILES = ("model", "validation")


def _form_property(kind: str, description: str, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "description": description, **extra}


_UPLOAD_FIELDS = {
    "model": _form_property("string", "ONNX file or torch.export archive (.pt2)", format="binary"),
    "validation": _form_property("string", ".npz: arrays inputs and labels", format="binary"),
    "id": _form_property("string", "model id (default: the file name)"),
    "metadata": _form_property("string", "a JSON object kept with the model"),
    "hardware": _form_property("string", "cpu,gpu (default: every kind with a live worker)"),
    "format": _form_property("string", "onnx or torch (default: detected)"),
    "output": _form_property("string", "the output to serve (default: scores per class)"),
    "budget_s_per_batch": _form_property("number", "profiling time per batch size (0.4)"),
    "batch_sizes": _form_property("string", "batch sizes to profile (1,4,8,16,32,64)"),
    "num_classes": _form_property("integer", "with create_app: the new app's classes"),
    "description": _form_property("string", "with create_app: the new app's description"),
}
UPLOAD_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["model", "validation"],
                    "properties": _UPLOAD_FIELDS,
                }
            }
        },
    }
}


async def read_form(request: Request, limit: UploadLimit) -> FormData:
    limit.check_declared(request)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidRequest(
            "send the model as multipart/form-data with files 'model' and 'validation' "
            "(curl -F model=@m.onnx -F validation=@val.npz)"
        )
    return await limit.read_form(request, max_files=4)


def _field(form: FormData, name: str) -> str | None:
    value = form.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{name!r} must be a form field, not a file")
    return value.strip() or None


def _save(form: FormData, name: str, dest: Path) -> tuple[Path, str]:
    value = form.get(name)
    if not isinstance(value, UploadFile):
        raise InvalidRequest(
            f"the upload has no file {name!r}; send files 'model' (ONNX or .pt2) and "
            "'validation' (.npz with inputs and labels)"
        )
    with dest.open("wb") as out:
        value.file.seek(0)
        shutil.copyfileobj(value.file, out, MB)
    return dest, value.filename or ""


def _default_model_id(filename: str) -> str:
    stem = Path(filename).name.split(".")[0].lower().replace("_", "-")
    try:
        return check_id("model", stem)
    except InvalidRequest as exc:
        raise InvalidRequest(
            f"no model id given and the file name {filename!r} is not a valid id; send the "
            "field 'id' (1-64 characters of [a-z0-9-])"
        ) from exc


def _options(form: FormData) -> RegistrationOptions:
    default = RegistrationOptions()
    budget = _field(form, "budget_s_per_batch")
    sizes = _field(form, "batch_sizes")
    try:
        return RegistrationOptions(
            budget_s_per_batch=float(budget) if budget else default.budget_s_per_batch,
            batch_sizes=tuple(int(b) for b in sizes.split(",")) if sizes else default.batch_sizes,
        )
    except ValueError as exc:
        raise InvalidRequest(
            f"budget_s_per_batch must be a number and batch_sizes integers like 1,4,8 ({exc})"
        ) from exc


def metadata_of(raw: str | None) -> dict[str, Any]:
    if raw is None:
        return {}
    try:
        value = json_limits.loads(raw, what="metadata")
    except json_limits.JSONRefused as exc:
        raise InvalidRequest(f"{exc}; send a JSON object") from exc
    if not isinstance(value, dict):
        raise InvalidRequest('metadata must be a JSON object, e.g. {"source": "..."}')
    return value


def _hardware(state: GatewayState, raw: str | None) -> tuple[str, ...]:
    if raw:
        return check_hardware([part.strip() for part in raw.split(",") if part.strip()])
    live = {w.hardware for w in state.live_snapshot.workers.values()}
    return tuple(sorted(live)) or ("cpu",)


def _new_app(form: FormData, *, create_app: bool, app_exists: bool) -> NewApp | None:
    """The app to create with the model; None when it exists (its fields then go unused,
    as ``create_app`` means "create it if missing")."""
    given = [name for name in NEW_APP_FIELDS if _field(form, name) is not None]
    if given and not create_app:
        raise InvalidRequest(
            f"{', '.join(given)} describe(s) a new app; add ?create_app=true to create "
            "the app from the model, or leave them out for an existing app"
        )
    if app_exists:
        return None
    raw = _field(form, "num_classes")
    try:
        num_classes = int(raw) if raw is not None else None
    except ValueError as exc:
        raise InvalidRequest(f"num_classes must be an integer of at least 2, not {raw!r}") from exc
    description = _field(form, "description") or ""
    if len(description) > 2000:
        raise InvalidRequest("the app's description may hold at most 2000 characters")
    return NewApp(num_classes=num_classes, description=description)


def upload_of(
    app: str,
    form: FormData,
    tmp: Path,
    state: GatewayState,
    *,
    names: Namespace,
    create_app: bool,
    app_exists: bool,
) -> Upload:
    """The upload to register into ``app`` (an internal id); its model id (a name as
    the caller gives it) becomes an internal id of the app's tenant."""
    unknown = sorted(set(form.keys()) - set(FORM_FIELDS) - set(FORM_FILES))
    if unknown:
        raise InvalidRequest(
            f"unknown form field(s) {unknown}; known: {list(FORM_FILES + FORM_FIELDS)}"
        )
    new_app = _new_app(form, create_app=create_app, app_exists=app_exists)
    model_path, filename = _save(form, "model", tmp / "model.upload")
    validation_path, _ = _save(form, "validation", tmp / "validation.npz")
    model_id = _field(form, "id") or _default_model_id(filename)
    return Upload(
        app=app,
        model_id=member_id(names, "model", model_id, app),
        model_path=model_path,
        validation_path=validation_path,
        hardware=_hardware(state, _field(form, "hardware")),
        metadata=metadata_of(_field(form, "metadata")),
        options=_options(form),
        declared_format=_field(form, "format"),
        output=_field(form, "output"),
        new_app=new_app,
    )

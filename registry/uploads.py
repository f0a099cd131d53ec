"""Checking an uploaded model and validation set against their app, before anything is
stored. Every problem is a 4xx that names it and says what to do.

Accepted model formats are those that execute no code when loaded: ONNX (checked with
the ONNX checker) and ``torch.export`` archives that pass :mod:`registry.torch_programs`.
Validation sets are ``.npz`` files read with ``allow_pickle=False``.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from queues.errors import InvalidModel, InvalidValidationSet
from registry.archives import ArchiveRefused, npy_member, unpacked_bytes
from registry.model_info import (
    DEFAULT_MAX_UNPACKED_BYTES,
    MODEL_FORMATS,
    ONNX,
    TORCH,
    ModelInfo,
    OutputInfo,
    pick_output,
)
from registry.torch_programs import inspect_torch_program
from registry.types import App, InputSignature

_ZIP_MAGIC = b"PK\x03\x04"


@dataclass(frozen=True, slots=True)
class ValidationInfo:
    rows: int
    labels_min: int
    labels_max: int


# ----------------------------------------------------------------------------- models


def detect_format(path: Path, declared: str | None = None) -> str:
    """``onnx`` or ``torch`` (a zip archive); ``declared`` must agree when given."""
    if declared is not None and declared not in MODEL_FORMATS:
        raise InvalidModel(f"format {declared!r} is not one of {list(MODEL_FORMATS)}")
    with path.open("rb") as handle:
        head = handle.read(4)
    found = TORCH if head == _ZIP_MAGIC else ONNX
    if declared is not None and declared != found:
        kind = "a zip archive (torch.export)" if found == TORCH else "not a zip archive"
        raise InvalidModel(
            f"the model file was declared {declared} but is {kind}; send an ONNX file "
            "(torch.onnx.export, skl2onnx) or a torch.export.save archive (.pt2)"
        )
    return found


def inspect_model(
    path: Path,
    *,
    declared: str | None = None,
    output: str | None = None,
    max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES,
) -> ModelInfo:
    """Check the file is a safe, well-formed model and describe its input and outputs."""
    if path.stat().st_size == 0:
        raise InvalidModel("the model file is empty; send an ONNX file or a .pt2 archive")
    fmt = detect_format(path, declared)
    if fmt == ONNX:
        return inspect_onnx(path, output=output)
    return inspect_torch_program(path, output=output, max_unpacked_bytes=max_unpacked_bytes)


def _np_dtype_name(elem_type: int) -> str:
    from onnx import helper

    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).name
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidModel(f"ONNX element type {elem_type} has no numpy equivalent") from exc


def _onnx_dims(value_info: Any) -> tuple[int, ...] | None:
    tensor = value_info.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    return tuple(
        int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else -1
        for d in tensor.shape.dim
    )


def inspect_onnx(path: Path, *, output: str | None = None) -> ModelInfo:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and whatever a corrupt file raises
        raise InvalidModel(
            f"the model file is not an ONNX model ({type(exc).__name__}: {exc}); send an ONNX "
            "file (torch.onnx.export, skl2onnx) or a torch.export.save archive (.pt2)"
        ) from exc
    external = [
        t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL
    ]
    if external:
        raise InvalidModel(
            f"the ONNX model keeps {len(external)} tensor(s) in external data files "
            f"({external[0]!r} ...); save it as one file (onnx.save with "
            "save_as_external_data=False)"
        )
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # the checker raises several unrelated types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidModel(
            f"the file is not a valid ONNX model: the ONNX checker says: {first}; "
            "re-export the model and check it with onnx.checker.check_model"
        ) from exc
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        names = ", ".join(repr(i.name) for i in inputs) or "none"
        raise InvalidModel(
            f"the ONNX model has {len(inputs)} inputs ({names}); an app takes exactly one "
            "input tensor, so export the model with one"
        )
    (graph_input,) = inputs
    if not graph_input.type.HasField("tensor_type"):
        raise InvalidModel(f"ONNX input {graph_input.name!r} is not a tensor")
    dims = _onnx_dims(graph_input)
    if dims is None or not dims:
        raise InvalidModel(
            f"ONNX input {graph_input.name!r} declares no shape; export it with its shape "
            "(a dynamic batch dimension first)"
        )
    signature = InputSignature(
        graph_input.name, _np_dtype_name(graph_input.type.tensor_type.elem_type), dims
    )
    outputs = tuple(
        OutputInfo(
            name=o.name,
            dtype=_np_dtype_name(o.type.tensor_type.elem_type)
            if o.type.HasField("tensor_type")
            else "object",
            shape=_onnx_dims(o) or (),
        )
        for o in model.graph.output
    )
    return ModelInfo(ONNX, signature, outputs, pick_output(outputs, output))


def check_model_fits_app(info: ModelInfo, app: App) -> None:
    """The model's input must be the app's input (name, dtype, shape after the batch
    dimension) and take any batch size; its classes must match the app's."""
    want, got = app.signature, info.input
    where = f"app {app.id!r} takes {want.name!r} {want.dtype} {list(want.shape)}"
    if got.name != want.name:
        raise InvalidModel(
            f"the model's input is named {got.name!r} but {where}; export the model with "
            f"input name {want.name!r}"
        )
    if got.dtype != want.dtype:
        raise InvalidModel(
            f"the model's input {got.name!r} is {got.dtype} but {where}; export it with "
            f"{want.dtype} input"
        )
    if len(got.shape) != len(want.shape):
        raise InvalidModel(
            f"the model's input has shape {list(got.shape)} (rank {len(got.shape)}) but "
            f"{where} (rank {len(want.shape)})"
        )
    if got.shape[0] != -1:
        raise InvalidModel(
            f"the model's batch dimension is fixed at {got.shape[0]}; export it with a "
            "dynamic first dimension (dynamic_axes / torch.export.Dim)"
        )
    mismatched = [
        i
        for i, (g, w) in enumerate(zip(got.shape[1:], want.shape[1:], strict=True), start=1)
        if g not in (-1, w)
    ]
    if mismatched:
        raise InvalidModel(
            f"the model's input has shape {list(got.shape)} but {where} (dimension "
            f"{mismatched[0]} differs); export it for the app's input shape"
        )
    width = info.output_width
    if app.num_classes is not None and width is not None and width != app.num_classes:
        raise InvalidModel(
            f"the model's output {info.output_name!r} has {width} classes but app "
            f"{app.id!r} has {app.num_classes}"
        )


# ---------------------------------------------------------------------- validation set


def check_validation_set(
    path: Path,
    app: App,
    *,
    num_classes: int | None,
    max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES,
) -> ValidationInfo:
    """An ``.npz`` with ``inputs`` (the app's dtype, ``[n, *item_shape]``) and ``labels``
    (n integers in ``[0, num_classes)``)."""
    how = "save it with numpy.savez(path, inputs=..., labels=...)"
    try:
        with zipfile.ZipFile(path) as archive:
            unpacked_bytes(archive, max_unpacked_bytes, "the validation set")
            members = {member.filename: member for member in archive.infolist()}
            missing = [name for name in ("inputs", "labels") if f"{name}.npy" not in members]
            if missing:
                held = sorted(name.removesuffix(".npy") for name in members)
                raise InvalidValidationSet(
                    f"the validation set has no {' or '.join(repr(m) for m in missing)} "
                    f"array (it has {held}); {how}"
                )
            for name in ("inputs", "labels"):
                npy_member(archive, members[f"{name}.npy"], f"validation array {name!r}")
    except ArchiveRefused as exc:
        raise InvalidValidationSet(f"{exc}; {how}") from exc
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise InvalidValidationSet(
            f"the validation set is not an .npz file ({exc}); {how}"
        ) from exc
    try:
        with np.load(path, allow_pickle=False) as data:
            inputs = np.asarray(data["inputs"])
            labels = np.asarray(data["labels"])
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise InvalidValidationSet(
            f"the validation set cannot be read without unpickling ({exc}); store plain "
            f"numeric arrays; {how}"
        ) from exc
    return check_validation_arrays(inputs, labels, app, num_classes=num_classes)


def check_validation_arrays(
    inputs: np.ndarray, labels: np.ndarray, app: App, *, num_classes: int | None
) -> ValidationInfo:
    signature = app.signature
    if inputs.ndim < 1 or len(inputs) == 0:
        raise InvalidValidationSet("the validation set has no rows; send at least one input")
    if inputs.dtype != np.dtype(signature.dtype):
        raise InvalidValidationSet(
            f"validation inputs are {inputs.dtype} but app {app.id!r} takes "
            f"{signature.dtype}; convert them with .astype({signature.dtype!r})"
        )
    if tuple(inputs.shape[1:]) != signature.item_shape:
        raise InvalidValidationSet(
            f"validation inputs have shape {list(inputs.shape)} but app {app.id!r} takes "
            f"[n, {', '.join(str(d) for d in signature.item_shape)}]"
        )
    if inputs.dtype.kind == "f" and not np.isfinite(inputs).all():
        raise InvalidValidationSet("validation inputs hold NaN or infinite values")
    if labels.ndim != 1:
        raise InvalidValidationSet(
            f"validation labels have shape {list(labels.shape)}; send one class index per "
            "input (a 1-D array)"
        )
    if labels.dtype.kind not in ("i", "u"):
        raise InvalidValidationSet(
            f"validation labels are {labels.dtype}; send integer class indices "
            "(e.g. .astype('int64'))"
        )
    if len(labels) != len(inputs):
        raise InvalidValidationSet(
            f"the validation set has {len(inputs)} inputs but {len(labels)} labels; "
            "send one label per input"
        )
    low, high = int(labels.min()), int(labels.max())
    if low < 0:
        raise InvalidValidationSet(f"validation labels must be >= 0; found {low}")
    if num_classes is not None and high >= num_classes:
        raise InvalidValidationSet(
            f"validation label {high} is out of range: app {app.id!r} / the model has "
            f"{num_classes} classes (labels 0..{num_classes - 1})"
        )
    return ValidationInfo(rows=len(inputs), labels_min=low, labels_max=high)

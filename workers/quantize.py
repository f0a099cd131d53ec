"""int8 quantisation of an ONNX graph with onnxruntime's quantiser: dynamic (weights
ahead of time) and static (QDQ, activations calibrated on validation rows). An artifact
must hold quantised operators; a graph the quantiser leaves unchanged is an error.
onnxruntime is imported inside the functions, as everywhere a variant is built."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from queues.errors import WorkerError

# The operators where int8 pays: quantisation is attempted only on graphs that have them.
QUANTIZABLE_OPS = ("MatMul", "Gemm", "Conv", "ConvTranspose")
_QUANTIZED_OPS = frozenset(
    {
        "MatMulInteger", "ConvInteger", "QLinearMatMul", "QLinearConv", "QuantizeLinear",
        "DequantizeLinear", "DynamicQuantizeLinear", "DynamicQuantizeMatMul", "QGemm",
    }
)  # fmt: skip


def quantized_op_types(path: Path) -> set[str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {n.op_type for n in model.graph.node} & _QUANTIZED_OPS


def prepare_for_quantization(source: Path, dest: Path) -> Path | None:
    """onnxruntime's recommended pre-processing (shape inference, basic optimisations that
    fold constants into initializers) so the quantiser sees every weight; None when it
    cannot be done for this graph."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # ONNX's own shape inference first: onnxruntime's symbolic one, when it gives up,
    # leaves a debug copy of the model in the current folder (cleaned up below).
    stray = Path.cwd() / "sym_shape_infer_temp.onnx"
    had_stray = stray.exists()
    try:
        for skip_symbolic in (True, False):
            try:
                quant_pre_process(source, dest, skip_symbolic_shape=skip_symbolic)
            except Exception:  # shape inference gives up on some graphs (ai.onnx.ml)
                dest.unlink(missing_ok=True)  # never leave a half-written graph behind
                continue
            return dest
        return None
    finally:
        if not had_stray:
            for leftover in (stray, stray.with_name(stray.name + ".data")):
                leftover.unlink(missing_ok=True)


def _quantize(kind: str, source: Path, dest: Path, quantize: Callable[[Path], object]) -> Path:
    """Quantise the pre-processed graph, else the graph as uploaded; the artifact must
    hold quantised operators."""
    # one pre-processed graph per source serves both int8 recipes
    pre = dest.with_name(f"{source.stem}.pre.onnx")
    prepared = pre if pre.exists() else prepare_for_quantization(source, pre)
    candidates = [p for p in (prepared, source) if p is not None]
    errors: list[str] = []
    for candidate in candidates:
        try:
            quantize(candidate)
        except Exception as exc:  # the quantiser raises many unrelated types
            errors.append(f"{type(exc).__name__}: {exc}")
            continue
        if quantized_op_types(dest):
            return dest
        errors.append("quantisation left the graph unchanged")
    dest.unlink(missing_ok=True)
    raise WorkerError(f"int8 {kind} quantisation failed: {errors[-1]}")


def quantize_onnx_dynamic(source: Path, dest: Path) -> Path:
    """Weights int8 ahead of time, activations quantised on the fly."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    return _quantize(
        "dynamic",
        source,
        dest,
        lambda model: quantize_dynamic(
            model, dest, weight_type=QuantType.QInt8, op_types_to_quantize=list(QUANTIZABLE_OPS)
        ),
    )


class _Calibration:
    """Feeds onnxruntime's static quantiser slices of the validation inputs."""

    def __init__(self, input_name: str, rows: np.ndarray, batch: int = 16) -> None:
        self._batches: Iterator[dict[str, np.ndarray]] = iter(
            [{input_name: rows[i : i + batch]} for i in range(0, len(rows), batch)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def quantize_onnx_static(source: Path, dest: Path, input_name: str, rows: np.ndarray) -> Path:
    """Weights and activations int8 (QDQ), with ranges calibrated on ``rows``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(_Calibration, CalibrationDataReader):  # type: ignore[misc]
        pass

    return _quantize(
        "static",
        source,
        dest,
        lambda model: quantize_static(
            model,
            dest,
            Reader(input_name, np.ascontiguousarray(rows)),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=list(QUANTIZABLE_OPS),
        ),
    )

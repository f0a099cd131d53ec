"""Variant generation: one uploaded model becomes every variant this hardware supports.

Planning is pure (:func:`plan_variants`: which variants, from what this worker can do);
building an artifact is I/O (:func:`build_artifact`). Each variant has its own id; the
variants of one *recipe* (e.g. ``onnx-fp32`` at 1, 2, 4 threads) share one artifact.

* CPU, ONNX upload: onnxruntime fp32 (graph optimised offline, the rest at load); int8
  dynamic and, with enough validation rows to calibrate, int8 static (QDQ) -- only where
  the graph has MatMul/Gemm/Conv to quantise; each at distinct thread counts.
* CPU, torch.export upload: torch fp32 at distinct thread counts.
* GPU, ONNX upload: onnxruntime CUDA fp32 where ``onnxruntime-gpu`` is installed;
  TensorRT fp16 where ``tensorrt`` imports.
* GPU, torch.export upload: torch CUDA fp32 and fp16 (eager), fp32, fp16 and bf16 (where
  the GPU has it) ``torch.compile``d.

An int8 variant is kept only if it is valid for the graph (quantisation changed it, it
runs, its accuracy is within a tolerance of fp32's) and not slower than fp32 at the same
thread count (:func:`int8_verdict`, measured by the registration).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from queues.errors import WorkerError
from registry.model_info import ONNX, TORCH
from registry.names import variant_id
from workers.quantize import QUANTIZABLE_OPS, quantize_onnx_dynamic, quantize_onnx_static
from workers.quiet import quiet_onnxruntime

# recipes: how an artifact is made; several variants may share one
ONNX_FP32 = "onnx-fp32"
ONNX_INT8_DYNAMIC = "onnx-int8-dynamic"
ONNX_INT8_STATIC = "onnx-int8-static"
ONNX_SOURCE = "onnx-source"
TENSORRT_FP16 = "tensorrt-fp16"
TORCH_PROGRAM = "torch-program"
RECIPE_SUFFIX = {
    ONNX_FP32: ".onnx",
    ONNX_INT8_DYNAMIC: ".onnx",
    ONNX_INT8_STATIC: ".onnx",
    ONNX_SOURCE: ".onnx",
    TENSORRT_FP16: ".plan",
    TORCH_PROGRAM: ".pt2",
}
TRT_OPT_BATCH = 8


@dataclass(frozen=True, slots=True)
class VariantPlan:
    id: str
    recipe: str
    runtime: str
    precision: str
    hardware: str
    threads: int = 0
    opt: str = ""
    reference: str = ""  # the fp32 variant an int8 one is measured against

    @property
    def suffix(self) -> str:
        return RECIPE_SUFFIX[self.recipe]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What this worker can build and run for one model (detected, then planned on)."""

    quantizable: bool = False  # the ONNX graph has an operator int8 rewrites
    calibration_rows: int = 0  # validation rows available to calibrate static int8
    cuda: bool = False  # torch sees a CUDA device
    bf16: bool = False  # ... that computes in bfloat16
    onnx_cuda: bool = False  # onnxruntime has the CUDA execution provider
    tensorrt: bool = False  # tensorrt imports


def cpu_thread_counts(cores: int, *, limit: int = 8) -> list[int]:
    """1, 2, 4, ... up to the cores this worker has (at most ``limit``)."""
    counts, threads = [], 1
    while threads <= min(cores, limit):
        counts.append(threads)
        threads *= 2
    return counts or [1]


def plan_variants(
    model: str,
    model_format: str,
    hardware: str,
    cores: int,
    caps: Capabilities,
    *,
    min_calibration_rows: int = 16,
) -> tuple[list[VariantPlan], list[str]]:
    """The variants to build, fp32 first (int8 ones are measured against them), and a
    note for each kind that is not built here and why."""
    if hardware == "cpu":
        return _plan_cpu(model, model_format, cores, caps, min_calibration_rows)
    if hardware == "gpu":
        return _plan_gpu(model, model_format, caps)
    raise WorkerError(f"unknown hardware {hardware!r}; known: cpu, gpu")


def _plan_cpu(
    model: str, model_format: str, cores: int, caps: Capabilities, min_rows: int
) -> tuple[list[VariantPlan], list[str]]:
    threads = cpu_thread_counts(cores)
    if model_format == TORCH:
        plans = [
            VariantPlan(
                variant_id(model, "torch", "fp32", "cpu", t),
                TORCH_PROGRAM,
                "torch",
                "fp32",
                "cpu",
                t,
            )
            for t in threads
        ]
        return plans, ["onnxruntime and int8 variants need an ONNX upload"]
    if model_format != ONNX:
        raise WorkerError(f"unknown model format {model_format!r}")
    fp32 = {t: variant_id(model, "onnx", "fp32", "cpu", t) for t in threads}
    plans = [VariantPlan(fp32[t], ONNX_FP32, "onnx", "fp32", "cpu", t) for t in threads]
    notes = ["torch variants need a torch.export upload"]
    if not caps.quantizable:
        notes.append(f"int8: the graph has none of {', '.join(QUANTIZABLE_OPS)} to quantise")
        return plans, notes
    kinds = ["dynamic"]
    if caps.calibration_rows >= min_rows:
        kinds.append("static")
    else:
        notes.append(
            f"int8 static: {caps.calibration_rows} validation rows, fewer than the "
            f"{min_rows} needed to calibrate"
        )
    for kind in kinds:
        recipe = ONNX_INT8_DYNAMIC if kind == "dynamic" else ONNX_INT8_STATIC
        plans.extend(
            VariantPlan(
                variant_id(model, "onnx", "int8", "cpu", t, kind),
                recipe,
                "onnx",
                "int8",
                "cpu",
                t,
                kind,
                reference=fp32[t],
            )
            for t in threads
        )
    return plans, notes


def _plan_gpu(
    model: str, model_format: str, caps: Capabilities
) -> tuple[list[VariantPlan], list[str]]:
    plans: list[VariantPlan] = []
    notes: list[str] = []
    if model_format == ONNX:
        if caps.onnx_cuda:
            plans.append(
                VariantPlan(
                    variant_id(model, "onnx", "fp32", "gpu"), ONNX_SOURCE, "onnx", "fp32", "gpu"
                )
            )
        else:
            notes.append("onnxruntime CUDA: onnxruntime-gpu is not installed on this worker")
        if caps.tensorrt and caps.cuda:
            plans.append(
                VariantPlan(
                    variant_id(model, "tensorrt", "fp16", "gpu"),
                    TENSORRT_FP16,
                    "tensorrt",
                    "fp16",
                    "gpu",
                )
            )
        else:
            notes.append("TensorRT: tensorrt is not importable (or no CUDA device) here")
        notes.append("torch CUDA variants need a torch.export upload")
        return plans, notes
    if not caps.cuda:
        return [], ["torch CUDA: torch sees no CUDA device on this worker"]
    kinds = [("fp32", ""), ("fp16", ""), ("fp32", "compiled"), ("fp16", "compiled")]
    if caps.bf16:
        kinds.append(("bf16", "compiled"))
    else:
        notes.append("bf16: this GPU does not compute in bfloat16")
    plans.extend(
        VariantPlan(
            variant_id(model, "torch", precision, "gpu", 0, opt),
            TORCH_PROGRAM,
            "torch",
            precision,
            "gpu",
            0,
            opt,
        )
        for precision, opt in kinds
    )
    notes.append("onnxruntime and TensorRT variants need an ONNX upload")
    return plans, notes


def int8_too_slow(*, fp32_p50_ms: float, int8_p50_ms: float, speed_tolerance: float) -> str:
    """Why an int8 variant is not worth keeping for its speed, or empty (pure)."""
    if int8_p50_ms > fp32_p50_ms * (1.0 + speed_tolerance):
        return (
            f"not kept: int8 is slower than fp32 (p50 {int8_p50_ms:.3f} ms against "
            f"{fp32_p50_ms:.3f} ms, measured side by side)"
        )
    return ""


def int8_inaccurate(*, fp32_accuracy: float, int8_accuracy: float, max_accuracy_drop: float) -> str:
    """Why an int8 variant is not valid for the graph by its accuracy, or empty (pure)."""
    if int8_accuracy < fp32_accuracy - max_accuracy_drop:
        return (
            f"not kept: int8 accuracy {int8_accuracy:.4f} is more than {max_accuracy_drop:g} "
            f"below fp32's {fp32_accuracy:.4f} (quantisation is not valid for this graph)"
        )
    return ""


def int8_verdict(
    *,
    fp32_accuracy: float,
    int8_accuracy: float,
    fp32_p50_ms: float,
    int8_p50_ms: float,
    max_accuracy_drop: float,
    speed_tolerance: float,
) -> str:
    """Empty when an int8 variant is worth keeping, else why not (pure)."""
    return int8_inaccurate(
        fp32_accuracy=fp32_accuracy,
        int8_accuracy=int8_accuracy,
        max_accuracy_drop=max_accuracy_drop,
    ) or int8_too_slow(
        fp32_p50_ms=fp32_p50_ms, int8_p50_ms=int8_p50_ms, speed_tolerance=speed_tolerance
    )


# ------------------------------------------------------------------------- detection


def onnx_op_types(source: Path) -> set[str]:
    import onnx

    model = onnx.load(str(source), load_external_data=False)
    return {n.op_type for n in model.graph.node if n.domain in ("", "ai.onnx")}


def detect_capabilities(hardware: str, model_format: str, source: Path, rows: int) -> Capabilities:
    """What this worker can do for this model. GPU libraries are imported only on a GPU
    worker, so a CPU worker never loads CUDA."""
    quantizable = model_format == ONNX and bool(onnx_op_types(source) & set(QUANTIZABLE_OPS))
    if hardware != "gpu":
        return Capabilities(quantizable=quantizable, calibration_rows=rows)
    cuda = bf16 = onnx_cuda = False
    try:
        import torch

        cuda = bool(torch.cuda.is_available())
        bf16 = cuda and bool(torch.cuda.is_bf16_supported())
    except ImportError:
        pass
    try:
        import onnxruntime as ort

        onnx_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    except ImportError:
        pass
    from workers.runtimes.tensorrt_backend import tensorrt_available

    return Capabilities(
        quantizable=quantizable,
        calibration_rows=rows,
        cuda=cuda,
        bf16=bf16,
        onnx_cuda=onnx_cuda,
        tensorrt=tensorrt_available(),
    )


# -------------------------------------------------------------------------- building


def build_artifact(
    recipe: str,
    source: Path,
    out_dir: Path,
    *,
    input_name: str,
    calibration: np.ndarray | None = None,
    max_batch: int = 64,
    verbose: bool = False,
) -> Path:
    """Make the artifact of ``recipe`` from the uploaded ``source`` in ``out_dir``;
    onnxruntime's warnings (the quantiser's above all) are shown only when ``verbose``."""
    with quiet_onnxruntime(verbose=verbose):
        return _build_artifact(
            recipe,
            source,
            out_dir,
            input_name=input_name,
            calibration=calibration,
            max_batch=max_batch,
        )


def _build_artifact(
    recipe: str,
    source: Path,
    out_dir: Path,
    *,
    input_name: str,
    calibration: np.ndarray | None,
    max_batch: int,
) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    dest = out_dir / f"{recipe}{RECIPE_SUFFIX[recipe]}"
    if recipe == ONNX_FP32:
        return optimize_onnx(source, dest)
    if recipe == ONNX_INT8_DYNAMIC:
        return quantize_onnx_dynamic(source, dest)
    if recipe == ONNX_INT8_STATIC:
        if calibration is None:
            raise WorkerError("static int8 needs calibration rows")
        return quantize_onnx_static(source, dest, input_name, calibration)
    if recipe == ONNX_SOURCE:
        shutil.copyfile(source, dest)
        return dest
    if recipe == TENSORRT_FP16:
        return build_tensorrt_engine(source, dest, input_name=input_name, max_batch=max_batch)
    if recipe == TORCH_PROGRAM:
        from registry.torch_programs import sanitize_archive

        # the stored copy passed the gateway's cap; stored, it unpacks to less than its size
        return sanitize_archive(source, dest, max_unpacked_bytes=source.stat().st_size)
    raise WorkerError(f"no recipe named {recipe!r}")


def optimize_onnx(source: Path, dest: Path) -> Path:
    """Save the graph after onnxruntime's portable (extended) optimisations; the
    hardware-specific layout passes still run when the variant is loaded."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(dest)
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise WorkerError(f"onnxruntime cannot optimise {source.name}: {exc}") from exc
    return dest


def build_tensorrt_engine(
    source: Path, dest: Path, *, input_name: str, max_batch: int = 64
) -> Path:
    """A TensorRT fp16 engine for batches 1..``max_batch`` from the ONNX graph (TensorRT 10
    API). Optional: runs only where tensorrt imports and a GPU is present."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise WorkerError("TensorRT is not installed on this worker") from exc
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(source.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise WorkerError(f"TensorRT cannot parse the ONNX graph: {errors}")
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    tensor = next((t for t in inputs if t.name == input_name), inputs[0] if inputs else None)
    if tensor is None:
        raise WorkerError("the ONNX graph has no input TensorRT can see")
    item = tuple(int(d) for d in tensor.shape)[1:]
    if any(d < 0 for d in item):
        raise WorkerError(
            f"TensorRT needs fixed item dimensions; the input is {tuple(tensor.shape)}"
        )
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    opt = min(TRT_OPT_BATCH, max_batch)
    profile.set_shape(tensor.name, (1, *item), (opt, *item), (max_batch, *item))
    config.add_optimization_profile(profile)
    serialized: Any = builder.build_serialized_network(network, config)
    if serialized is None:
        raise WorkerError("TensorRT could not build an fp16 engine for this graph")
    dest.write_bytes(bytes(serialized))
    return dest


def calibration_slice(inputs: np.ndarray, rows: int) -> np.ndarray:
    """The first ``rows`` validation inputs (deterministic, so a redone registration
    builds the same artifact)."""
    return np.ascontiguousarray(inputs[: max(1, rows)])


def describe_plans(plans: Sequence[VariantPlan]) -> str:
    return ", ".join(p.id for p in plans) or "none"

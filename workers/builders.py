"""Variant generation: one uploaded model becomes every variant this hardware supports.

Each variant is a separate artifact with its own id. On a CPU: onnxruntime fp32 with the
graph optimised offline, at distinct thread counts (the paper's CPU variants differed
in cores). Quantised and GPU variants are added by their own builders.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from queues.errors import WorkerError
from registry.names import variant_id


@dataclass(frozen=True, slots=True)
class VariantBuild:
    id: str
    runtime: str
    precision: str
    hardware: str
    threads: int
    artifact: Path
    opt: str = ""


def cpu_thread_counts(cores: int, *, limit: int = 8) -> list[int]:
    """1, 2, 4, ... up to the cores this worker has (at most ``limit``)."""
    counts, threads = [], 1
    while threads <= min(cores, limit):
        counts.append(threads)
        threads *= 2
    return counts or [1]


def optimize_onnx(source: Path, dest: Path) -> Path:
    """Save the graph after onnxruntime's portable (extended) optimisations; the
    hardware-specific layout passes still run when the variant is loaded."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(dest)
    options.intra_op_num_threads = 1
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise WorkerError(f"onnxruntime cannot optimise {source.name}: {exc}") from exc
    return dest


def build_onnx_cpu_variants(
    model: str, source: Path, out_dir: Path, cores: int
) -> list[VariantBuild]:
    optimized = optimize_onnx(source, out_dir / "onnx-fp32.onnx")
    return [
        VariantBuild(
            id=variant_id(model, "onnx", "fp32", "cpu", threads),
            runtime="onnx",
            precision="fp32",
            hardware="cpu",
            threads=threads,
            artifact=optimized,
        )
        for threads in cpu_thread_counts(cores)
    ]

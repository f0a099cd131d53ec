"""The one small interface every inference backend implements."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from queues.errors import WorkerError


class RunsAs(Protocol):
    """What a variant, catalogued or still planned, says about how it runs."""

    @property
    def runtime(self) -> str: ...
    @property
    def precision(self) -> str: ...
    @property
    def hardware(self) -> str: ...
    @property
    def threads(self) -> int: ...
    @property
    def opt(self) -> str: ...


@dataclass(frozen=True, slots=True)
class RuntimeSpec:
    """What a backend needs to load one variant's artifact."""

    runtime: str  # "onnx" | "torch" | "tensorrt"
    precision: str  # "fp32" | "fp16" | "bf16" | "int8"
    hardware: str  # "cpu" | "gpu"
    threads: int = 1
    opt: str = ""
    input_name: str = ""
    output_name: str = ""

    @classmethod
    def of_variant(cls, variant: RunsAs, input_name: str, output_name: str) -> RuntimeSpec:
        """The spec of a variant (catalogued or planned) with its app's input and its
        model's output names."""
        return cls(
            runtime=variant.runtime,
            precision=variant.precision,
            hardware=variant.hardware,
            threads=max(variant.threads, 1),
            opt=variant.opt,
            input_name=input_name,
            output_name=output_name,
        )


class Runtime(Protocol):
    """A loaded variant. ``predict`` takes a batch (first axis) and returns one output
    row per input row; it is safe to call from several threads at once."""

    spec: RuntimeSpec

    def predict(self, batch: np.ndarray) -> np.ndarray: ...

    def memory_bytes(self) -> int:
        """Memory this loaded variant holds at the least, known without measuring: its
        weights (device memory on a GPU). The profiler's ``memory_mb`` measures the rest
        and never reports less than this."""
        ...

    def close(self) -> None: ...


def load_runtime(spec: RuntimeSpec, artifact: Path) -> Runtime:
    """Load ``artifact`` with the backend ``spec.runtime`` names."""
    if spec.runtime == "onnx":
        from workers.runtimes.onnx_backend import OnnxRuntime

        return OnnxRuntime(spec, artifact)
    if spec.runtime == "torch":
        from workers.runtimes.torch_backend import TorchRuntime

        return TorchRuntime(spec, artifact)
    if spec.runtime == "tensorrt":
        from workers.runtimes.tensorrt_backend import TensorRTRuntime

        return TensorRTRuntime(spec, artifact)
    raise WorkerError(f"no runtime named {spec.runtime!r}; known: onnx, torch, tensorrt")

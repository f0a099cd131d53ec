"""The TensorRT backend: a serialised engine (``.plan``) run on one CUDA device.

Optional and unverified on this project's machines: TensorRT cannot be installed there
(its wheels come from a host they cannot reach). The code follows TensorRT 10's
tensor-address API (``set_tensor_address`` + ``execute_async_v3``) and keeps its buffers in
torch CUDA tensors, so it needs nothing beyond torch and tensorrt. Its tests run wherever
``import tensorrt`` works.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from queues.errors import InvalidInput, WorkerError
from workers.runtimes.base import RuntimeSpec


def tensorrt_available() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


class TensorRTRuntime:
    def __init__(self, spec: RuntimeSpec, artifact: Path) -> None:
        if spec.hardware != "gpu":
            raise WorkerError("TensorRT variants run on a GPU only")
        try:
            import tensorrt as trt
            import torch
        except ImportError as exc:
            raise WorkerError(
                "TensorRT is not installed on this worker; install requirements-gpu.txt"
            ) from exc
        if not torch.cuda.is_available():
            raise WorkerError("TensorRT needs a CUDA device and torch with CUDA")
        self.spec = spec
        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(self._logger)
        engine = runtime.deserialize_cuda_engine(artifact.read_bytes())
        if engine is None:
            raise WorkerError(f"{artifact.name} is not a TensorRT engine for this GPU/version")
        self._engine: Any = engine
        self._context: Any = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or not outputs:
            raise WorkerError(f"expected one input and an output, got {inputs} / {outputs}")
        self._input = spec.input_name if spec.input_name in inputs else inputs[0]
        self._output = spec.output_name if spec.output_name in outputs else outputs[0]
        self._stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]
        self._lock = threading.Lock()  # one execution context: one batch at a time
        self._closed = False

    def _torch_dtype(self, name: str) -> Any:
        import torch

        trt = self._trt
        mapping = {
            trt.float32: torch.float32,
            trt.float16: torch.float16,
            trt.int32: torch.int32,
            trt.int8: torch.int8,
        }
        return mapping[self._engine.get_tensor_dtype(name)]

    def predict(self, batch: np.ndarray) -> np.ndarray:
        import torch

        if self._closed:
            raise WorkerError("this TensorRT variant is closed")
        if batch.ndim < 1:
            raise InvalidInput("a batch needs a first (batch) dimension")
        with self._lock, torch.cuda.stream(self._stream):
            x = torch.from_numpy(np.ascontiguousarray(batch)).cuda()
            x = x.to(self._torch_dtype(self._input))
            if not self._context.set_input_shape(self._input, tuple(x.shape)):
                raise InvalidInput(f"the engine does not take inputs of shape {list(x.shape)}")
            out_shape = tuple(self._context.get_tensor_shape(self._output))
            out = torch.empty(out_shape, dtype=self._torch_dtype(self._output), device="cuda")
            self._context.set_tensor_address(self._input, x.data_ptr())
            self._context.set_tensor_address(self._output, out.data_ptr())
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise WorkerError("TensorRT failed to run the batch")
            self._stream.synchronize()
            return np.asarray(out.float().cpu().numpy(), dtype=np.float32)

    def memory_bytes(self) -> int:
        return int(getattr(self._engine, "device_memory_size_v2", 0) or 0)

    def close(self) -> None:
        self._closed = True
        self._context = None
        self._engine = None

"""The torch backend: a ``torch.export`` program on CPU or CUDA, eager or compiled.

Uploads are ``torch.export`` archives (``.pt2``): a serialised graph plus tensors, loaded
without unpickling user code. Precision is applied at load (``fp16``/``bf16`` cast the
module's parameters and inputs); ``opt == "compiled"`` wraps the module in
``torch.compile``. CUDA is touched only here and only when a GPU variant is loaded, after
the worker process has started (CUDA does not survive a fork).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from queues.errors import InvalidInput, WorkerError
from workers.runtimes.base import RuntimeSpec

_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def _device(hardware: str) -> str:
    import torch

    if hardware == "cpu":
        return "cpu"
    if hardware == "gpu":
        if not torch.cuda.is_available():
            raise WorkerError(
                "this variant runs on a GPU but torch sees no CUDA device; install the CUDA "
                "build of torch (requirements-gpu.txt) on a machine with an NVIDIA GPU"
            )
        return "cuda"
    raise WorkerError(f"unknown hardware {hardware!r}; known: cpu, gpu")


class TorchRuntime:
    def __init__(self, spec: RuntimeSpec, artifact: Path) -> None:
        import torch

        if spec.precision not in _DTYPES:
            raise WorkerError(f"torch variants take fp32, fp16 or bf16, not {spec.precision!r}")
        self.spec = spec
        self._device = _device(spec.hardware)
        self._dtype = getattr(torch, _DTYPES[spec.precision])
        if self._device == "cpu":
            torch.set_num_threads(max(spec.threads, 1))
        try:
            program = torch.export.load(str(artifact))
        except Exception as exc:
            raise WorkerError(
                f"could not load {artifact.name} as a torch.export program: {exc}"
            ) from exc
        module = program.module().to(self._device)
        if self._dtype != torch.float32:
            module = module.to(self._dtype)
        self._module: Any = torch.compile(module) if spec.opt == "compiled" else module
        self._lock = threading.Lock()  # torch.compile'd modules are not re-entrant
        self._memory = 0
        if self._device == "cuda":
            self._memory = int(torch.cuda.memory_allocated())
        else:
            self._memory = int(sum(p.numel() * p.element_size() for p in module.parameters()))
        self._closed = False

    def predict(self, batch: np.ndarray) -> np.ndarray:
        import torch

        if self._closed:
            raise WorkerError("this torch variant is closed")
        if batch.ndim < 1:
            raise InvalidInput("a batch needs a first (batch) dimension")
        with self._lock, torch.inference_mode():
            tensor = torch.from_numpy(np.ascontiguousarray(batch)).to(self._device)
            if tensor.is_floating_point():
                tensor = tensor.to(self._dtype)
            try:
                out = self._module(tensor)
            except Exception as exc:
                raise WorkerError(f"the torch program failed: {exc}") from exc
            if isinstance(out, tuple | list):
                out = out[0]
            return np.asarray(out.float().cpu().numpy(), dtype=np.float32)

    def memory_bytes(self) -> int:
        return self._memory

    def close(self) -> None:
        self._closed = True
        self._module = None
        if self._device == "cuda":
            import torch

            torch.cuda.empty_cache()

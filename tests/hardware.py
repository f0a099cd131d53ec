"""Tests of code paths that need a CUDA device, and the libraries only a CUDA host has.

Why these may skip, even in CI: CI runs on this project's CPU-only machines, where no CUDA
device exists and TensorRT and onnxruntime-gpu cannot be installed (their wheels come from
NVIDIA's index and need a CUDA host). Failing there would only say the machine has no GPU,
which no change to the code can fix. Each such test skips with its reason and runs wherever
a GPU is (``bash bench/gpu_check.sh`` is the one command for such a machine); the CPU side
of the same code paths (capability detection, the refusal without a device) is tested
everywhere.
"""

from __future__ import annotations

import functools

import pytest


@functools.cache
def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


NO_CUDA = "needs a CUDA GPU; CPU-only machines (CI's among them) cannot run it"
NO_ORT_GPU = "onnxruntime-gpu is not installed (it cannot be on CPU-only machines)"
NO_TENSORRT = "TensorRT is not installed (its wheels install only on a CUDA host)"
TENSORRT_NO_CUDA = f"TensorRT {NO_CUDA}"

# The only reasons a test may skip with in CI (CI=true): tests/conftest.py fails the run
# when any other skip happened there, so a missing service, package or fixture that turns
# into a skip cannot pass unseen. Add a reason here only for hardware CI cannot have.
ALLOWED_SKIP_REASONS = frozenset({NO_CUDA, NO_ORT_GPU, NO_TENSORRT, TENSORRT_NO_CUDA})

# May skip, in CI too (CI=true): a test of a GPU code path runs on a CUDA machine and
# skips elsewhere with NO_CUDA as its reason, because CI's CPU-only machines have no CUDA
# device and cannot get one; failing there would say nothing about the code (see above).
needs_cuda = pytest.mark.skipif(not cuda_available(), reason=NO_CUDA)  # may skip in CI: no GPU

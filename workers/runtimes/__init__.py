"""One module per inference backend behind :class:`workers.runtimes.base.Runtime`.

Heavy imports (onnxruntime, torch, tensorrt) stay inside each backend module, so a
CPU-only install never imports CUDA and importing this package costs nothing.
"""

from workers.runtimes.base import Runtime, RuntimeSpec, load_runtime

__all__ = ["Runtime", "RuntimeSpec", "load_runtime"]

"""What registration knows of an uploaded model, whatever its format: the formats, the
model's input and outputs, and which output is served. Shared by the ONNX checks
(``registry/uploads.py``) and the ``torch.export`` checks (``registry/torch_programs.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from queues.errors import InvalidModel
from registry.types import InputSignature

ONNX = "onnx"
TORCH = "torch"
MODEL_FORMATS = (ONNX, TORCH)
SUFFIXES = {ONNX: ".onnx", TORCH: ".pt2"}
_FLOAT_DTYPES = frozenset({"float16", "float32", "float64", "bfloat16"})
# what an uploaded archive (validation set, .pt2) may unpack to: the gateway passes its
# upload limit (INFAAS_MAX_UPLOAD_MB), so compression buys bandwidth, not memory; this is
# that limit's default
DEFAULT_MAX_UNPACKED_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class OutputInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]  # -1 where dynamic


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What registration needs to know about an uploaded model."""

    format: str
    input: InputSignature  # -1 where a dimension is dynamic
    outputs: tuple[OutputInfo, ...]
    output_name: str

    @property
    def suffix(self) -> str:
        return SUFFIXES[self.format]

    @property
    def output_width(self) -> int | None:
        """Classes of a ``[batch, classes]`` output, when the model fixes them."""
        chosen = next(o for o in self.outputs if o.name == self.output_name)
        if len(chosen.shape) == 2 and chosen.shape[1] > 0:
            return chosen.shape[1]
        return None


def pick_output(outputs: tuple[OutputInfo, ...], wanted: str | None) -> str:
    """The output to serve: the one named ``wanted``, else the first float output of
    rank 2 (scores per class), as the runtimes choose it."""
    names = ", ".join(f"{o.name} {o.dtype} {list(o.shape)}" for o in outputs) or "none"
    if wanted:
        if any(o.name == wanted for o in outputs):
            return wanted
        raise InvalidModel(f"the model has no output {wanted!r}; its outputs: {names}")
    for candidate in outputs:
        if candidate.dtype in _FLOAT_DTYPES and len(candidate.shape) == 2:
            return candidate.name
    raise InvalidModel(
        f"the model has no float output of shape [batch, classes] ({names}); name the "
        "output to serve with the 'output' field"
    )

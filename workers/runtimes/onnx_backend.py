"""The ONNX backend: one onnxruntime ``InferenceSession`` per loaded variant.

The session is tuned for a worker that shares its cores with other processes:
``intra_op_num_threads = spec.threads``, one inter-op thread, sequential execution and
no busy-spinning of idle threads (spinning would burn the CPU time other replicas need).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from queues.errors import InvalidInput, WorkerError
from workers.runtimes.base import RuntimeSpec

# onnxruntime's element type strings -> numpy dtypes.
_ORT_DTYPES: dict[str, np.dtype[Any]] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(double)": np.dtype(np.float64),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(int16)": np.dtype(np.int16),
    "tensor(uint16)": np.dtype(np.uint16),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(uint32)": np.dtype(np.uint32),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(uint64)": np.dtype(np.uint64),
    "tensor(bool)": np.dtype(np.bool_),
}
_FLOAT_TYPES = ("tensor(float)", "tensor(double)", "tensor(float16)", "tensor(bfloat16)")


def initializer_bytes(artifact: Path) -> int:
    """The bytes of an ONNX graph's weights (its initializers, wherever their data is
    kept), from their shapes and element types."""
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    model = onnx.load(str(artifact), load_external_data=False)
    total = 0
    for tensor in model.graph.initializer:
        count = 1
        for dim in tensor.dims:
            count *= int(dim)
        try:
            itemsize = np.dtype(tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
        except (KeyError, TypeError):  # a type numpy has no dtype for (e.g. 4-bit)
            itemsize = 1
        total += count * itemsize
    return total


def _providers(hardware: str, available: list[str]) -> list[str]:
    if hardware == "cpu":
        return ["CPUExecutionProvider"]
    if hardware == "gpu":
        if "CUDAExecutionProvider" not in available:
            raise WorkerError(
                "this variant runs on a GPU but onnxruntime-gpu is not installed "
                "(CUDAExecutionProvider is missing); install requirements-gpu.txt"
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise WorkerError(f"unknown hardware {hardware!r}; known: cpu, gpu")


def _dims(shape: Any) -> tuple[int, ...]:
    """An onnxruntime shape (ints, symbolic names or None) with -1 for dynamic dims."""
    return tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (shape or ()))


class OnnxRuntime:
    """A loaded ONNX variant (see :class:`workers.runtimes.base.Runtime`)."""

    def __init__(self, spec: RuntimeSpec, artifact: Path) -> None:
        import onnxruntime as ort

        self.spec = spec
        self.artifact = Path(artifact)
        if not self.artifact.is_file():
            raise WorkerError(f"ONNX artifact {self.artifact} does not exist")
        if spec.threads < 1:
            raise WorkerError(f"threads must be at least 1, got {spec.threads}")
        providers = _providers(spec.hardware, ort.get_available_providers())

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = spec.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Idle threads sleep instead of spinning: the worker shares its cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        options.log_severity_level = 3

        try:
            self._session: Any = ort.InferenceSession(
                str(self.artifact), sess_options=options, providers=providers
            )
        except Exception as exc:
            raise WorkerError(
                f"could not load {self.artifact.name} as an ONNX model: {type(exc).__name__}: {exc}"
            ) from exc
        self._weights_bytes: int | None = None  # read from the graph when first asked
        self._input = self._pick_input()
        input_dtype = _ORT_DTYPES.get(self._input.type)
        if input_dtype is None:
            raise WorkerError(
                f"input {self._input.name!r} of {self.artifact.name} has unsupported "
                f"type {self._input.type}"
            )
        self._input_dtype: np.dtype[Any] = input_dtype
        self._output_name: str = self._pick_output()

    def _pick_input(self) -> Any:
        inputs = self._session.get_inputs()
        names = ", ".join(i.name for i in inputs)
        if self.spec.input_name:
            for candidate in inputs:
                if candidate.name == self.spec.input_name:
                    return candidate
            raise WorkerError(
                f"{self.artifact.name} has no input {self.spec.input_name!r}; inputs: {names}"
            )
        if len(inputs) != 1:
            raise WorkerError(
                f"{self.artifact.name} has {len(inputs)} inputs ({names}); "
                "name the one to feed with input_name"
            )
        return inputs[0]

    def _pick_output(self) -> str:
        outputs = self._session.get_outputs()
        if self.spec.output_name:
            if not any(o.name == self.spec.output_name for o in outputs):
                names = ", ".join(o.name for o in outputs)
                raise WorkerError(
                    f"{self.artifact.name} has no output {self.spec.output_name!r}; "
                    f"outputs: {names}"
                )
            return self.spec.output_name
        for output in outputs:
            if output.type in _FLOAT_TYPES and len(output.shape or ()) == 2:
                return str(output.name)
        described = ", ".join(f"{o.name} {o.type} {o.shape}" for o in outputs)
        raise WorkerError(
            f"{self.artifact.name} has no float output of rank 2 ({described}); "
            "name the output with output_name"
        )

    # -- Runtime protocol -------------------------------------------------------------

    def predict(self, batch: np.ndarray) -> np.ndarray:
        session = self._session
        if session is None:
            raise WorkerError(f"runtime for {self.artifact.name} is closed")
        array = np.asarray(batch)
        expected = _dims(self._input.shape)
        # A model that declares no shape for its input gets whatever it is fed.
        if expected and (
            array.ndim != len(expected)
            or any(
                want not in (-1, got)
                for want, got in zip(expected[1:], array.shape[1:], strict=True)
            )
        ):
            raise InvalidInput(
                f"input {self._input.name!r} expects shape {list(expected)} (-1: any), "
                f"got {list(array.shape)}"
            )
        if array.dtype != self._input_dtype:
            try:
                array = array.astype(self._input_dtype)
            except (TypeError, ValueError) as exc:
                raise InvalidInput(
                    f"cannot cast input of dtype {array.dtype} to {self._input_dtype}: {exc}"
                ) from exc
        try:
            (result,) = session.run([self._output_name], {self._input.name: array})
        except Exception as exc:
            raise WorkerError(
                f"{self.artifact.name} failed on a batch of shape {list(array.shape)}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        out = np.asarray(result, dtype=np.float32)
        if out.ndim == 0 or out.shape[0] != array.shape[0]:
            raise WorkerError(
                f"{self.artifact.name} returned shape {list(out.shape)} for {array.shape[0]} inputs"
            )
        return out

    def memory_bytes(self) -> int:
        """The bytes of the graph's weights: what the session holds at the least (the
        profiler measures the rest, :func:`workers.profiler.loaded_bytes`)."""
        if self._weights_bytes is None:
            self._weights_bytes = initializer_bytes(self.artifact)
        return self._weights_bytes

    def close(self) -> None:
        self._session = None

    # -- extras for registration --------------------------------------------------------

    @property
    def output_name(self) -> str:
        return self._output_name

    def input_signature(self) -> tuple[str, str, tuple[int, ...]]:
        """``(name, numpy dtype name, shape)``, with -1 for dynamic dimensions."""
        return self._input.name, self._input_dtype.name, _dims(self._input.shape)

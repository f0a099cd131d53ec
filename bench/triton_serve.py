"""One ONNX model served by NVIDIA Triton through PyTriton, on CPU, with dynamic batching.

Run by the isolated PyTriton venv's interpreter (``bench.triton_peer.triton_python()``),
never the project's: it imports only PyTriton, numpy and onnxruntime, and is run as a
file (``python bench/triton_serve.py --onnx model.onnx --input-name input --port 8000``),
not as ``bench.triton_serve``, so that nothing of the project is imported. It serves until
SIGTERM or SIGINT, then stops tritonserver and its Python backend stubs.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sysconfig
import threading
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch  # type: ignore[import-not-found]
from pytriton.model_config import (  # type: ignore[import-not-found]
    DynamicBatcher,
    ModelConfig,
    Tensor,
)
from pytriton.triton import Triton, TritonConfig  # type: ignore[import-not-found]

_NUMPY_OF_ORT = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}


def _per_row_shape(shape: list[Any]) -> tuple[int, ...]:
    """An ONNX tensor's shape without its batch axis; symbolic axes as -1."""
    return tuple(d if isinstance(d, int) and d > 0 else -1 for d in shape[1:])


def _pick_output(session: ort.InferenceSession, name: str | None) -> Any:
    """The named output, else the first floating-point one (probabilities or logits: a
    scikit-learn classifier's ONNX gives its labels first), else the first."""
    outputs = session.get_outputs()
    if name:
        for output in outputs:
            if output.name == name:
                return output
        raise SystemExit(f"the ONNX model has no output {name!r}: {[o.name for o in outputs]}")
    floats = [o for o in outputs if o.type in ("tensor(float)", "tensor(double)")]
    return (floats or outputs)[0]


def _own_libpython_first() -> None:
    """Let the Python backend stubs load this interpreter's libpython, not the system's.

    The stub (started by tritonserver) needs ``libpython3.X.so.1.0`` and runs this venv's
    standard library; without this it takes whichever the dynamic linker finds first
    (Debian's /usr/lib), and a different patch release fails at start (3.11.2's C code
    under 3.11.7's library: ``'_thread.RLock' object has no attribute
    '_recursion_count'``). The children inherit this environment."""
    libdir = sysconfig.get_config_var("LIBDIR")
    ldlibrary = sysconfig.get_config_var("INSTSONAME") or sysconfig.get_config_var("LDLIBRARY")
    if libdir and ldlibrary and (Path(libdir) / ldlibrary).exists():
        paths = [libdir, *filter(None, os.environ.get("LD_LIBRARY_PATH", "").split(":"))]
        os.environ["LD_LIBRARY_PATH"] = ":".join(dict.fromkeys(paths))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, required=True)
    parser.add_argument("--input-name", required=True)
    parser.add_argument("--output-name", default=None)
    parser.add_argument("--model-name", default="digits")
    parser.add_argument("--port", type=int, required=True, help="HTTP")
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--queue-delay-us", type=int, default=2000)
    parser.add_argument("--workspace", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        str(args.onnx), sess_options=options, providers=["CPUExecutionProvider"]
    )
    inputs = {i.name: i for i in session.get_inputs()}
    if args.input_name not in inputs:
        raise SystemExit(f"the ONNX model has no input {args.input_name!r}: {list(inputs)}")
    output = _pick_output(session, args.output_name)
    in_shape = _per_row_shape(inputs[args.input_name].shape)
    out_shape = _per_row_shape(output.shape) or (1,)
    out_dtype = _NUMPY_OF_ORT.get(output.type, np.float32)
    input_name, output_name = args.input_name, output.name

    @batch  # type: ignore[untyped-decorator]  # PyTriton's decorators are untyped
    def infer(**stacked: np.ndarray) -> dict[str, np.ndarray]:
        rows = stacked[input_name].astype(np.float32, copy=False)
        (result,) = session.run([output_name], {input_name: rows})
        return {output_name: np.asarray(result, dtype=out_dtype).reshape(len(rows), *out_shape)}

    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=args.port,
        grpc_address="127.0.0.1",
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        allow_gpu_metrics=False,
        exit_on_error=True,
        exit_timeout_secs=5,
    )
    _own_libpython_first()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    triton = Triton(config=config, workspace=args.workspace)
    try:
        triton.bind(
            model_name=args.model_name,
            infer_func=infer,
            inputs=[Tensor(name=input_name, dtype=np.float32, shape=in_shape)],
            outputs=[Tensor(name=output_name, dtype=out_dtype, shape=out_shape)],
            config=ModelConfig(
                max_batch_size=args.max_batch,
                batcher=DynamicBatcher(max_queue_delay_microseconds=args.queue_delay_us),
            ),
            strict=True,
        )
        triton.run()
        print(f"triton_serve: ready, pid {os.getpid()}", flush=True)
        while not stop.wait(1.0):
            if not triton.is_alive():
                raise SystemExit("tritonserver or the model's proxy died")
    finally:
        triton.stop()


if __name__ == "__main__":
    main()

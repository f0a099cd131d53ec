"""NVIDIA Triton, through PyTriton, as a peer for the benchmarks: the same ONNX model
served by tritonserver with dynamic batching, beside our own server, on the same machine.

PyTriton 0.7 bundles tritonserver (it runs on CPU) but needs numpy < 2, so it lives in an
isolated venv of its own, never the project's: ``triton_python()`` builds it once per
version of ``bench/requirements-triton.txt`` in the test cache (``tests/cached_venv.py``,
which builds the KServe SDK's too, with uv and pip's own index settings). ``bench/triton_serve.py``
runs under that interpreter; ``triton_server()`` starts it, waits until the model is
ready, and yields a ``TritonPeer`` with the URL, the inference path, a KServe v2 JSON body
for one row, and the process ids of the whole server tree (for CPU time from /proc).

    with triton_server(onnx_path, "input") as peer:
        result = asyncio.run(closed_loop(peer.url, peer.infer_path, peer.body(row),
                                         concurrency=8, duration_s=3))

``python -m bench.triton_peer check`` exports a small digits MLP to ONNX, serves it,
compares one answer with onnxruntime's and runs a short closed-loop load (8 clients, 3 s);
``python -m bench.triton_peer venv`` only builds the venv and prints its interpreter.

Notes (2-core shared CPU machine, no GPU, Debian 12, pyenv Python 3.11.7):

- The venv (about 380 MB installed; the wheel is 55 MB) builds in about 12 s with an empty
  uv cache, 3 s with a warm one; once built, ``triton_python()`` returns at once.
- tritonserver 2.51 (bundled) starts on CPU; it logs that CUDA is missing and carries on.
  The model is ready 6-8 s after the start; the stop takes up to about 6 s.
- The tree: the PyTriton process (our ``@batch`` function, onnxruntime) starts
  tritonserver, which starts a Python backend stub, which starts two multiprocessing
  helpers; all share one session, and ``TritonPeer.pids`` lists them all.
- The stub links ``libpython3.11.so.1.0`` and runs the venv's standard library: with a
  pyenv (or any non-system) Python it must load that Python's libpython, not Debian's, or
  it fails at start (``'_thread.RLock' object has no attribute '_recursion_count'``);
  ``bench/triton_serve.py`` puts the interpreter's LIBDIR first in LD_LIBRARY_PATH. A Python
  built without ``--enable-shared`` has no libpython of its own to offer the stub.
- ``check`` on that machine (digits MLP 64-64-10, max batch 32, 2 ms queue delay, 8 clients
  for 3 s, the load generator on the same 2 cores, other work on the machine): 443-691
  requests/s, p50 12-15 ms, p99 25-44 ms, no errors, the server tree using 2.5-2.8
  CPU-seconds of the 6 available, 6.2 requests per model execution (Triton's metrics).
- No pytest test: the suite has no opt-in marker (``integration`` and ``slow`` run by
  default) and CI fails on skips other than for GPUs, so a 380 MB venv build would land in
  every run. ``python -m bench.triton_peer check`` is the check.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tests.cached_venv import VenvBuildError, cached_python
from tests.services import free_port

REQUIREMENTS = Path(__file__).with_name("requirements-triton.txt")
SERVE_SCRIPT = Path(__file__).with_name("triton_serve.py")
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0
LOG_TAIL_CHARS = 4000


class TritonPeerError(RuntimeError):
    """The Triton peer could not be built or started; the message says what to do."""


def triton_python() -> Path:
    """The interpreter of the PyTriton venv, built first if the test cache has none."""
    try:
        return cached_python(REQUIREMENTS, "triton-venv")
    except VenvBuildError as exc:
        raise TritonPeerError(
            f"{exc}\n(PyTriton's wheel needs glibc >= 2.35 and x86_64 or aarch64)"
        ) from exc


@dataclass(frozen=True)
class TritonPeer:
    """A running Triton serving one model over KServe v2 (Open Inference Protocol) HTTP."""

    url: str  # http://127.0.0.1:PORT
    infer_path: str  # /v2/models/{name}/infer
    input_name: str
    model_name: str
    pids: tuple[int, ...]  # the server tree: the PyTriton process, tritonserver, the stubs
    log_path: Path
    ports: dict[str, int] = field(default_factory=dict)  # http, grpc, metrics

    def body(self, sample: np.ndarray) -> bytes:
        """A KServe v2 JSON inference request for one row (its features, any shape)."""
        row = np.asarray(sample, dtype=np.float32)
        if row.ndim > 1 and row.shape[0] == 1:
            row = row[0]
        request = {
            "inputs": [
                {
                    "name": self.input_name,
                    "shape": [1, *row.shape],
                    "datatype": "FP32",
                    "data": row.ravel().tolist(),
                }
            ]
        }
        return json.dumps(request).encode()

    def cpu_seconds(self) -> float:
        """User and system CPU time so far of every process of the server tree (/proc)."""
        import psutil

        total = 0.0
        for pid in self.pids:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                times = psutil.Process(pid).cpu_times()
                total += times.user + times.system
        return total


@contextlib.contextmanager
def triton_server(
    onnx_path: Path,
    input_name: str,
    *,
    max_batch: int = 32,
    queue_delay_us: int = 2000,
    model_name: str = "digits",
    output_name: str | None = None,
    ready_timeout_s: float = READY_TIMEOUT_S,
) -> Iterator[TritonPeer]:
    """Triton serving ``onnx_path`` on CPU (onnxruntime, one intra- and one inter-op thread)
    behind PyTriton's ``@batch`` with dynamic batching (up to ``max_batch`` rows, waiting at
    most ``queue_delay_us``); the whole process tree is stopped on exit."""
    onnx_path = Path(onnx_path).resolve()
    if not onnx_path.is_file():
        raise TritonPeerError(f"no ONNX model at {onnx_path}")
    python = triton_python()
    scratch = Path(tempfile.mkdtemp(prefix="triton-peer-"))
    log_path = scratch / "server.log"
    ports: dict[str, int] = {}
    for name in ("http", "grpc", "metrics"):
        port = free_port()
        while port in ports.values():
            port = free_port()
        ports[name] = port
    command = [
        str(python), str(SERVE_SCRIPT), "--onnx", str(onnx_path), "--input-name", input_name,
        "--model-name", model_name, "--port", str(ports["http"]),
        "--grpc-port", str(ports["grpc"]), "--metrics-port", str(ports["metrics"]),
        "--max-batch", str(max_batch), "--queue-delay-us", str(queue_delay_us),
        "--workspace", str(scratch / "workspace"),
        *(["--output-name", output_name] if output_name else []),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": ""}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=scratch, env=env, start_new_session=True,
        )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{ports['http']}"
        _wait_ready(process, command, url, model_name, log_path, ready_timeout_s)
        yield TritonPeer(
            url=url,
            infer_path=f"/v2/models/{model_name}/infer",
            input_name=input_name,
            model_name=model_name,
            pids=_tree(process.pid),
            log_path=log_path,
            ports=ports,
        )
    finally:
        _stop(process)
        shutil.rmtree(scratch, ignore_errors=True)


def _log_tail(log_path: Path) -> str:
    try:
        return log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
    except OSError:
        return "(no log)"


def _wait_ready(
    process: subprocess.Popen[bytes],
    command: list[str],
    url: str,
    model: str,
    log_path: Path,
    timeout_s: float,
) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=url, timeout=5.0) as client:
        while True:
            if process.poll() is not None:
                raise TritonPeerError(
                    f"the Triton peer exited with status {process.returncode} before it was "
                    f"ready (`{' '.join(command)}`); its log ends:\n"
                    f"{_log_tail(log_path)}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if (
                    client.get("/v2/health/ready").status_code == 200
                    and client.get(f"/v2/models/{model}/ready").status_code == 200
                ):
                    return
            if time.monotonic() > deadline:
                raise TritonPeerError(
                    f"the Triton peer was not ready at {url} (server and model {model!r}) "
                    f"after {timeout_s:.0f} s; raise ready_timeout_s on a slow machine, or "
                    f"read its log; it ends:\n{_log_tail(log_path)}"
                )
            time.sleep(0.25)


def _tree(pid: int) -> tuple[int, ...]:
    """``pid`` and all its descendants, alive now."""
    import psutil

    try:
        root = psutil.Process(pid)
        return (pid, *(child.pid for child in root.children(recursive=True)))
    except psutil.NoSuchProcess:
        return ()


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the PyTriton process (it stops tritonserver and the stubs), then SIGKILL
    to whatever of its tree is left."""
    import psutil

    tree = _tree(process.pid)
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)
    deadline = time.monotonic() + 5.0
    for pid in tree[1:]:
        with contextlib.suppress(psutil.NoSuchProcess):
            child = psutil.Process(pid)
            try:
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except psutil.TimeoutExpired:
                child.kill()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # its own session: anything forked since


def _digits_onnx(folder: Path) -> tuple[Path, str, np.ndarray]:
    """A small MLP on scikit-learn's digits, as ONNX (labels, then probabilities)."""
    from skl2onnx import to_onnx
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    features, labels = load_digits(return_X_y=True)
    features = (features / 16.0).astype(np.float32)
    model = MLPClassifier(hidden_layer_sizes=(64,), max_iter=100, random_state=0)
    with threadpool_limits(1):  # a shared machine: one BLAS thread
        model.fit(features, labels)
    path = folder / "digits.onnx"
    path.write_bytes(to_onnx(model, features[:1], options={"zipmap": False}).SerializeToString())
    return path, "X", features


def _batch_counts(peer: TritonPeer) -> tuple[float, float]:
    """Triton's own count of inferences and of model executions (batches) so far, from
    its Prometheus metrics."""
    import httpx

    text = httpx.get(f"http://127.0.0.1:{peer.ports['metrics']}/metrics", timeout=10).text
    found = {"nv_inference_count": 0.0, "nv_inference_exec_count": 0.0}
    for line in text.splitlines():
        name, _, rest = line.partition("{")
        if name in found and f'model="{peer.model_name}"' in rest:
            found[name] += float(rest.rsplit(" ", 1)[1])
    return found["nv_inference_count"], found["nv_inference_exec_count"]


def check(concurrency: int = 8, duration_s: float = 3.0) -> None:
    """Serve a digits MLP, compare one answer with onnxruntime's, run a short load."""
    import warnings

    import httpx
    import onnxruntime as ort

    from bench.loadgen import closed_loop

    started = time.perf_counter()
    python = triton_python()
    print(f"PyTriton venv: {python.parent.parent} ({time.perf_counter() - started:.1f} s)")
    with tempfile.TemporaryDirectory(prefix="triton-check-") as folder:
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            onnx_path, input_name, features = _digits_onnx(Path(folder))
        print(f"digits MLP trained and exported in {time.perf_counter() - started:.1f} s")
        row = features[7]
        (expected,) = ort.InferenceSession(str(onnx_path)).run(
            ["probabilities"], {input_name: row[None, :]}
        )
        started = time.perf_counter()
        with triton_server(onnx_path, input_name) as peer:
            print(f"ready in {time.perf_counter() - started:.1f} s at {peer.url}, pids {peer.pids}")
            answer = httpx.post(peer.url + peer.infer_path, content=peer.body(row), timeout=10)
            answer.raise_for_status()
            (output,) = answer.json()["outputs"]
            got = np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])
            if not np.allclose(got, expected, atol=1e-6):
                raise SystemExit(f"Triton answered {got}, onnxruntime {expected}")
            print(f"answer matches onnxruntime: {output['name']} {output['shape']}, max |diff| "
                  f"{float(np.abs(got - expected).max()):.2e}")  # fmt: skip
            cpu_before = peer.cpu_seconds()
            result = asyncio.run(
                closed_loop(
                    peer.url,
                    peer.infer_path,
                    peer.body(row),
                    concurrency=concurrency,
                    duration_s=duration_s,
                )
            )
            cpu = peer.cpu_seconds() - cpu_before
            counts = _batch_counts(peer)
            mean_batch = counts[0] / counts[1] if counts[1] else float("nan")
            summary = {**result.summary(), "server_cpu_s": round(cpu, 2)}
            print(json.dumps({**summary, "mean_batch": round(mean_batch, 2)}))
            if result.errors:
                print("errors:", result.error_samples)
            pids = peer.pids
            stopping = time.perf_counter()
    import psutil

    left = [pid for pid in pids if psutil.pid_exists(pid)]
    print(f"stopped in {time.perf_counter() - stopping:.1f} s; left: {left or 'none'}")


def main() -> None:
    parser = argparse.ArgumentParser(description="NVIDIA Triton (PyTriton) as a benchmark peer")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("venv", help="build the PyTriton venv (if needed) and print its python")
    check_parser = sub.add_parser("check", help="serve a digits MLP, check it, load it briefly")
    check_parser.add_argument("--concurrency", type=int, default=8)
    check_parser.add_argument("--duration", type=float, default=3.0)
    args = parser.parse_args()
    if args.command == "venv":
        print(triton_python())
    else:
        check(args.concurrency, args.duration)


if __name__ == "__main__":
    main()

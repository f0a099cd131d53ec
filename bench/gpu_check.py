"""GPU check: generate and profile the GPU variants of a demo model on an NVIDIA GPU.

Two steps, so that the GPU machine needs nothing beyond Python with a CUDA build of torch:

``prepare`` (here, with the project's environment) writes a *bundle*: the demo model
``digits-mlp-large`` converted from its ONNX graph to plain weights (``.npz``, checked
against onnxruntime), the digits validation set, the fp32 accuracy onnxruntime measures,
and copies of the pure-Python-ABI packages the profiler needs (``psutil``, and ``numpy``
in case the GPU machine has none).

``run`` (on the GPU machine) rebuilds the model in torch, exports it with
``torch.export`` (on that machine's torch version), and runs the registration core
(:func:`workers.registration.build_and_profile`) for hardware ``gpu``: the same planning,
safe loading, building and profiling a GPU worker does, without catalog, store or
broker. Profiles go to ``bench/results/profile-gpu.json``.

``bench/gpu_check.sh`` runs both as one command.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_BUNDLE = REPO / ".infaas" / "gpu-check"
DEFAULT_OUT = REPO / "bench" / "results" / "profile-gpu.json"
MODEL_ID = "digits-mlp-large"
INPUT_NAME = "input"
BATCH_SIZES = (1, 4, 8, 16, 32, 64)
ACCURACY_TOLERANCE = 0.005
VENDORED = ("psutil",)
VENDORED_NUMPY = ("numpy", "numpy.libs")


# ------------------------------------------------------------------------- prepare


def onnx_chain(path: Path) -> tuple[list[dict[str, str]], dict[str, np.ndarray]]:
    """The feed-forward chain of an skl2onnx MLP (Scaler, MatMul + Add, Relu, Softmax)
    from its input to ``probabilities``, as steps over named arrays."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    initializers = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    consumers = {name: n for n in model.graph.node for name in n.input}
    steps: list[dict[str, str]] = []
    arrays: dict[str, np.ndarray] = {}
    tensor = model.graph.input[0].name

    def keep(value: np.ndarray) -> str:
        name = f"a{len(arrays)}"
        arrays[name] = np.ascontiguousarray(value, dtype=np.float32)
        return name

    while tensor != "probabilities":
        node = consumers.get(tensor)
        if node is None:
            raise SystemExit(f"{path.name}: the chain ends at {tensor!r} before probabilities")
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        other = [i for i in node.input if i != tensor]
        if node.op_type == "Scaler":
            offset, scale = np.asarray(attrs["offset"]), np.asarray(attrs["scale"])
            steps.append({"op": "scaler", "offset": keep(offset), "scale": keep(scale)})
        elif node.op_type == "MatMul" and other and other[0] in initializers:
            steps.append({"op": "matmul", "weight": keep(initializers[other[0]])})
        elif node.op_type == "Add" and other and other[0] in initializers:
            steps.append({"op": "add", "bias": keep(initializers[other[0]])})
        elif node.op_type == "Relu":
            steps.append({"op": "relu"})
        elif node.op_type == "Softmax":
            steps.append({"op": "softmax"})
        elif node.op_type not in ("Cast", "Identity"):
            raise SystemExit(f"{path.name}: operator {node.op_type} is not supported here")
        tensor = node.output[0]
    return steps, arrays


def build_module(steps: list[dict[str, str]], arrays: dict[str, np.ndarray]) -> Any:
    import torch
    from torch import nn

    class Chain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            for name, value in arrays.items():
                self.register_buffer(name, torch.from_numpy(value.copy()))

        def forward(self, input: torch.Tensor) -> torch.Tensor:
            x = input
            for step in steps:
                op = step["op"]
                if op == "scaler":
                    x = (x - getattr(self, step["offset"])) * getattr(self, step["scale"])
                elif op == "matmul":
                    x = x @ getattr(self, step["weight"])
                elif op == "add":
                    x = x + getattr(self, step["bias"])
                elif op == "relu":
                    x = torch.relu(x)
                else:
                    x = torch.softmax(x, dim=-1)
            return x

    return Chain().eval()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def prepare(
    bundle: Path,
    *,
    with_numpy: bool,
    models_dir: Path = REPO / ".infaas" / "test-cache" / "demo-models",
) -> None:
    """Fill ``bundle`` for the GPU machine, from the demo models in ``models_dir``
    (trained there unless there already; the tests pass the build they made)."""
    import onnxruntime as ort
    import torch

    from infaas.demo_models import load_validation, prepare_demo_models

    demo = prepare_demo_models(models_dir)
    source = next(m.path for m in demo.models if m.id == MODEL_ID)
    inputs, labels = load_validation(demo.validation_path)
    steps, arrays = onnx_chain(source)
    session = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    (reference,) = session.run(["probabilities"], {INPUT_NAME: inputs})
    with torch.inference_mode():
        ours = build_module(steps, arrays)(torch.from_numpy(inputs)).numpy()
    difference = float(np.abs(ours - reference).max())
    if difference > 1e-4:
        raise SystemExit(f"the torch rebuild differs from onnxruntime by {difference}")
    bundle.mkdir(parents=True, exist_ok=True)
    named: dict[str, Any] = dict(arrays)
    np.savez(bundle / "weights.npz", **named)
    np.savez(bundle / "validation.npz", inputs=inputs, labels=labels)
    accuracy = float((reference.argmax(axis=1) == labels).mean())
    site = Path(np.__file__).resolve().parent.parent
    for package in VENDORED:
        _copy_package(site / package, bundle / "vendor" / package)
    if with_numpy:
        for package in VENDORED_NUMPY:
            _copy_package(site / package, bundle / "vendor-numpy" / package)
    manifest = {
        "model": MODEL_ID,
        "source": f"{source.name} sha256 {_sha256(source)}",
        "steps": steps,
        "onnxruntime_accuracy": accuracy,
        "max_abs_difference_from_onnxruntime": difference,
        "validation_rows": len(inputs),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "files": {p.name: _sha256(bundle / p.name) for p in (bundle / "weights.npz",)},
    }
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"bundle ready in {bundle} (fp32 accuracy on onnxruntime {accuracy:.4f})")


def _copy_package(source: Path, dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(
        source, dest, ignore=shutil.ignore_patterns("tests", "__pycache__", "*.pyi", "f2py")
    )


# ----------------------------------------------------------------------------- run


class ResultSink:
    """Prints and keeps what :func:`build_and_profile` reports."""

    def __init__(self) -> None:
        self.history: dict[str, list[str]] = {}
        self.seconds: dict[str, float] = {}
        self._started = time.perf_counter()

    def planned(self, plans: Any) -> None:
        for plan in plans:
            self.history[plan.id] = ["queued"]

    def status(self, plan: Any, status: str, error: str = "") -> None:
        self._say(plan.id, status, error)

    def artifact(self, plan: Any, path: Path) -> None:
        del plan, path  # nothing to upload: the artifacts stay in the work folder

    def ready(self, plan: Any, profile: Any) -> None:
        del profile
        self._say(plan.id, "ready", "")

    def _say(self, variant: str, status: str, error: str) -> None:
        self.history.setdefault(variant, []).append(status)
        self.seconds[variant] = round(time.perf_counter() - self._started, 1)
        print(f"{self.seconds[variant]:7.1f} s  {variant}: {status} {error}", flush=True)


def run(bundle: Path, out: Path, budget_s: float, hardware: str = "gpu") -> int:
    """Generate and profile the variants of ``hardware`` (``cpu`` is a dry run of every
    step but CUDA, for machines without a GPU)."""
    import torch

    from registry.types import Profile
    from workers.registration import ModelSource, ProfileSettings, build_and_profile

    if hardware == "gpu" and not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA device; run this on a machine with an NVIDIA GPU")
        return 2
    manifest = json.loads((bundle / "manifest.json").read_text())
    with np.load(bundle / "weights.npz") as data:
        arrays = {name: data[name] for name in data.files}
    with np.load(bundle / "validation.npz") as data:
        inputs, labels = data["inputs"], data["labels"]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="infaas-gpu-check-") as tmp:
        work = Path(tmp)
        module = build_module(manifest["steps"], arrays)
        batch = torch.export.Dim("batch", min=1, max=4096)
        program = torch.export.export(
            module, (torch.zeros(2, inputs.shape[1]),), dynamic_shapes=({0: batch},)
        )
        program_path = work / f"{MODEL_ID}.pt2"
        torch.export.save(program, str(program_path))
        source = ModelSource(
            model_id=MODEL_ID,
            format="torch",
            path=program_path,
            input_name=INPUT_NAME,
            output_name="",
            inputs=inputs,
            labels=labels,
        )
        settings = ProfileSettings(
            hardware=hardware, batch_sizes=BATCH_SIZES, budget_s_per_batch=budget_s
        )
        sink = ResultSink()
        report = build_and_profile(source, settings, sink, work)
    elapsed = time.perf_counter() - started
    expected = float(manifest["onnxruntime_accuracy"])
    variants: dict[str, Any] = {}
    for variant, profile in sorted(report.ready.items()):
        assert isinstance(profile, Profile)
        variants[variant] = {
            "status": "ready",
            "seconds_since_start": sink.seconds.get(variant),
            "history": sink.history.get(variant, []),
            **profile.to_dict(),
        }
        print(
            f"{variant:40} acc {profile.accuracy:.4f}  p50@1 {profile.latency_ms[1]:.3f} ms  "
            f"p50@64 {profile.latency_ms[64]:.3f} ms  load {profile.load_ms:.0f} ms  "
            f"{profile.memory_mb:.0f} MB"
        )
    for variant, reason in sorted(report.failed.items()):
        variants[variant] = {
            "status": "failed",
            "error": reason,
            "history": sink.history.get(variant, []),
        }
        print(f"{variant:40} failed: {reason}")
    fp32 = [p for v, p in report.ready.items() if "-fp32" in v]
    accuracy_ok = bool(fp32) and all(abs(p.accuracy - expected) <= ACCURACY_TOLERANCE for p in fp32)
    results = {
        "command": "bash bench/gpu_check.sh" if hardware == "gpu" else "dry run on cpu",
        "model": MODEL_ID,
        "machine": {
            "hardware": hardware,
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "python": platform.python_version(),
            "cores": len(os.sched_getaffinity(0)),
        },
        "seconds": round(elapsed, 1),
        "budget_s_per_batch": budget_s,
        "onnxruntime_fp32_accuracy_on_cpu": expected,
        "fp32_accuracy_matches_onnxruntime": accuracy_ok,
        "notes": report.notes,
        "variants": variants,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out} in {elapsed:.0f} s; fp32 accuracy matches onnxruntime: {accuracy_ok}")
    return 0 if report.ready and accuracy_ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="step", required=True)
    prep = sub.add_parser("prepare", help="write the bundle (on a machine with the project)")
    prep.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    prep.add_argument("--without-numpy", action="store_true", help="do not vendor numpy")
    go = sub.add_parser("run", help="generate and profile the GPU variants (on the GPU)")
    go.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    go.add_argument("--out", type=Path, default=DEFAULT_OUT)
    go.add_argument("--budget-s", type=float, default=0.3, help="profiling time per batch size")
    go.add_argument("--hardware", choices=["gpu", "cpu"], default="gpu", help="cpu: a dry run")
    args = parser.parse_args()
    if args.step == "prepare":
        prepare(args.bundle, with_numpy=not args.without_numpy)
        return 0
    return run(args.bundle, args.out, args.budget_s, args.hardware)


if __name__ == "__main__":
    sys.exit(main())

"""The GPU check, run here as far as a machine without a GPU allows: the bundle (the demo
model rebuilt in torch, checked against onnxruntime), every step of the run but CUDA
(a dry run on the CPU through the same registration core), and the script's refusal
to run without a CUDA device."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.gpu_check import DEFAULT_BUNDLE, REPO, prepare, run
from tests.demo_build import DemoBuild
from tests.hardware import cuda_available
from workers.builders import cpu_thread_counts
from workers.profiler import usable_cores

ON_A_GPU = "on a GPU machine the script runs the whole GPU check"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, demo_build: DemoBuild) -> Path:
    folder = tmp_path_factory.mktemp("bundle")
    prepare(folder, with_numpy=False, models_dir=demo_build.folder)  # no second training
    return folder


def test_the_bundle_holds_what_the_gpu_machine_needs(bundle: Path) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["model"] == "digits-mlp-large"
    assert manifest["max_abs_difference_from_onnxruntime"] <= 1e-4
    assert [s["op"] for s in manifest["steps"]][:2] == ["scaler", "matmul"]
    assert manifest["steps"][-1] == {"op": "softmax"}
    assert (bundle / "vendor" / "psutil" / "__init__.py").is_file()
    assert not (bundle / "vendor-numpy").exists()


def test_a_dry_run_on_the_cpu_profiles_the_torch_program(bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "profile-gpu.json"
    assert run(bundle, out, budget_s=0.02, hardware="cpu") == 0
    results = json.loads(out.read_text())
    assert results["fp32_accuracy_matches_onnxruntime"] is True
    variants = results["variants"]
    assert sorted(variants) == [
        f"digits-mlp-large.torch-fp32.cpu-t{threads}"
        for threads in cpu_thread_counts(usable_cores())
    ]
    for variant in variants.values():
        assert variant["status"] == "ready"
        assert variant["history"] == ["queued", "generating", "profiling", "ready"]
        assert sorted(int(b) for b in variant["latency_ms"]) == [1, 4, 8, 16, 32, 64]
        assert variant["accuracy"] == pytest.approx(
            results["onnxruntime_fp32_accuracy_on_cpu"], abs=0.005
        )


# Never skips in CI: it is the opposite of a GPU test and checks the refusal on a machine
# without CUDA, which CI's machines are. It may skip only on a GPU machine, where the
# script runs the whole GPU check instead of refusing (tests/hardware.py).
@pytest.mark.skipif(cuda_available(), reason=ON_A_GPU)  # never skips in CI: CI has no GPU
def test_the_script_refuses_to_run_without_a_cuda_device(bundle: Path) -> None:
    env = {**os.environ, "INFAAS_GPU_BUNDLE": str(bundle), "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu_check.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "torch sees no CUDA device" in done.stdout
    assert DEFAULT_BUNDLE.name == "gpu-check"

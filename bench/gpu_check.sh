#!/usr/bin/env bash
# GPU check: generate and profile the GPU variants of the demo model digits-mlp-large on
# this machine's NVIDIA GPU, through the same registration code a GPU worker runs
# (workers.registration.build_and_profile: plan, safe torch.export loading, torch CUDA
# fp32/fp16 eager and fp32/fp16/bf16 torch.compile variants, profiling), and write the
# profiles to bench/results/profile-gpu.json.
#
#   bash bench/gpu_check.sh            # from the repository root
#
# The GPU machine needs only python3 with a CUDA build of torch: no network, no pip. What
# else it needs travels in a bundle (.infaas/gpu-check, about 56 MB: the model's weights
# converted from ONNX and checked against onnxruntime, the validation set, psutil, and
# numpy for machines without it), written by `bash bench/gpu_check.sh --prepare` on a
# machine with the project's .venv. When the bundle is missing and .venv exists, it is
# prepared first. Finishes in a few minutes (torch.compile takes most of it); the whole
# run is capped at 9.5 minutes.
#
# Environment: PYTHON (default python3), INFAAS_GPU_BUNDLE (default .infaas/gpu-check).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT="$PWD"
BUNDLE="${INFAAS_GPU_BUNDLE:-.infaas/gpu-check}"
OUT="bench/results/profile-gpu.json"
PY="${PYTHON:-python3}"

if [[ "${1:-}" == "--prepare" || ! -f "$BUNDLE/manifest.json" ]]; then
    if [[ ! -x .venv/bin/python ]]; then
        echo "gpu_check: no bundle at $BUNDLE; make it where the project is installed with" >&2
        echo "  bash bench/gpu_check.sh --prepare   (then bring $BUNDLE along)" >&2
        exit 2
    fi
    .venv/bin/python -m bench.gpu_check prepare --bundle "$BUNDLE"
    [[ "${1:-}" == "--prepare" ]] && exit 0
fi

if ! "$PY" -c 'import torch' 2>/dev/null; then
    echo "gpu_check: $PY cannot import torch; install a CUDA build of torch or set PYTHON" >&2
    exit 2
fi

path="$ROOT"
"$PY" -c 'import psutil' 2>/dev/null || path="$path:$ROOT/$BUNDLE/vendor"
if ! "$PY" -c 'import numpy' 2>/dev/null; then
    want="$(sed -n 's/.*"python": "\([0-9]*\.[0-9]*\).*/\1/p' "$BUNDLE/manifest.json")"
    have="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
    if [[ "$want" != "$have" ]]; then
        echo "gpu_check: $PY has no numpy and the bundled one is for Python $want, not $have" >&2
        exit 2
    fi
    path="$path:$ROOT/$BUNDLE/vendor-numpy"
fi

export PYTHONPATH="$path${PYTHONPATH:+:$PYTHONPATH}"
exec timeout 570 "$PY" -m bench.gpu_check run --bundle "$BUNDLE" --out "$OUT"

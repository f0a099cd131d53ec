"""The demo app's models: six digit classifiers trained at setup from scikit-learn's digits.

Every model is an ONNX graph with the same input, ``input`` float32 ``[N, 64]`` holding the
raw 8×8 pixel values (0..16), and the same output, ``probabilities`` float32 ``[N, 10]``.
Any scaling lives inside the graph, so all models serve one app with one signature. They
span a wide range of accuracy and latency on purpose, from a logistic regression (a few
microseconds a query) to a CNN evaluated on several shifted views of a 32×32 upsampled
image (milliseconds a query), so the selector has real trade-offs to make.

:func:`prepare_demo_models` is idempotent: it writes ``manifest.json`` last and returns at
once when a manifest for the same code version and seed lists files that are all intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Bump when the data split, a model's recipe or the export changes: caches then rebuild.
CODE_VERSION = "digits-demo-2"
INPUT_NAME = "input"
OUTPUT_NAME = "probabilities"
NUM_CLASSES = 10
NUM_FEATURES = 64
ONNX_OPSET = 17
ONNX_ML_OPSET = 3
VALIDATION_FILE = "validation.npz"
MANIFEST_FILE = "manifest.json"

# The CNN: channel widths of its four 3×3 conv layers, the shifted views it averages
# (test-time augmentation, in pixels of the 32×32 image) and its training recipe. The
# widths and the number of views set its cost: 0.8 to 1.4 ms a view at batch 1 on one
# core of the development machines, nine views (the 3×3 grid of shifts by 0 and ±2).
CNN_WIDTHS = (32, 64, 128, 128)
CNN_SIZE = 32
CNN_PAD = 2
CNN_VIEWS = tuple((dy, dx) for dy in (0, -2, 2) for dx in (0, -2, 2))
CNN_EPOCHS = 4
CNN_BATCH = 32
CNN_LR = 3e-3
CNN_TRAIN_THREADS = 2

Progress = Callable[[str], None]


@dataclass(frozen=True)
class DemoModel:
    id: str
    path: Path
    description: str
    output_name: str


@dataclass(frozen=True)
class DemoSet:
    models: tuple[DemoModel, ...]
    validation_path: Path
    input_name: str
    num_classes: int


_DESCRIPTIONS: dict[str, str] = {
    "digits-logreg": "standardize + multinomial logistic regression",
    "digits-mlp-small": "standardize + MLP, one hidden layer of 32 ReLU units",
    "digits-mlp-large": "standardize + MLP, two hidden layers of 512 ReLU units",
    "digits-svc": "RBF SVC on raw pixels with sigmoid-calibrated probabilities",
    "digits-forest": "random forest of 300 trees",
    "digits-cnn": (
        "CNN (conv widths 32-64-128-128) on the image upsampled to 32×32, "
        f"probabilities averaged over {len(CNN_VIEWS)} shifted views"
    ),
}
MODEL_IDS: tuple[str, ...] = tuple(_DESCRIPTIONS)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _demo_set(out_dir: Path) -> DemoSet:
    return DemoSet(
        models=tuple(
            DemoModel(
                id=model_id,
                path=out_dir / f"{model_id}.onnx",
                description=_DESCRIPTIONS[model_id],
                output_name=OUTPUT_NAME,
            )
            for model_id in MODEL_IDS
        ),
        validation_path=out_dir / VALIDATION_FILE,
        input_name=INPUT_NAME,
        num_classes=NUM_CLASSES,
    )


def _cached(out_dir: Path, seed: int) -> bool:
    """Whether ``out_dir`` holds a complete, intact build for this code version and seed."""
    try:
        manifest = json.loads((out_dir / MANIFEST_FILE).read_text())
        if manifest.get("code_version") != CODE_VERSION or manifest.get("seed") != seed:
            return False
        files: dict[str, str] = manifest["files"]
        if [m["id"] for m in manifest["models"]] != list(MODEL_IDS):
            return False
        expected = {VALIDATION_FILE, *(f"{model_id}.onnx" for model_id in MODEL_IDS)}
        if set(files) != expected:
            return False
        return all(_sha256(out_dir / name) == digest for name, digest in files.items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def load_validation(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(inputs float32 [n, 64], labels int64 [n])`` from a ``validation.npz``."""
    with np.load(path) as data:
        return data["inputs"].astype(np.float32), data["labels"].astype(np.int64)


# -- scikit-learn models ------------------------------------------------------------------


def _sklearn_estimators(seed: int) -> dict[str, Any]:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    # SVC(probability=True) is deprecated since scikit-learn 1.9; this is its replacement.
    svc = CalibratedClassifierCV(SVC(kernel="rbf"), method="sigmoid", ensemble=False)
    return {
        "digits-logreg": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
        "digits-mlp-small": make_pipeline(
            StandardScaler(), MLPClassifier((32,), max_iter=1000, random_state=seed)
        ),
        "digits-mlp-large": make_pipeline(
            StandardScaler(), MLPClassifier((512, 512), max_iter=500, random_state=seed)
        ),
        "digits-svc": svc,
        "digits-forest": RandomForestClassifier(n_estimators=300, random_state=seed, n_jobs=2),
    }


def _export_sklearn(estimator: Any) -> bytes:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    with warnings.catch_warnings():
        # skl2onnx reads SVC.probA_/probB_, which scikit-learn 1.9 flags as deprecated.
        warnings.filterwarnings("ignore", category=FutureWarning)
        onx = convert_sklearn(
            estimator,
            initial_types=[(INPUT_NAME, FloatTensorType([None, NUM_FEATURES]))],
            options={"zipmap": False},
            target_opset={"": ONNX_OPSET, "ai.onnx.ml": ONNX_ML_OPSET},
        )
    names = [output.name for output in onx.graph.output]
    if OUTPUT_NAME not in names:  # pragma: no cover - skl2onnx names it so for classifiers
        raise RuntimeError(f"converted model has outputs {names}, not {OUTPUT_NAME!r}")
    data: bytes = onx.SerializeToString()
    return data


# -- the CNN ------------------------------------------------------------------------------


def _train_and_export_cnn(
    x_train: np.ndarray, y_train: np.ndarray, seed: int, scratch: Path, progress: Progress
) -> bytes:
    import torch
    from torch import nn
    from torch.nn import functional as F  # noqa: N812

    c1, c2, c3, c4 = CNN_WIDTHS
    pad = CNN_PAD
    size = CNN_SIZE
    views = CNN_VIEWS

    class DigitsCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, c1, 3, padding=1),
                nn.BatchNorm2d(c1),
                nn.ReLU(),
                nn.Conv2d(c1, c2, 3, padding=1),
                nn.BatchNorm2d(c2),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(c2, c3, 3, padding=1),
                nn.BatchNorm2d(c3),
                nn.ReLU(),
                nn.Conv2d(c3, c4, 3, padding=1),
                nn.BatchNorm2d(c4),
                nn.ReLU(),
                nn.MaxPool2d(2),
            )
            self.head = nn.Linear(c4, NUM_CLASSES)

        @staticmethod
        def padded_image(x: torch.Tensor) -> torch.Tensor:
            """Raw [N, 64] pixels -> [N, 1, size + 2 pad, size + 2 pad] in 0..1."""
            image = (x / 16.0).reshape(-1, 1, 8, 8)
            image = F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False)
            return F.pad(image, (pad, pad, pad, pad))

        @staticmethod
        def view(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
            return image[:, :, pad + dy : pad + dy + size, pad + dx : pad + dx + size]

        def logits(self, image: torch.Tensor) -> torch.Tensor:
            pooled: torch.Tensor = self.features(image).mean(dim=(2, 3))
            out: torch.Tensor = self.head(pooled)
            return out

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            image = self.padded_image(x)
            batch = torch.cat([self.view(image, dy, dx) for dy, dx in views], dim=0)
            probs = torch.softmax(self.logits(batch), dim=1)
            return probs.reshape(len(views), -1, NUM_CLASSES).mean(dim=0)

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(CNN_TRAIN_THREADS)
    try:
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        net = DigitsCNN()
        inputs = torch.from_numpy(np.ascontiguousarray(x_train, dtype=np.float32))
        labels = torch.from_numpy(np.ascontiguousarray(y_train, dtype=np.int64))
        steps_per_epoch = len(inputs) // CNN_BATCH
        optimizer = torch.optim.Adam(net.parameters(), lr=CNN_LR)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=CNN_LR, total_steps=CNN_EPOCHS * steps_per_epoch, pct_start=0.2
        )
        for epoch in range(CNN_EPOCHS):
            net.train()
            order = torch.randperm(len(inputs), generator=generator)
            total = 0.0
            for step in range(steps_per_epoch):
                index = order[step * CNN_BATCH : (step + 1) * CNN_BATCH]
                # Train on one random shift per batch, the same shifts the graph averages.
                dy, dx = torch.randint(-pad, pad + 1, (2,), generator=generator).tolist()
                image = net.view(net.padded_image(inputs[index]), dy, dx)
                loss = F.cross_entropy(net.logits(image), labels[index])
                optimizer.zero_grad()
                loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
                schedule.step()
                total += float(loss.detach())
            progress(
                f"digits-cnn: epoch {epoch + 1}/{CNN_EPOCHS}, "
                f"mean loss {total / steps_per_epoch:.3f}"
            )

        net.eval()
        exported = scratch / f".digits-cnn.{os.getpid()}.export.onnx"
        with warnings.catch_warnings():
            # The TorchScript exporter is deprecated in favour of dynamo; it is still the
            # faster, dependable one for a plain CNN. Its constant folding notes are noise.
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", message=".*[Cc]onstant folding.*")
            torch.onnx.export(
                net,
                (torch.zeros(1, NUM_FEATURES),),
                exported,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=ONNX_OPSET,
                dynamo=False,
            )
        data = exported.read_bytes()
        exported.unlink()
        return data
    finally:
        torch.set_num_threads(previous_threads)


# -- the build ----------------------------------------------------------------------------


def prepare_demo_models(
    out_dir: Path, *, seed: int = 0, progress: Progress | None = None
) -> DemoSet:
    """Train the demo models and export them to ``out_dir`` (or reuse a previous build).

    Writes ``<id>.onnx`` for each model, ``validation.npz`` (the held-out quarter of the
    digits, stratified) and, last, ``manifest.json``. Takes about half a minute on two cores.
    """
    out_dir = Path(out_dir)
    say: Progress = progress or (lambda _message: None)
    if _cached(out_dir, seed):
        say(f"demo models in {out_dir} are up to date")
        return _demo_set(out_dir)

    import onnx
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST_FILE).unlink(missing_ok=True)

    digits = load_digits()
    x = np.asarray(digits.data, dtype=np.float32)
    y = np.asarray(digits.target, dtype=np.int64)
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=0.25, random_state=seed, stratify=y
    )
    validation_path = out_dir / VALIDATION_FILE
    tmp = out_dir / f".{VALIDATION_FILE}.{os.getpid()}.tmp.npz"
    np.savez(tmp, inputs=np.asarray(x_val, np.float32), labels=np.asarray(y_val, np.int64))
    os.replace(tmp, validation_path)
    say(f"digits: {len(x_train)} training, {len(x_val)} validation images")

    artifacts: dict[str, bytes] = {}
    for model_id, estimator in _sklearn_estimators(seed).items():
        t0 = time.perf_counter()
        estimator.fit(x_train, y_train)
        artifacts[model_id] = _export_sklearn(estimator)
        say(f"{model_id}: trained and exported in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    artifacts["digits-cnn"] = _train_and_export_cnn(x_train, y_train, seed, out_dir, say)
    say(f"digits-cnn: trained and exported in {time.perf_counter() - t0:.1f} s")

    files = {VALIDATION_FILE: _sha256(validation_path)}
    for model_id in MODEL_IDS:
        model = onnx.load_from_string(artifacts[model_id])
        onnx.checker.check_model(model)
        name = f"{model_id}.onnx"
        _write_atomic(out_dir / name, artifacts[model_id])
        files[name] = hashlib.sha256(artifacts[model_id]).hexdigest()

    manifest = {
        "code_version": CODE_VERSION,
        "seed": seed,
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "num_classes": NUM_CLASSES,
        "models": [
            {"id": model_id, "file": f"{model_id}.onnx", "description": _DESCRIPTIONS[model_id]}
            for model_id in MODEL_IDS
        ],
        "files": files,
        "build_seconds": round(time.perf_counter() - started, 1),
    }
    _write_atomic(out_dir / MANIFEST_FILE, json.dumps(manifest, indent=2).encode())
    say(f"demo models ready in {out_dir} ({time.perf_counter() - started:.0f} s)")
    return _demo_set(out_dir)

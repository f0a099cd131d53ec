"""Small models for the registration tests, trained on scikit-learn's bundled datasets
(none of them is a demo model): an MLP and a logistic regression exported to ONNX, and a
torch MLP saved with ``torch.export``."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

INPUT = "input"
OUTPUT = "probabilities"


@dataclass(frozen=True)
class Trained:
    path: Path
    validation: Path
    inputs: np.ndarray
    labels: np.ndarray
    classes: int

    @property
    def features(self) -> int:
        return int(self.inputs.shape[1])


def split(dataset: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    loader = {"wine": datasets.load_wine, "breast_cancer": datasets.load_breast_cancer}[dataset]
    x, y = loader(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(
        np.asarray(x, np.float32),
        np.asarray(y, np.int64),
        test_size=0.4,
        random_state=seed,
        stratify=y,
    )
    return x_train, x_val, y_train, y_val


def save_validation(path: Path, inputs: np.ndarray, labels: np.ndarray) -> Path:
    np.savez(path, inputs=inputs, labels=labels)
    return path


def sklearn_onnx(
    out_dir: Path, name: str, dataset: str, kind: str = "mlp", hidden: tuple[int, ...] = (32,)
) -> Trained:
    """An sklearn pipeline (standardize + MLP or logistic regression) as ONNX."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_train, x_val, y_train, y_val = split(dataset)
    head = (
        MLPClassifier(hidden, max_iter=2000, random_state=0)
        if kind == "mlp"
        else LogisticRegression(max_iter=5000)
    )
    estimator = make_pipeline(StandardScaler(), head).fit(x_train, y_train)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onx = convert_sklearn(
            estimator,
            initial_types=[(INPUT, FloatTensorType([None, x_train.shape[1]]))],
            options={"zipmap": False},
            target_opset={"": 17, "ai.onnx.ml": 3},
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.onnx"
    path.write_bytes(onx.SerializeToString())
    validation = save_validation(out_dir / f"{name}-val.npz", x_val, y_val)
    return Trained(path, validation, x_val, y_val, int(y_train.max()) + 1)


def torch_program(
    out_dir: Path, name: str, dataset: str, epochs: int = 200, hidden: int = 32
) -> Trained:
    """A torch MLP (with the standardization inside) saved with ``torch.export.save``."""
    import torch
    from torch import nn

    x_train, x_val, y_train, y_val = split(dataset)
    classes = int(y_train.max()) + 1
    mean = torch.from_numpy(x_train.mean(axis=0))
    std = torch.from_numpy(x_train.std(axis=0) + 1e-6)

    class Net(nn.Module):
        mean: torch.Tensor
        std: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", mean)
            self.register_buffer("std", std)
            self.body = nn.Sequential(
                nn.Linear(x_train.shape[1], hidden),
                nn.ReLU(),
                nn.Linear(hidden, hidden),
                nn.ReLU(),
                nn.Linear(hidden, classes),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.body((x - self.mean) / self.std), dim=1)

    torch.manual_seed(0)
    net = Net()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    inputs, labels = torch.from_numpy(x_train), torch.from_numpy(y_train)
    for _ in range(epochs):
        optimizer.zero_grad()
        loss = nn.functional.nll_loss(torch.log(net(inputs) + 1e-9), labels)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    net.eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(
        net, (torch.zeros(2, x_train.shape[1]),), dynamic_shapes=({0: batch},)
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.pt2"
    torch.export.save(program, str(path))
    validation = save_validation(out_dir / f"{name}-val.npz", x_val, y_val)
    return Trained(path, validation, x_val, y_val, classes)


def onnx_accuracy(path: Path, inputs: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy computed directly with onnxruntime (the tests' own reference)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    output = OUTPUT if OUTPUT in names else names[0]
    (scores,) = session.run([output], {session.get_inputs()[0].name: inputs})
    return float((np.asarray(scores).argmax(axis=1) == labels).mean())

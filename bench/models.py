"""Models the benchmarks register besides the demo's, trained here from scikit-learn data."""

from __future__ import annotations

from pathlib import Path

from infaas.demo import DEMO_APP
from infaas.services import Services
from queues.errors import UnknownModel
from registry.types import READY, Model
from workers.registration_task import BuildContext, generate_and_profile

WIDE_MLP = "bench-wide-mlp"


def train_wide_mlp(path: Path, *, hidden: int = 2048, epochs: int = 3, seed: int = 0) -> Path:
    """A three-layer MLP of ``hidden`` units on the digits: ~34 MB of weights, so at batch 1
    it is memory-bound and batching pays, as for a large model on a GPU."""
    import torch
    from sklearn.datasets import load_digits

    torch.manual_seed(seed)
    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target)
    body = torch.nn.Sequential(
        torch.nn.Linear(64, hidden), torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
        torch.nn.Linear(hidden, 10),
    )  # fmt: skip
    optimizer = torch.optim.Adam(body.parameters(), lr=1e-3)
    for _ in range(epochs):
        for start in range(0, len(x), 64):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(
                body(x[start : start + 64]), y[start : start + 64]
            )
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()

    class Scaled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = body

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.body(pixels / 16.0), dim=1)

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        Scaled().eval(), (torch.zeros(1, 64),), str(path), dynamo=False,
        input_names=["input"], output_names=["probabilities"],
        dynamic_axes={"input": {0: "n"}, "probabilities": {0: "n"}},
    )  # fmt: skip
    return path


def register_wide_mlp(services: Services, work: Path, validation: Path) -> str:
    """Train, upload and profile the wide MLP under the demo app (``validation``: the demo's
    validation set); its 1-thread variant id."""
    try:
        services.catalog.get_model(WIDE_MLP)
    except UnknownModel:
        artifact = train_wide_mlp(work / f"{WIDE_MLP}.onnx")
        key = f"models/{WIDE_MLP}/model.onnx"
        validation_key = f"models/{WIDE_MLP}/validation.npz"
        services.store.put_file(key, artifact)
        services.store.put_file(validation_key, validation)
        services.catalog.add_model(
            Model(WIDE_MLP, DEMO_APP, "onnx", key, validation_key, output_name="probabilities")
        )
        context = BuildContext(
            catalog=services.catalog, store=services.store, prices=services.prices,
            budget_s_per_batch=0.2,
        )  # fmt: skip
        generate_and_profile(WIDE_MLP, context)
    ready = services.catalog.list_variants(model_id=WIDE_MLP, status=READY)
    return next(v.id for v in ready if v.threads == 1)

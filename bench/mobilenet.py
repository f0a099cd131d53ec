"""MobileNetV2 (Sandler et al. 2018) in plain torch, without torchvision, and a synthetic
classification task for it, for the registration benchmark (no weights or images can
be downloaded here).

The task: ``classes`` prototype images plus noise. The backbone keeps its seeded random
weights; the classifier's first ``classes`` rows are set to the mean pooled features of
each prototype's images (scaled), so the fp32 model tells the classes apart by a clear
margin and an int8 variant has something real to preserve.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

# (expansion t, output channels c, repeats n, first stride s), as in the paper's Table 2
INVERTED_RESIDUALS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
IMAGE_SIZE = 224
INPUT_NAME = "input"
OUTPUT_NAME = "probabilities"


def _conv_bn(inputs: int, outputs: int, kernel: int, stride: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(outputs),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    def __init__(self, inputs: int, outputs: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = inputs * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(_conv_bn(inputs, hidden, 1, 1))
        layers += [
            _conv_bn(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, outputs, 1, bias=False),
            nn.BatchNorm2d(outputs),
        ]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and inputs == outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.block(x)
        return x + out if self.residual else out


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(3, 32, 3, 2)]
        channels = 32
        for expansion, outputs, repeats, stride in INVERTED_RESIDUALS:
            for i in range(repeats):
                layers.append(
                    InvertedResidual(channels, outputs, stride if i == 0 else 1, expansion)
                )
                channels = outputs
        layers.append(_conv_bn(channels, 1280, 1, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(1280, num_classes)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        features: torch.Tensor = self.features(x)
        return features.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.classifier(self.pooled(x)), dim=1)


def synthetic_task(
    images: int = 32, classes: int = 8, seed: int = 0
) -> tuple[MobileNetV2, np.ndarray, np.ndarray]:
    """A MobileNetV2 with a classifier fitted to noisy prototypes, and those images."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = MobileNetV2().eval()
    prototypes = rng.normal(0.0, 1.0, (classes, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)
    labels = np.arange(images, dtype=np.int64) % classes
    noise = rng.normal(0.0, 0.3, (images, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)
    inputs = (prototypes[labels] + noise).astype(np.float32)
    with torch.inference_mode():
        features = model.pooled(torch.from_numpy(inputs))
        centred = features - features.mean(dim=0)
        directions = torch.stack(
            [centred[torch.from_numpy(labels == c)].mean(dim=0) for c in range(classes)]
        )
        directions = directions / directions.norm(dim=1, keepdim=True)
        scale = 10.0 / float((centred @ directions.T).std())  # logits spread about 10
        model.classifier.weight.mul_(0.0)
        model.classifier.weight[:classes] = scale * directions
        model.classifier.bias.zero_()
        model.classifier.bias[:classes] = -(model.classifier.weight[:classes] @ features.mean(0))
        model.classifier.bias[classes:] = -100.0  # classes nobody uses
    return model, inputs, labels


def export_onnx(model: MobileNetV2, path: Path) -> Path:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE),),
            path,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    return path

"""ImageNet-class architectures in plain torch (no torchvision), for CPU profiling.

Weights are random: only their cost is measured here; their accuracy is the published
top-1 of the same architecture (cited in :mod:`bench.sim.gpu_tables`).
"""

from __future__ import annotations

import math
from typing import Any


def resnet50() -> Any:
    """ResNet-50 v1.5 (stride in the 3×3 convolution of each bottleneck)."""
    import torch
    from torch import nn

    class Bottleneck(nn.Module):
        def __init__(self, cin: int, width: int, stride: int) -> None:
            super().__init__()
            cout = width * 4
            self.body = nn.Sequential(
                nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(True),
                nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width),
                nn.ReLU(True), nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout),
            )  # fmt: skip
            self.skip: nn.Module = nn.Identity()
            if stride != 1 or cin != cout:
                self.skip = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
                )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.body(x) + self.skip(x))

    layers: list[nn.Module] = [
        nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(True),
        nn.MaxPool2d(3, 2, 1),
    ]  # fmt: skip
    cin = 64
    for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for i in range(blocks):
            layers.append(Bottleneck(cin, width, stride if i == 0 else 1))
            cin = width * 4
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, 1000), nn.Softmax(1)]
    return nn.Sequential(*layers).eval()


def efficientnet_b0() -> Any:
    """EfficientNet-B0: MBConv blocks with squeeze-and-excitation and SiLU."""
    return _efficientnet(width=1.0, depth=1.0)


def efficientnet_b4() -> Any:
    """EfficientNet-B4: B0 scaled to 1.4× the width and 1.8× the depth (380×380 input)."""
    return _efficientnet(width=1.4, depth=1.8)


def _efficientnet(width: float, depth: float) -> Any:
    import torch
    from torch import nn

    class SqueezeExcite(nn.Module):
        def __init__(self, channels: int, squeezed: int) -> None:
            super().__init__()
            self.gate = nn.Sequential(
                nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, squeezed, 1), nn.SiLU(),
                nn.Conv2d(squeezed, channels, 1), nn.Sigmoid(),
            )  # fmt: skip

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            gated: torch.Tensor = x * self.gate(x)
            return gated

    class MBConv(nn.Module):
        def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int) -> None:
            super().__init__()
            mid = cin * expand
            parts: list[nn.Module] = []
            if expand != 1:
                parts += [nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.SiLU()]
            parts += [
                nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False),
                nn.BatchNorm2d(mid), nn.SiLU(), SqueezeExcite(mid, max(1, cin // 4)),
                nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout),
            ]  # fmt: skip
            self.body = nn.Sequential(*parts)
            self.residual = stride == 1 and cin == cout

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.body(x)
            return out + x if self.residual else out

    def channels(c: int) -> int:  # scaled width, rounded to a multiple of 8 as published
        scaled = max(8, int(c * width + 4) // 8 * 8)
        return scaled + 8 if scaled < 0.9 * c * width else scaled

    stages = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
              (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))  # fmt: skip
    stem = channels(32)
    layers: list[nn.Module] = [
        nn.Conv2d(3, stem, 3, 2, 1, bias=False), nn.BatchNorm2d(stem), nn.SiLU()
    ]  # fmt: skip
    cin = stem
    for expand, kernel, stride, base, repeats in stages:
        cout = channels(base)
        for i in range(math.ceil(repeats * depth)):
            layers.append(MBConv(cin, cout, expand, kernel, stride if i == 0 else 1))
            cin = cout
    head = channels(1280)
    layers += [
        nn.Conv2d(cin, head, 1, bias=False), nn.BatchNorm2d(head), nn.SiLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(head, 1000), nn.Softmax(1),
    ]  # fmt: skip
    return nn.Sequential(*layers).eval()


ARCHITECTURES = {
    "resnet50": resnet50,
    "efficientnet-b0": efficientnet_b0,
    "efficientnet-b4": efficientnet_b4,
}
RESOLUTION = {"resnet50": 224, "efficientnet-b0": 224, "efficientnet-b4": 380}


def export_onnx(name: str, path: Any) -> Any:
    import torch

    model = ARCHITECTURES[name]()
    size = RESOLUTION[name]
    torch.onnx.export(
        model, (torch.zeros(1, 3, size, size),), str(path), dynamo=False,
        input_names=["input"], output_names=["probabilities"],
        dynamic_axes={"input": {0: "n"}, "probabilities": {0: "n"}},
    )  # fmt: skip
    return path

"""Published GPU latencies and accuracies of the simulator's ImageNet architectures.

No GPU was lent to this project's development sessions, so the GPU profiles of the
simulator come from NVIDIA's published inference measurements of the same architectures
on one named GPU, and their accuracy from the same publications (there is no ImageNet
data here to measure it):

- NVIDIA DeepLearningExamples, "ResNet50 v1.5 For PyTorch", README, sections "Inference
  performance: NVIDIA DGX-1 (1x V100 16GB)" (FP32 and Mixed Precision Inference Latency
  tables, PyTorch 21.03 NGC container) and "Training accuracy: NVIDIA DGX-1 (8x V100
  16GB)" (90 epochs: FP32 77.01 %, mixed precision 76.88 % top-1).
  https://github.com/NVIDIA/DeepLearningExamples/tree/master/PyTorch/Classification/ConvNets/resnet50v1.5
- NVIDIA DeepLearningExamples, "EfficientNet For PyTorch", README, sections "Inference
  performance: NVIDIA V100 (1x V100 16GB)" (efficientnet-b0 and efficientnet-b4 rows,
  FP32 and Mixed Precision), "Training accuracy: NVIDIA DGX-1 (8x V100 16GB)" (B0, 400
  epochs: FP32 77.02 %, mixed precision 77.17 % top-1) and "Training accuracy: NVIDIA DGX
  A100 (8x A100 80GB)" (B4, 400 epochs: TF32 82.82 %, mixed precision 82.85 % — the
  README gives no V100 accuracy for B4; the weights do not depend on the GPU).
  https://github.com/NVIDIA/DeepLearningExamples/tree/master/PyTorch/Classification/ConvNets/efficientnet

Latencies are the tables' "Latency Avg" (used as p50) and "Latency 99%" in milliseconds per
batch size. The GPU is a V100 16GB, so these variants are priced with the AWS instance of
one V100 16GB: p3.2xlarge ($3.06/h on demand, as in the paper).
"""

from __future__ import annotations

from dataclasses import dataclass

GPU_NAME = "NVIDIA V100 16GB"
GPU_INSTANCE = "p3.2xlarge"


@dataclass(frozen=True)
class PublishedProfile:
    model: str
    precision: str
    accuracy: float
    latency_ms: dict[int, float]
    latency_p99_ms: dict[int, float]
    source: str


RESNET50_SOURCE = "NVIDIA DeepLearningExamples ResNet50 v1.5 for PyTorch, V100 16GB tables"
EFFICIENTNET_SOURCE = "NVIDIA DeepLearningExamples EfficientNet for PyTorch, V100 16GB tables"

PUBLISHED: tuple[PublishedProfile, ...] = (
    PublishedProfile(
        "resnet50", "fp32", 0.7701,
        {1: 10.37, 2: 10.24, 4: 10.46, 8: 11.5, 16: 16.07, 32: 29.37, 64: 55.4, 128: 109.26,
         256: 214.48},
        {1: 11.73, 2: 12.89, 4: 11.75, 8: 13.12, 16: 15.97, 32: 28.67, 64: 53.71, 128: 104.34,
         256: 202.88},
        RESNET50_SOURCE,
    ),
    PublishedProfile(
        "resnet50", "fp16", 0.7688,
        {1: 12.78, 2: 13.01, 4: 13.41, 8: 13.65, 16: 14.0, 32: 15.84, 64: 23.18, 128: 43.55,
         256: 84.14},
        {1: 14.36, 2: 15.19, 4: 15.68, 8: 15.6, 16: 16.26, 32: 18.53, 64: 21.93, 128: 40.1,
         256: 80.08},
        RESNET50_SOURCE,
    ),
    PublishedProfile(
        "efficientnet-b0", "fp32", 0.7702,
        {1: 13.15, 2: 13.17, 4: 13.25, 8: 13.42, 16: 13.78, 32: 16.46, 64: 25.14, 128: 48.03,
         256: 94.86},
        {1: 14.11, 2: 14.39, 4: 14.85, 8: 15.77, 16: 16.99, 32: 22.2, 64: 23.79, 128: 45.36,
         256: 91.01},
        EFFICIENTNET_SOURCE,
    ),
    PublishedProfile(
        "efficientnet-b0", "fp16", 0.7717,
        {1: 17.19, 2: 17.96, 4: 17.9, 8: 17.38, 16: 18.23, 32: 19.29, 64: 20.34, 128: 26.11,
         256: 49.36},
        {1: 18.63, 2: 19.95, 4: 19.13, 8: 19.29, 16: 21.58, 32: 22.51, 64: 24.62, 128: 24.06,
         256: 43.5},
        EFFICIENTNET_SOURCE,
    ),
    PublishedProfile(
        "efficientnet-b4", "fp32", 0.8282,
        {1: 23.31, 2: 24.07, 4: 26.29, 8: 26.65, 16: 48.18, 32: 89.07, 64: 173.2, 128: 346.32},
        {1: 24.9, 2: 25.14, 4: 30.85, 8: 28.61, 16: 47.13, 32: 88.02, 64: 172.27, 128: 340.37},
        EFFICIENTNET_SOURCE,
    ),
    PublishedProfile(
        "efficientnet-b4", "fp16", 0.8285,
        {1: 30.28, 2: 30.12, 4: 32.08, 8: 34.43, 16: 34.12, 32: 44.67, 64: 80.93, 128: 156.42,
         256: 311.03},
        {1: 32.24, 2: 31.92, 4: 34.74, 8: 41.08, 16: 39.39, 32: 47.86, 64: 79.42, 128: 152.76,
         256: 302.48},
        EFFICIENTNET_SOURCE,
    ),
)  # fmt: skip

"""What the simulator assumes beyond the profiles."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SimSettings:
    """What the simulator assumes beyond the profiles (documented in its output)."""

    cpu_worker_start_s: float = 20.0  # a CPU VM joining the fleet
    gpu_worker_start_s: float = 60.0  # a GPU VM, with its driver and CUDA context
    cpu_worker_cores: int = 2  # an m5.large, the paper's smallest CPU instance
    gpu_max_replicas: int = 4
    timeout_factor: float = 4.0  # gateway deadline: max(factor × objective, 1 s)
    batch_wait_ms: float = 2.0
    overhead_ms: float = 0.5  # gateway + broker time besides inference

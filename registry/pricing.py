"""Hardware prices, for the cost of each variant (dollars per hour).

Defaults are the AWS on-demand prices the paper used (INFAAS.md). A CPU variant pays
for the share of its instance's vCPUs that it uses; a GPU variant pays for its whole
single-GPU instance, named after the GPU class its profile was measured on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from queues.errors import ConfigError

MS_PER_HOUR = 3_600_000.0


def usd_for(cost_per_hour: float, ms: float) -> float:
    """What ``ms`` milliseconds of a variant's time cost at ``cost_per_hour`` dollars an
    hour."""
    return cost_per_hour * ms / MS_PER_HOUR


@dataclass(frozen=True, slots=True)
class Instance:
    name: str
    hardware: str
    usd_per_hour: float
    vcpus: int
    gpu: str = ""


DEFAULT_INSTANCES: tuple[Instance, ...] = (
    Instance("m5.large", "cpu", 0.096, 2),
    Instance("m5.2xlarge", "cpu", 0.384, 8),
    Instance("p3.2xlarge", "gpu", 3.06, 8, gpu="V100"),
)


@dataclass(frozen=True, slots=True)
class PriceTable:
    instances: dict[str, Instance]
    cpu_instance: str = "m5.2xlarge"
    gpu_instance: str = "p3.2xlarge"

    def __post_init__(self) -> None:
        for inst in self.instances.values():
            if inst.usd_per_hour < 0 or inst.vcpus < 1:
                raise ConfigError(
                    f"instance {inst.name!r} has price {inst.usd_per_hour} $/h and "
                    f"{inst.vcpus} vCPUs; prices must be >= 0 and vCPUs >= 1"
                )
            if inst.hardware not in ("cpu", "gpu"):
                raise ConfigError(f"instance {inst.name!r} has hardware {inst.hardware!r}")
        for role, name in (("cpu", self.cpu_instance), ("gpu", self.gpu_instance)):
            if name not in self.instances:
                raise ConfigError(
                    f"the {role} instance {name!r} is not in the price table "
                    f"({sorted(self.instances)}); add it or pick another"
                )

    @classmethod
    def default(cls) -> PriceTable:
        return cls({i.name: i for i in DEFAULT_INSTANCES})

    @classmethod
    def from_file(cls, path: Path) -> PriceTable:
        """A JSON file: {"instances": [{"name", "hardware", "usd_per_hour", "vcpus",
        "gpu"?}], "cpu_instance"?, "gpu_instance"?}."""
        try:
            data: dict[str, Any] = json.loads(path.read_text())
            instances = {
                str(i["name"]): Instance(
                    name=str(i["name"]),
                    hardware=str(i["hardware"]),
                    usd_per_hour=float(i["usd_per_hour"]),
                    vcpus=int(i["vcpus"]),
                    gpu=str(i.get("gpu", "")),
                )
                for i in data["instances"]
            }
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"price table {path} cannot be read: {exc}") from exc
        return cls(
            instances,
            cpu_instance=str(data.get("cpu_instance", "m5.2xlarge")),
            gpu_instance=str(data.get("gpu_instance", "p3.2xlarge")),
        )

    def instance_for(self, hardware: str) -> Instance:
        return self.instances[self.cpu_instance if hardware == "cpu" else self.gpu_instance]

    def variant_cost_per_hour(self, hardware: str, threads: int) -> tuple[str, float]:
        """(instance class, dollars per hour) of one replica of a variant."""
        inst = self.instance_for(hardware)
        if hardware == "cpu":
            share = min(max(threads, 1), inst.vcpus) / inst.vcpus
            return inst.name, round(inst.usd_per_hour * share, 6)
        return inst.name, inst.usd_per_hour

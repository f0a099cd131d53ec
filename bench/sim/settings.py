"""What the simulator assumes beyond the profiles, and the system's settings as the
simulator builds them: from its own values and the defaults, never from the environment
(a run must not change with the shell it runs in)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

S = TypeVar("S", bound=BaseSettings)


def _init_values_only(
    _cls: type[BaseSettings], _settings_cls: type[BaseSettings], /, **sources: Any
) -> tuple[PydanticBaseSettingsSource, ...]:
    return (sources["init_settings"],)


@functools.cache
def _without_environment(cls: type[S]) -> type[S]:
    """``cls`` reading only the values it is given (the same name, so errors name it)."""
    hook = classmethod(_init_values_only)
    return type(cls.__name__, (cls,), {"settings_customise_sources": hook})


def isolated(cls: type[S], **values: Any) -> S:
    """``cls(**values)``, checked as usual, with no ``INFAAS_*`` variable or .env file
    read: every field not in ``values`` takes its default."""
    checked = _without_environment(cls)(**values)
    return cast(S, cls.model_construct(**dict(checked)))


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

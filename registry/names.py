"""Identifiers of apps, models and variants (pure).

App and model ids: lowercase ``[a-z0-9-]``, at most 64 characters. A variant id is
``<model>.<runtime>-<precision>[-<opt>].<hardware>[-t<threads>]``, e.g.
``digits-mlp.onnx-fp32.cpu-t1`` or ``resnet50.torch-fp16-compiled.gpu``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from queues.errors import InvalidRequest

_ID_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
_VARIANT_RE = re.compile(
    r"^(?P<model>[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?)"
    r"\.(?P<runtime>[a-z0-9]+)-(?P<precision>[a-z0-9]+)(?:-(?P<opt>[a-z0-9-]+))?"
    r"\.(?P<hardware>cpu|gpu)(?:-t(?P<threads>[0-9]{1,3}))?$"
)
RUNTIMES = frozenset({"onnx", "torch", "tensorrt"})
HARDWARE = frozenset({"cpu", "gpu"})


def check_id(kind: str, value: str) -> str:
    """Return ``value`` if it is a valid app or model id, else raise a clear 422."""
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise InvalidRequest(
            f"{kind} id {value!r} is not valid: use 1-64 characters of lowercase letters, "
            "digits and '-', starting and ending with a letter or digit"
        )
    return value


@dataclass(frozen=True, slots=True)
class VariantName:
    model: str
    runtime: str
    precision: str
    hardware: str
    threads: int = 0
    opt: str = ""

    def __str__(self) -> str:
        kind = f"{self.runtime}-{self.precision}" + (f"-{self.opt}" if self.opt else "")
        place = self.hardware + (f"-t{self.threads}" if self.threads else "")
        return f"{self.model}.{kind}.{place}"


def variant_id(
    model: str, runtime: str, precision: str, hardware: str, threads: int = 0, opt: str = ""
) -> str:
    check_id("model", model)
    if runtime not in RUNTIMES:
        raise InvalidRequest(f"runtime {runtime!r} is not one of {sorted(RUNTIMES)}")
    if hardware not in HARDWARE:
        raise InvalidRequest(f"hardware {hardware!r} is not one of {sorted(HARDWARE)}")
    if hardware == "cpu" and threads < 1:
        raise InvalidRequest("a CPU variant needs a thread count of at least 1")
    return str(VariantName(model, runtime, precision, hardware, threads, opt))


def parse_variant_id(value: str) -> VariantName:
    match = _VARIANT_RE.match(value)
    if not match:
        raise InvalidRequest(
            f"variant id {value!r} is not of the form "
            "<model>.<runtime>-<precision>[-<opt>].<hardware>[-t<threads>]"
        )
    threads = match.group("threads")
    return VariantName(
        model=match.group("model"),
        runtime=match.group("runtime"),
        precision=match.group("precision"),
        hardware=match.group("hardware"),
        threads=int(threads) if threads else 0,
        opt=match.group("opt") or "",
    )

"""What the Open Inference Protocol conformance tests share: the demo's names to query,
and what a variant's own ONNX file computes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from infaas.demo import DEMO_APP
from tests.e2e_support import Stack


def own_output(stack: Stack, variant_id: str, rows: np.ndarray, tmp: Path) -> np.ndarray:
    """What the variant's ONNX file computes, run directly with onnxruntime."""
    catalog = stack.services.catalog
    variant = catalog.get_variant(variant_id)
    model = catalog.get_model(variant.model)
    path = stack.services.store.get_file(variant.artifact_key, tmp / f"{variant_id}.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    [output] = session.run([model.output_name], {session.get_inputs()[0].name: rows})
    return np.asarray(output)


def names(stack: Stack) -> tuple[str, str]:
    """The demo app's input name, and a served variant of the SVC model."""
    signature = stack.services.catalog.get_app(DEMO_APP).signature
    variant = next(v for v in stack.served_variants() if v.startswith("digits-svc."))
    return signature.name, variant

"""Conformance of the Open Inference Protocol with the KServe Python SDK's v2 REST client
(``kserve.InferenceRESTClient``), against the embedded default and the real services.

The SDK's pins conflict with ours, so it runs in a virtual environment of its own
(tests/cached_venv.py, built once into the test cache) as tests/kserve_probe.py; this
test hands it the stack's URL and the queries, and checks each answer against what the
served variant's ONNX file computes.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from infaas.demo import DEMO_APP
from infaas.demo_models import load_validation
from tests.cached_venv import kserve_python
from tests.e2e_support import Stack
from tests.oip_conformance import names, own_output

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROBE = Path(__file__).parents[1] / "kserve_probe.py"
NEEDS = {"min_accuracy": 0.97, "latency_ms": 200}


def run_probe(request: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "kserve-request.json"
    path.write_text(json.dumps(request))
    done = subprocess.run(
        [str(kserve_python()), str(PROBE), str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"the KServe client failed:\n{done.stderr[-4000:]}"
    answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_the_kserve_sdk_queries_an_app_a_model_and_a_variant(
    stack: Stack, tmp_path: Path, binary: bool
) -> None:
    input_name, variant = names(stack)
    inputs, _ = load_validation(stack.demo.validation_path)
    rows = np.ascontiguousarray(inputs[30:33], dtype=np.float32)
    targets = [
        {"name": DEMO_APP, "parameters": NEEDS, "binary": binary},  # model-less
        {"name": "digits-svc", "parameters": None, "binary": binary},
        {"name": variant, "parameters": None, "binary": binary},
    ]
    got = run_probe(
        {"url": stack.url, "input_name": input_name, "rows": rows.tolist(), "targets": targets},
        tmp_path,
    )
    assert got["live"] is True
    assert got["ready"] is True
    answers = {t["name"]: t for t in got["targets"]}
    assert set(answers) == {DEMO_APP, "digits-svc", variant}
    for name, answer in answers.items():
        assert answer["ready"] is True, name
        served = answer["variant"]
        np.testing.assert_allclose(
            np.asarray(answer["output"], dtype=np.float32),
            own_output(stack, served, rows, tmp_path),
            rtol=1e-5,
            atol=1e-6,
            err_msg=f"{name} answered by {served}",
        )
    assert answers[variant]["variant"] == variant
    assert answers["digits-svc"]["model_name"] == "digits-svc"
    assert answers["digits-svc"]["variant"].startswith("digits-svc.")

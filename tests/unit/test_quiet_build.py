"""Building int8 variants keeps onnxruntime's warnings off the terminal, unless asked."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.registration_models import Trained, sklearn_onnx
from workers.builders import (
    ONNX_FP32,
    ONNX_INT8_DYNAMIC,
    ONNX_INT8_STATIC,
    build_artifact,
    calibration_slice,
)

# what onnxruntime says while quantising an sklearn pipeline's graph
NOISE = (
    "failed to infer the type of tensor",
    "CleanUnusedInitializersAndNodeArgs",
    "Please consider to run pre-processing",
    "[W:onnxruntime",
)


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return sklearn_onnx(tmp_path_factory.mktemp("quiet"), "quiet-mlp", "wine", hidden=(16,))


def _build_every_cpu_recipe(model: Trained, out_dir: Path, *, verbose: bool) -> None:
    for recipe in (ONNX_FP32, ONNX_INT8_DYNAMIC, ONNX_INT8_STATIC):
        built = build_artifact(
            recipe,
            model.path,
            out_dir,
            input_name="input",
            calibration=calibration_slice(model.inputs, 64),
            verbose=verbose,
        )
        assert built.is_file()


def _noise(text: str) -> list[str]:
    return [line for line in text.splitlines() if any(n in line for n in NOISE)]


def test_building_variants_says_nothing_by_default(
    mlp: Trained,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    _build_every_cpu_recipe(mlp, tmp_path, verbose=False)
    captured = capfd.readouterr()
    assert _noise(captured.err) == []
    assert _noise(captured.out) == []
    # pytest's log capture sits on the root logger, where the quantiser logs: nothing there
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_verbose_lets_the_warnings_through(
    mlp: Trained,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The same build with ``verbose`` shows them: the quiet test above is not vacuous."""
    caplog.set_level(logging.WARNING)
    _build_every_cpu_recipe(mlp, tmp_path, verbose=True)
    said = capfd.readouterr().err + "\n" + caplog.text
    assert _noise(said)


def test_quiet_puts_the_loggers_back(mlp: Trained, tmp_path: Path) -> None:
    library = logging.getLogger("onnxruntime")
    before = (library.level, list(logging.getLogger().filters))
    _build_every_cpu_recipe(mlp, tmp_path, verbose=False)
    assert (library.level, list(logging.getLogger().filters)) == before

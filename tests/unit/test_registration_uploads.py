"""Checking uploads before anything is stored: ONNX models, torch.export archives (safe
to load only after they pass), validation sets. Every refusal names the problem."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from queues.errors import InvalidModel, InvalidValidationSet
from registry.torch_programs import check_expression, inspect_torch_program, sanitize_archive
from registry.types import App, InputSignature
from registry.uploads import (
    check_model_fits_app,
    check_validation_arrays,
    check_validation_set,
    detect_format,
    inspect_model,
)
from tests.registration_models import Trained, sklearn_onnx, torch_program

WINE = App("wine", "classification", InputSignature("input", "float32", (-1, 13)), num_classes=3)


@pytest.fixture(scope="module")
def wine(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return sklearn_onnx(tmp_path_factory.mktemp("wine"), "wine-mlp", "wine")


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return torch_program(tmp_path_factory.mktemp("torch"), "wine-torch", "wine", epochs=5)


def _graph_model(
    path: Path, *, batch: int | str = "n", features: int = 13, inputs: int = 1
) -> Path:
    """A one-node ONNX graph (Identity per input) with the given input shape."""
    values = [
        helper.make_tensor_value_info(f"input{i or ''}", TensorProto.FLOAT, [batch, features])
        for i in range(inputs)
    ]
    outputs = [
        helper.make_tensor_value_info(f"out{i}", TensorProto.FLOAT, [batch, features])
        for i in range(inputs)
    ]
    nodes = [
        helper.make_node("Identity", [v.name], [o.name])
        for v, o in zip(values, outputs, strict=True)
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "g", values, outputs), opset_imports=[helper.make_opsetid("", 17)]
    )
    onnx.save(model, path)
    return path


# -- ONNX ----------------------------------------------------------------------------------


def test_an_onnx_classifier_is_described(wine: Trained) -> None:
    info = inspect_model(wine.path)
    assert info.format == "onnx"
    assert info.input == InputSignature("input", "float32", (-1, 13))
    assert info.output_name == "probabilities"  # the float [n, classes] output, not label
    assert info.output_width == 3
    assert info.suffix == ".onnx"
    check_model_fits_app(info, WINE)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "the model file is empty"),
        (b"this is a text file, not a model\n" * 10, "ONNX"),
        (bytes(range(256)) * 4, "ONNX"),
    ],
)
def test_not_onnx_is_refused(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    with pytest.raises(InvalidModel, match=expected):
        inspect_model(path)


def test_a_corrupt_onnx_file_is_refused(wine: Trained, tmp_path: Path) -> None:
    path = tmp_path / "cut.onnx"
    path.write_bytes(wine.path.read_bytes()[: wine.path.stat().st_size // 2])
    with pytest.raises(InvalidModel, match="ONNX"):
        inspect_model(path)


def test_an_onnx_graph_the_checker_refuses(tmp_path: Path) -> None:
    value = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 13])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 13])
    node = helper.make_node("NoSuchOperator", ["input"], ["out"])
    model = helper.make_model(helper.make_graph([node], "g", [value], [out]))
    onnx.save(model, tmp_path / "bad.onnx")
    with pytest.raises(InvalidModel, match="the ONNX checker says"):
        inspect_model(tmp_path / "bad.onnx")


@pytest.mark.parametrize(
    ("make", "app", "expected"),
    [
        (
            lambda p: _graph_model(p, features=12),
            WINE,
            r"has shape \[-1, 12\] but app 'wine' takes 'input' float32 \[-1, 13\]",
        ),
        (lambda p: _graph_model(p, batch=1), WINE, "batch dimension is fixed at 1"),
        (
            _graph_model,
            App("w", "classification", InputSignature("features", "float32", (-1, 13))),
            "named 'input' but app 'w' takes 'features'",
        ),
        (
            _graph_model,
            App("w", "classification", InputSignature("input", "float64", (-1, 13))),
            "is float32 but app 'w' takes 'input' float64",
        ),
        (
            _graph_model,
            App("w", "classification", InputSignature("input", "float32", (-1, 13, 1))),
            "rank 2",
        ),
        (
            _graph_model,
            App("w", "classification", InputSignature("input", "float32", (-1, 13)), num_classes=3),
            "has 13 classes but app 'w' has 3",
        ),
    ],
)
def test_inputs_that_do_not_match_the_app(
    tmp_path: Path, make: Callable[[Path], Path], app: App, expected: str
) -> None:
    info = inspect_model(make(tmp_path / "m.onnx"))
    with pytest.raises(InvalidModel, match=expected):
        check_model_fits_app(info, app)


def test_several_inputs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidModel, match="has 2 inputs"):
        inspect_model(_graph_model(tmp_path / "m.onnx", inputs=2))


def test_external_data_is_refused(tmp_path: Path) -> None:
    weights = helper.make_tensor(
        "w", TensorProto.FLOAT, [13, 13], np.eye(13, dtype=np.float32).tobytes(), raw=True
    )
    value = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 13])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 13])
    node = helper.make_node("MatMul", ["input", "w"], ["out"])
    model = helper.make_model(helper.make_graph([node], "g", [value], [out], [weights]))
    onnx.save(model, tmp_path / "m.onnx", save_as_external_data=True, size_threshold=0)
    with pytest.raises(InvalidModel, match="external data"):
        inspect_model(tmp_path / "m.onnx")


def test_output_choice(wine: Trained) -> None:
    assert inspect_model(wine.path, output="label").output_name == "label"
    with pytest.raises(InvalidModel, match="no output 'scores'; its outputs: label int64"):
        inspect_model(wine.path, output="scores")


def test_declared_format_must_match(wine: Trained, program: Trained) -> None:
    assert detect_format(wine.path) == "onnx"
    assert detect_format(program.path) == "torch"
    with pytest.raises(InvalidModel, match="declared torch but is not a zip archive"):
        detect_format(wine.path, "torch")
    with pytest.raises(InvalidModel, match="not one of"):
        detect_format(wine.path, "keras")


# -- torch.export archives ---------------------------------------------------------------


def test_a_torch_program_is_described(program: Trained) -> None:
    info = inspect_torch_program(program.path)
    assert info.format == "torch"
    assert info.input == InputSignature("x", "float32", (-1, 13))
    assert info.output_width == 3
    app = App("w", "classification", InputSignature("x", "float32", (-1, 13)), num_classes=3)
    check_model_fits_app(info, app)


def _rewrite(source: Path, dest: Path, change: Callable[[str, bytes], bytes | None]) -> Path:
    """A copy of the archive with members changed (None drops one)."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(dest, "w") as out:
        for entry in src.infolist():
            data = change(entry.filename.split("/", 1)[1], src.read(entry))
            if data is not None:
                out.writestr(entry.filename, data)
    return dest


def _edit_json(name: str, edit: Callable[[Any], Any]) -> Callable[[str, bytes], bytes | None]:
    def change(member: str, data: bytes) -> bytes | None:
        return json.dumps(edit(json.loads(data))).encode() if member == name else data

    return change


def _pickled_weights(config: Any) -> Any:
    for entry in config["config"].values():
        entry["use_pickle"] = True
    return config


def _call_target(target: str) -> Callable[[Any], Any]:
    def edit(program: Any) -> Any:
        program["graph_module"]["graph"]["nodes"][0]["target"] = target
        return program

    return edit


def _expression(expr: str) -> Callable[[Any], Any]:
    def edit(program: Any) -> Any:
        values = program["graph_module"]["graph"]["tensor_values"]
        values["x"]["sizes"][0] = {"as_expr": {"expr_str": expr, "hint": None}}
        return program

    return edit


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (_edit_json("data/weights/model_weights_config.json", _pickled_weights), "is pickled"),
        (_edit_json("models/model.json", _call_target("torch.os.system")), "torch.os.system"),
        (
            _edit_json("models/model.json", _call_target("torch.ops.aten.from_file.default")),
            "from_file",
        ),
        (_edit_json("models/model.json", _call_target("#my_ext.op")), "#my_ext.op"),
        (
            _edit_json("models/model.json", _expression("__import__('os').system('id')")),
            "symbolic expression contains '__import__'",
        ),
        (
            _edit_json("models/model.json", _expression("Symbol('s0').__class__")),
            "symbolic expression contains",
        ),
        (lambda m, d: None if m == "models/model.json" else d, "no 'models/model.json'"),
    ],
)
def test_unsafe_archives_are_refused(
    program: Trained, tmp_path: Path, change: Callable[[str, bytes], bytes | None], expected: str
) -> None:
    crafted = _rewrite(program.path, tmp_path / "crafted.pt2", change)
    with pytest.raises(InvalidModel, match="cannot be accepted safely") as refused:
        sanitize_archive(crafted, tmp_path / "out.pt2")
    assert expected in refused.value.message
    assert not (tmp_path / "out.pt2").exists()


def test_archives_with_extra_libraries_are_refused(program: Trained, tmp_path: Path) -> None:
    crafted = tmp_path / "aoti.pt2"
    with zipfile.ZipFile(program.path) as src, zipfile.ZipFile(crafted, "w") as out:
        root = src.namelist()[0].split("/")[0]
        for entry in src.infolist():
            out.writestr(entry.filename, src.read(entry))
        out.writestr(f"{root}/data/aotinductor/model/model.so", b"\x7fELF")
    with pytest.raises(InvalidModel, match=r"data/aotinductor/model/model\.so"):
        sanitize_archive(crafted, tmp_path / "out.pt2")


def test_a_zip_that_is_not_an_archive_is_refused(tmp_path: Path) -> None:
    crafted = tmp_path / "other.pt2"
    with zipfile.ZipFile(crafted, "w") as out:
        out.writestr("readme.txt", "hello")
    with pytest.raises(InvalidModel, match="one top folder"):
        inspect_model(crafted)


def test_the_sanitized_copy_has_no_guards_sample_inputs_or_metadata(
    program: Trained, tmp_path: Path
) -> None:
    guarded = _rewrite(
        program.path,
        tmp_path / "guarded.pt2",
        _edit_json("models/model.json", lambda p: {**p, "guards_code": ["__import__('os')"]}),
    )
    clean = sanitize_archive(guarded, tmp_path / "clean.pt2")
    with zipfile.ZipFile(clean) as archive:
        files = {n.split("/", 1)[1]: archive.read(n) for n in archive.namelist()}
    doc = json.loads(files["models/model.json"])
    assert doc["guards_code"] == []
    assert all(node["metadata"] == {} for node in doc["graph_module"]["graph"]["nodes"])
    assert files["data/sample_inputs/model.pt"] == b""
    assert inspect_model(clean).input.shape == (-1, 13)


@pytest.mark.parametrize(
    "expr",
    [
        "Symbol('s31', positive=True, integer=True)",
        "Max(2, Symbol('s0', integer=True))",
        "FloorDiv(s0 + 1, 2) * 3 - s1 ** 2",
        "16",
    ],
)
def test_shape_expressions_torch_writes_are_accepted(expr: str) -> None:
    assert check_expression(expr) is None


@pytest.mark.parametrize(
    "expr",
    [
        "__import__('os').system('id')",
        "eval('1')",
        "Symbol('s0').__class__",
        "Symbol('s0')[0]",
        "lambda: 1",
        "Symbol('os; import os')",
        'Symbol("s0")',
        "x" * 3000,
    ],
)
def test_anything_else_in_shape_expressions_is_refused(expr: str) -> None:
    assert check_expression(expr) is not None


# -- validation sets ---------------------------------------------------------------------


def _npz(path: Path, **arrays: Any) -> Path:
    np.savez(path, **arrays)
    return path


def test_a_good_validation_set(wine: Trained) -> None:
    info = check_validation_set(wine.validation, WINE, num_classes=3)
    assert info.rows == len(wine.inputs)
    assert (info.labels_min, info.labels_max) == (0, 2)


ROWS = np.zeros((10, 13), np.float32)
LABELS = np.arange(10, dtype=np.int64) % 3


@pytest.mark.parametrize(
    ("arrays", "expected"),
    [
        ({"inputs": ROWS}, "no 'labels' array"),
        ({"x": ROWS, "y": LABELS}, "no 'inputs' or 'labels' array"),
        ({"inputs": ROWS, "labels": LABELS[:9]}, "has 10 inputs but 9 labels"),
        (
            {"inputs": ROWS.astype(np.float64), "labels": LABELS},
            "are float64 but app 'wine' takes float32",
        ),
        (
            {"inputs": ROWS[:, :12], "labels": LABELS},
            r"shape \[10, 12\] but app 'wine' takes \[n, 13\]",
        ),
        ({"inputs": ROWS, "labels": LABELS + 1}, "label 3 is out of range"),
        ({"inputs": ROWS, "labels": LABELS - 1}, "must be >= 0; found -1"),
        ({"inputs": ROWS, "labels": LABELS.astype(np.float32)}, "are float32; send integer"),
        ({"inputs": ROWS, "labels": LABELS.reshape(5, 2)}, "send one class index per input"),
        ({"inputs": ROWS[:0], "labels": LABELS[:0]}, "no rows"),
        ({"inputs": np.full((10, 13), np.nan, np.float32), "labels": LABELS}, "NaN"),
        ({"inputs": np.array([object()] * 10), "labels": LABELS}, "without unpickling"),
    ],
)
def test_bad_validation_sets_are_refused(
    tmp_path: Path, arrays: dict[str, Any], expected: str
) -> None:
    path = tmp_path / "val.npz"
    np.savez(path, **arrays)  # object arrays are pickled by numpy: exactly what is refused
    with pytest.raises(InvalidValidationSet, match=expected):
        check_validation_set(path, WINE, num_classes=3)


def test_a_validation_set_that_is_not_an_npz(tmp_path: Path) -> None:
    path = tmp_path / "val.npy"
    np.save(path, ROWS)
    with pytest.raises(InvalidValidationSet, match=r"not an \.npz file"):
        check_validation_set(path, WINE, num_classes=3)


def test_a_validation_set_that_unpacks_too_large(tmp_path: Path) -> None:
    path = tmp_path / "big.npz"
    np.savez_compressed(
        path, inputs=np.zeros((20_000, 13), np.float32), labels=np.zeros(20_000, np.int64)
    )
    assert path.stat().st_size < 100_000
    with pytest.raises(InvalidValidationSet, match="unpacks to 1 MB, more than 0 MB"):
        check_validation_set(path, WINE, num_classes=3, max_unpacked_bytes=100_000)


def test_labels_checked_against_the_models_classes_when_the_app_has_none() -> None:
    app = App("w", "classification", InputSignature("input", "float32", (-1, 13)))
    check_validation_arrays(ROWS, LABELS + 5, app, num_classes=None)  # no bound known
    with pytest.raises(InvalidValidationSet, match="label 7 is out of range"):
        check_validation_arrays(ROWS, LABELS + 5, app, num_classes=4)


# ------------------------------------------------------- limits on what unpacks (issue 20)


def _bomb(path: Path, rows: int, *, declared_rows: int | None = None) -> Path:
    """An .npz whose ``inputs`` unpacks to ``rows`` x 13 float32 zeros (deflated to
    almost nothing), with a header that may claim ``declared_rows`` instead."""
    header = {
        "descr": "<f4",
        "fortran_order": False,
        "shape": (declared_rows if declared_rows is not None else rows, 13),
    }
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("inputs.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, header)
            zeros = bytes(1 << 20)
            left = rows * 13 * 4
            while left > 0:
                member.write(zeros[: min(left, len(zeros))])
                left -= len(zeros)
        with archive.open("labels.npy", "w") as member:
            np.lib.format.write_array(member, LABELS)
    return path


def test_a_validation_set_bomb_is_refused_from_its_directory(tmp_path: Path) -> None:
    bomb = _bomb(tmp_path / "bomb.npz", rows=1_300_000)  # 68 MB of zeros
    assert bomb.stat().st_size < 200_000
    with pytest.raises(InvalidValidationSet, match="unpacks to 68 MB, more than 17 MB"):
        check_validation_set(bomb, WINE, num_classes=3, max_unpacked_bytes=16 * 1024 * 1024)


@pytest.mark.parametrize("declared_rows", [2**40, 2**62, 11])
def test_a_header_that_disagrees_with_its_member_is_refused(
    tmp_path: Path, declared_rows: int
) -> None:
    lying = _bomb(tmp_path / "lying.npz", rows=10, declared_rows=declared_rows)
    with pytest.raises(InvalidValidationSet, match=r"declares shape \[\d+, 13\] of float32"):
        check_validation_set(lying, WINE, num_classes=3)


def _rename(prefix: str) -> Callable[[zipfile.ZipInfo], str]:
    return lambda entry: prefix + entry.filename.split("/", 1)[1]


@pytest.mark.parametrize(
    "rename",
    [_rename("../"), _rename("/abs/"), _rename("model/../../"), _rename("C:/model/")],
    ids=["dotdot-root", "absolute", "dotdot-inside", "drive"],
)
def test_entries_outside_the_archive_folder_are_refused(
    program: Trained, tmp_path: Path, rename: Callable[[zipfile.ZipInfo], str]
) -> None:
    crafted = tmp_path / "escape.pt2"
    with zipfile.ZipFile(program.path) as src, zipfile.ZipFile(crafted, "w") as out:
        for entry in src.infolist():
            out.writestr(rename(entry), src.read(entry))
    with pytest.raises(InvalidModel, match="points outside its folder"):
        sanitize_archive(crafted, tmp_path / "out.pt2")
    assert not (tmp_path / "out.pt2").exists()


def test_a_deeply_nested_program_is_refused(program: Trained, tmp_path: Path) -> None:
    deep = b"[" * 200_000 + b"]" * 200_000
    crafted = _rewrite(
        program.path,
        tmp_path / "deep.pt2",
        lambda member, data: deep if member == "models/model.json" else data,
    )
    with pytest.raises(InvalidModel, match="nested 200000 levels deep"):
        inspect_model(crafted)


def test_an_archive_over_the_unpacked_cap_is_refused(program: Trained, tmp_path: Path) -> None:
    size = sum(e.file_size for e in zipfile.ZipFile(program.path).infolist())
    with pytest.raises(InvalidModel, match="unpacks to"):
        inspect_model(program.path, max_unpacked_bytes=size - 1)
    assert inspect_model(program.path, max_unpacked_bytes=size).format == "torch"


def test_a_weight_bomb_is_refused_before_it_is_read(program: Trained, tmp_path: Path) -> None:
    crafted = tmp_path / "bomb.pt2"
    with (
        zipfile.ZipFile(program.path) as src,
        zipfile.ZipFile(crafted, "w", zipfile.ZIP_DEFLATED) as out,
    ):
        for entry in src.infolist():
            if entry.filename.endswith("/data/weights/weight_0"):
                with out.open(entry.filename, "w", force_zip64=True) as member:
                    for _ in range(64):
                        member.write(bytes(1 << 20))
            else:
                out.writestr(entry, src.read(entry))
    crafted_bytes = crafted.stat().st_size
    with zipfile.ZipFile(crafted) as check:
        assert sum(e.file_size for e in check.infolist()) > 64 * crafted_bytes
    with pytest.raises(InvalidModel, match="unpacks to"):
        inspect_model(crafted, max_unpacked_bytes=16 * 1024 * 1024)

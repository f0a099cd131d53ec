"""Accepting ``torch.export`` archives (``.pt2``) without running the uploader's code.

``torch.export.load`` is not safe on untrusted files: weights and constants may be
pickled, the sample inputs are unpickled (falling back to the unrestricted unpickler),
symbolic shapes are parsed with ``sympy.sympify`` (which evaluates Python), the graph's
call targets are looked up by name anywhere under ``torch`` (``torch.os.system``...), and
its guards are compiled from source text. So an upload is checked as data first:

* the zip holds only the members ``torch.export.save`` writes for one program (no
  AOTInductor libraries, no legacy pickled files, no custom or opaque objects);
* every weight and constant is raw tensor bytes (``use_pickle`` false);
* every call target is an ATen/prims operator or a plain arithmetic/``getitem``
  operator from ``_operator`` (nothing that reads files);
* every symbolic expression is made of numbers, operators and allow-listed sympy
  constructors applied to literals (no attribute access, no other names).

Then a **sanitized copy** is written: the sample inputs emptied, the guards and node
metadata dropped. Only sanitized copies are stored and loaded, by the gateway (to read
the signature) and by workers (to build variants).
"""

from __future__ import annotations

import io
import json
import re
import tokenize
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from queues.errors import InvalidModel
from registry import json_limits
from registry.archives import ArchiveRefused, copy_member, read_member, unsafe_name
from registry.model_info import (
    DEFAULT_MAX_UNPACKED_BYTES,
    TORCH,
    ModelInfo,
    OutputInfo,
    pick_output,
)
from registry.types import InputSignature

MODEL_NAME = "model"
_ROOT_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_TARGET_RE = re.compile(
    r"^(torch\.ops\.(aten|prims)\.[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*"
    r"|_operator\.(getitem|add|sub|mul|floordiv|truediv|mod|neg|pow|eq|ne|lt|le|gt|ge|"
    r"and_|or_|not_)"
    r"|torch\.(sym_max|sym_min|sym_float|sym_int|sym_not|sym_ite|sym_sum|_sym_sqrt))$"
)
# ATen operators that touch the file system or the process.
_DENIED_OPS = frozenset({"from_file", "_print", "save", "load"})
_SYMPY_NAMES = frozenset(
    {
        "Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Max", "Min", "Abs",
        "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or", "Not", "True", "False",
        "FloorDiv", "ModularIndexing", "Where", "PythonMod", "Mod", "CleanDiv",
        "CeilToInt", "FloorToInt", "CeilDiv", "LShift", "RShift", "PowByNatural",
        "FloatPow", "FloatTrueDiv", "IntTrueDiv", "IsNonOverlappingAndDenseIndicator",
        "TruncToFloat", "TruncToInt", "RoundToInt", "RoundDecimal", "ToFloat", "Identity",
        "positive", "negative", "nonnegative", "nonpositive", "integer", "real", "finite",
    }
)  # fmt: skip
_SYMBOL_RE = re.compile(r"^[a-z]{1,3}[0-9]{1,9}$")
_STRING_RE = re.compile(r"^'[a-z]{1,3}[0-9]{1,9}'$")
_OPERATORS = frozenset({"(", ")", ",", "=", "+", "-", "*", "/", "//", "%", "**"})
_MAX_EXPR_CHARS = 2000
_FIXED_MEMBERS = frozenset(
    {"archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id"}
)
_MODEL_JSON = f"models/{MODEL_NAME}.json"
_WEIGHTS_CONFIG = f"data/weights/{MODEL_NAME}_weights_config.json"
_CONSTANTS_CONFIG = f"data/constants/{MODEL_NAME}_constants_config.json"
_SAMPLE_INPUTS = f"data/sample_inputs/{MODEL_NAME}.pt"
_WEIGHT_RE = re.compile(r"^data/weights/weight_[0-9]{1,9}$")
_CONSTANT_RE = re.compile(r"^data/constants/tensor_[0-9]{1,9}$")
# model.json of a small MLP is 14 KB and 9 levels deep; a large network's a few MB
_MAX_JSON_BYTES = 32 * 1024 * 1024
_MAX_JSON_DEPTH = 64


@dataclass(frozen=True)
class _Archive:
    root: str
    members: dict[str, zipfile.ZipInfo]  # relative name -> entry


def _refuse(problem: str) -> InvalidModel:
    return InvalidModel(
        f"the torch.export archive cannot be accepted safely: {problem}. Save the program "
        "with torch.export.save after exporting in inference mode (no custom objects, "
        "no AOTInductor package)"
    )


def _open(archive: zipfile.ZipFile, max_unpacked_bytes: int) -> _Archive:
    entries = [e for e in archive.infolist() if not e.is_dir()]
    unsafe = next((e.filename for e in archive.infolist() if unsafe_name(e.filename)), None)
    if unsafe is not None:
        raise _refuse(f"it holds the entry {unsafe!r}, which points outside its folder")
    roots = {e.filename.split("/", 1)[0] for e in entries}
    if len(roots) != 1 or any("/" not in e.filename for e in entries):
        raise _refuse("its files do not sit in one top folder, as torch.export.save writes them")
    (root,) = roots
    if not _ROOT_RE.match(root):
        raise _refuse(f"its top folder {root!r} has an unusual name")
    unpacked = sum(e.file_size for e in entries)
    if unpacked > max_unpacked_bytes:
        raise _refuse(
            f"it unpacks to {unpacked / 1e6:.0f} MB, over {max_unpacked_bytes / 1e6:.0f} MB"
        )
    members = {e.filename[len(root) + 1 :]: e for e in entries}
    for name in members:
        known = (
            name in _FIXED_MEMBERS
            or name in (_MODEL_JSON, _WEIGHTS_CONFIG, _CONSTANTS_CONFIG, _SAMPLE_INPUTS)
            or _WEIGHT_RE.match(name)
            or _CONSTANT_RE.match(name)
            or name.startswith("extra/")
        )
        if not known:
            raise _refuse(f"it holds {name!r}, which is not part of one exported program")
    for needed in ("archive_format", "archive_version", _MODEL_JSON, _WEIGHTS_CONFIG):
        if needed not in members:
            raise _refuse(f"it has no {needed!r} (not a torch.export.save archive of one program)")
    return _Archive(root, members)


def _read(archive: zipfile.ZipFile, files: _Archive, name: str) -> bytes:
    """A small member (JSON, a version string), never more than ``_MAX_JSON_BYTES``."""
    try:
        return read_member(archive, files.members[name], _MAX_JSON_BYTES)
    except ArchiveRefused as exc:
        raise _refuse(str(exc)) from exc


def _json(archive: zipfile.ZipFile, files: _Archive, name: str) -> Any:
    """A JSON member, its depth checked first (Python's parser recurses per level, and so
    does the check of the program); parsed by Python's, which reads the ``NaN`` and
    ``-Infinity`` that torch writes for float constants."""
    raw = _read(archive, files, name)
    try:
        json_limits.check_depth(raw, max_depth=_MAX_JSON_DEPTH, what=name)
        return json.loads(raw)
    except json_limits.JSONRefused as exc:
        raise _refuse(str(exc)) from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise _refuse(f"{name} is not valid JSON ({exc})") from exc


def _check_payloads(config: Any, pattern: re.Pattern[str], folder: str, files: _Archive) -> None:
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise _refuse(f"the {folder} configuration is malformed")
    for fqn, meta in entries.items():
        if not isinstance(meta, dict):
            raise _refuse(f"the {folder} entry {fqn!r} is malformed")
        if meta.get("use_pickle"):
            raise _refuse(f"{folder} entry {fqn!r} is pickled")
        path = f"data/{folder}/{meta.get('path_name')}"
        if not pattern.match(path) or path not in files.members:
            raise _refuse(f"{folder} entry {fqn!r} points at {meta.get('path_name')!r}")


def check_expression(expr: str) -> str | None:
    """Why a symbolic-shape expression is not accepted, or None when it is safe to
    hand to ``sympy.sympify`` (only literals, operators and allow-listed constructors)."""
    if len(expr) > _MAX_EXPR_CHARS:
        return "a symbolic expression is too long"
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(expr).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError) as exc:
        return f"a symbolic expression cannot be parsed ({exc})"
    for token in tokens:
        kind, text = token.type, token.string
        if kind in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER):
            continue
        if kind == tokenize.NUMBER and re.match(r"^[0-9]+(\.[0-9]+)?$", text):
            continue
        if kind == tokenize.NAME and (text in _SYMPY_NAMES or _SYMBOL_RE.match(text)):
            continue
        if kind == tokenize.STRING and _STRING_RE.match(text):
            continue
        if kind == tokenize.OP and text in _OPERATORS:
            continue
        return f"a symbolic expression contains {text!r}"
    return None


def _check_target(target: str) -> str | None:
    if not _TARGET_RE.match(target):
        return f"the graph calls {target!r}, which is not an ATen or prims operator"
    parts = target.split(".")
    if parts[0] == "torch" and parts[3] in _DENIED_OPS:
        return f"the graph calls {target!r}"
    return None


def _clean_program(node: Any) -> Any:
    """Check every call target and symbolic expression, and return the program with
    guards and node metadata dropped."""
    if isinstance(node, list):
        return [_clean_program(item) for item in node]
    if not isinstance(node, dict):
        return node
    cleaned: dict[str, Any] = {}
    for key, value in node.items():
        if key == "target" and isinstance(value, str):
            problem = _check_target(value)
            if problem:
                raise _refuse(problem)
        if key == "expr_str":
            problem = check_expression(value) if isinstance(value, str) else "malformed"
            if problem:
                raise _refuse(problem)
        if key == "guards_code":
            cleaned[key] = []
        elif key == "metadata" and isinstance(value, dict) and "target" in node:
            cleaned[key] = {}  # a node's debug metadata (stack traces, source functions)
        else:
            cleaned[key] = _clean_program(value)
    return cleaned


def sanitize_archive(
    source: Path, dest: Path, *, max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES
) -> Path:
    """Check ``source`` (raising :class:`InvalidModel` with the reason) and write the
    sanitized copy that is safe to give to ``torch.export.load`` to ``dest``."""
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as exc:
        raise _refuse(f"it is not a readable zip archive ({exc})") from exc
    with archive:
        files = _open(archive, max_unpacked_bytes)
        if _read(archive, files, "archive_format").strip() != b"pt2":
            raise _refuse("its archive_format is not 'pt2'")
        weights = _json(archive, files, _WEIGHTS_CONFIG)
        _check_payloads(weights, _WEIGHT_RE, "weights", files)
        constants: Any = {"config": {}}
        if _CONSTANTS_CONFIG in files.members:
            constants = _json(archive, files, _CONSTANTS_CONFIG)
            _check_payloads(constants, _CONSTANT_RE, "constants", files)
        program = _clean_program(_json(archive, files, _MODEL_JSON))
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp")
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as out:
            for name, entry in files.members.items():
                if name.startswith("extra/"):
                    continue
                if name == _MODEL_JSON:
                    out.writestr(f"{files.root}/{name}", json.dumps(program).encode())
                elif name == _SAMPLE_INPUTS:
                    out.writestr(f"{files.root}/{name}", b"")
                else:  # weights may be large: a block at a time
                    copy_member(archive, entry, out, f"{files.root}/{name}")
            if _SAMPLE_INPUTS not in files.members:
                out.writestr(f"{files.root}/{_SAMPLE_INPUTS}", b"")
            if _CONSTANTS_CONFIG not in files.members:
                out.writestr(f"{files.root}/{_CONSTANTS_CONFIG}", json.dumps(constants))
        tmp.replace(dest)
    return dest


def load_program(sanitized: Path) -> Any:
    """``torch.export.load`` of a sanitized archive (see :func:`sanitize_archive`)."""
    import torch

    try:
        return torch.export.load(str(sanitized))
    except Exception as exc:
        raise InvalidModel(
            f"torch {torch.__version__} cannot load this torch.export archive "
            f"({type(exc).__name__}: {exc}); export and save it with this torch version"
        ) from exc


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) else -1 for d in getattr(value, "shape", ()))


def _dtype(value: Any) -> str:
    return str(getattr(value, "dtype", "object")).removeprefix("torch.")


def program_info(program: Any, *, output: str | None = None) -> ModelInfo:
    """Input signature and outputs of a loaded ``ExportedProgram``."""
    signature = program.graph_signature
    user_inputs = list(signature.user_inputs)
    if len(user_inputs) != 1:
        raise InvalidModel(
            f"the torch program takes {len(user_inputs)} inputs ({user_inputs}); an app "
            "takes exactly one input tensor"
        )
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    value = placeholders[user_inputs[0]].meta.get("val")
    if value is None or not hasattr(value, "shape"):
        raise InvalidModel("the torch program's input is not a tensor")
    dims = _shape(value)
    if not dims:
        raise InvalidModel("the torch program's input has no dimensions (no batch dimension)")
    output_node = next(n for n in program.graph.nodes if n.op == "output")
    results = output_node.args[0] if output_node.args else ()
    results = results if isinstance(results, list | tuple) else (results,)
    outputs = tuple(
        OutputInfo(
            name=str(getattr(r, "name", f"output_{i}")),
            dtype=_dtype(r.meta.get("val")),
            shape=_shape(r.meta.get("val")),
        )
        for i, r in enumerate(results)
        if hasattr(r, "meta")
    )
    if not outputs:
        raise InvalidModel("the torch program returns no tensor")
    return ModelInfo(
        TORCH,
        InputSignature(user_inputs[0], _dtype(value), dims),
        outputs,
        pick_output(outputs, output),
    )


def inspect_torch_program(
    path: Path,
    *,
    output: str | None = None,
    max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES,
) -> ModelInfo:
    """Check an uploaded archive and describe it (loads a sanitized copy with torch)."""
    sanitized = path.with_name(f"{path.name}.sanitized.pt2")
    try:
        sanitize_archive(path, sanitized, max_unpacked_bytes=max_unpacked_bytes)
        return program_info(load_program(sanitized), output=output)
    finally:
        sanitized.unlink(missing_ok=True)

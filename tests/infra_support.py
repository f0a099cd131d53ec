"""Reading the deployment files of ``infra/`` the way their tools do, for the static tests.

Compose's variable interpolation, the settings classes of the project (every ``INFAAS_*``
variable a deployment sets must be one of their fields), and ``infaas`` command lines
parsed by the real ``build_parser()``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import io
import os
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_settings import BaseSettings

REPO = Path(__file__).resolve().parent.parent
INFRA = REPO / "infra"
# Packages that may hold settings classes (DESIGN.md: each package owns its settings).
SETTINGS_PACKAGES = ("queues", "registry", "api_gateway", "workers", "scaler", "infaas")
# Read by infra/check_secrets.py, not by the services: the one INFAAS_ name that is no
# setting. The tests check that the script really reads it.
GUARD_VARIABLES = frozenset({"INFAAS_DEV"})
CREDENTIAL = re.compile(r"(USER|PASSWORD|PASS|SECRET|TOKEN|AUTH|ACCESS_KEY|SECRET_KEY)$")


@functools.cache
def check_secrets_module() -> ModuleType:
    """``infra/check_secrets.py``, a script rather than a package module."""
    path = INFRA / "check_secrets.py"
    spec = importlib.util.spec_from_file_location("infra_check_secrets", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def read_env_example(path: Path) -> dict[str, str]:
    values: dict[str, str] = check_secrets_module().read_env_file(path.read_text(), str(path))
    return values


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


# --- compose interpolation ----------------------------------------------------------------

_REF = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)


@dataclass(frozen=True)
class Ref:
    name: str
    op: str  # "", ":-", "-", ":?", "?"
    arg: str


class InterpolationError(ValueError):
    pass


def references(text: str) -> list[Ref]:
    refs = []
    for match in _REF.finditer(text):
        if match["escaped"]:
            continue
        name = match["braced"] or match["plain"]
        refs.append(Ref(name, match["op"] or "", match["arg"] or ""))
    return refs


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Substitute ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}`` and ``$$`` as Compose."""

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["plain"]
        op, arg = match["op"] or "", match["arg"] or ""
        value = env.get(name)
        unset = value is None or (op.startswith(":") and value == "")
        if op in (":-", "-") and unset:
            return arg
        if op in (":?", "?") and unset:
            raise InterpolationError(f"{name}: {arg}")
        return value or ""

    return _REF.sub(substitute, text)


def interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolate_tree(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    return node


def strings(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every string in a YAML tree with its path (keys included)."""
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from strings(item, f"{path}[{index}]")
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings(value, f"{path}.{key}" if path else str(key))


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A compose service's ``environment`` as a mapping (both forms of the spec)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) for item in env)
        return {pair[0]: pair[1] if len(pair) > 1 else "" for pair in pairs}
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


# --- settings -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SettingField:
    env_name: str
    cls: type[BaseSettings]
    field: str


def _settings_modules() -> Iterator[ModuleType]:
    for package in SETTINGS_PACKAGES:
        folder = REPO / package
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*.py")):
            if "BaseSettings" not in path.read_text():
                continue
            relative = path.relative_to(REPO).with_suffix("")
            yield importlib.import_module(".".join(relative.parts))


def settings_classes() -> list[type[BaseSettings]]:
    found: dict[str, type[BaseSettings]] = {}
    for module in _settings_modules():
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, BaseSettings)
                and value is not BaseSettings
                and value.__module__ == module.__name__
            ):
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return list(found.values())


def setting_fields() -> dict[str, SettingField]:
    """Every environment variable a settings class reads, by name."""
    fields: dict[str, SettingField] = {}
    for cls in settings_classes():
        prefix = str(cls.model_config.get("env_prefix", ""))
        for name, info in cls.model_fields.items():
            if isinstance(info.annotation, type) and issubclass(info.annotation, BaseSettings):
                continue  # nested: its own class reads its own variables
            names = [f"{prefix}{name}".upper()]
            if isinstance(info.validation_alias, str):
                names.append(info.validation_alias.upper())
            for env_name in names:
                fields[env_name] = SettingField(env_name, cls, name)
    return fields


@contextlib.contextmanager
def _only_environ(values: Mapping[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    try:
        for key in [k for k in os.environ if k.startswith("INFAAS_")]:
            del os.environ[key]
        os.environ.update(values)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def setting_problems(env: Mapping[str, str]) -> list[str]:
    """Why the ``INFAAS_*`` values in ``env`` would be refused: unknown names, and values
    the settings classes (or the store URL parser) reject."""
    known = setting_fields()
    infaas = {k: v for k, v in env.items() if k.startswith("INFAAS_")}
    problems = [
        f"{name} is not a setting of any settings class"
        for name in sorted(infaas)
        if name not in known and name not in GUARD_VARIABLES
    ]
    classes = {known[name].cls for name in infaas if name in known}
    with _only_environ({k: v for k, v in infaas.items() if k in known}):
        for cls in classes:
            try:
                cls()
            except ValidationError as exc:
                ours = {known[n].field for n in infaas if n in known and known[n].cls is cls}
                problems.extend(
                    f"{cls.__name__}.{err['loc'][0]}: {err['msg']}"
                    for err in exc.errors()
                    if err["loc"] and err["loc"][0] in ours
                )
    if "INFAAS_STORE_URL" in infaas:
        from queues.errors import InfaasError
        from registry.store import parse_store_url

        try:
            parse_store_url(infaas["INFAAS_STORE_URL"])
        except InfaasError as exc:
            problems.append(f"INFAAS_STORE_URL: {exc.message}")
    if "INFAAS_CATALOG_URL" in infaas:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(infaas["INFAAS_CATALOG_URL"])
        except ArgumentError as exc:
            problems.append(f"INFAAS_CATALOG_URL: {exc}")
        else:
            if url.drivername != "postgresql+psycopg":
                problems.append(f"INFAAS_CATALOG_URL: driver {url.drivername}, not psycopg")
    return problems


# --- commands -----------------------------------------------------------------------------


class CommandError(AssertionError):
    pass


def parse_infaas(argv: list[str]) -> Any:
    """Parse ``infaas ARGS`` with the real parser; a bad command or flag is a CommandError
    carrying argparse's own message."""
    from infaas.cli import build_parser

    if not argv or argv[0] != "infaas":
        raise CommandError(f"the command must start with the infaas console script: {argv}")
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return build_parser().parse_args(argv[1:])
    except SystemExit:
        raise CommandError(
            f"`{' '.join(argv)}` is not a valid infaas command: {err.getvalue().strip()}"
        ) from None

"""One home for the embedded default: ``~/.infaas`` unless INFAAS_HOME says otherwise,
the same for ``make`` and ``infaas`` by hand, and said in the CLI's first line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from infaas import demo
from infaas.cli import main
from queues.errors import ConfigError
from registry.settings import RegistrySettings

REPO = Path(__file__).resolve().parents[2]


def test_the_default_home_is_in_the_users_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("INFAAS_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # what ~ means, without touching the real one
    settings = RegistrySettings()
    assert settings.home == tmp_path / ".infaas"
    assert settings.describe_home() == (
        f"home: {tmp_path / '.infaas'} (the default ~/.infaas; set INFAAS_HOME to move it)"
    )
    assert settings.resolved_catalog_url == f"sqlite:///{tmp_path / '.infaas' / 'catalog.db'}"
    assert not (tmp_path / ".infaas").exists()  # settings alone create nothing


def test_infaas_home_moves_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("INFAAS_HOME", str(tmp_path / "elsewhere"))
    settings = RegistrySettings()
    assert settings.home == tmp_path / "elsewhere"
    assert settings.describe_home() == f"home: {tmp_path / 'elsewhere'} (from INFAAS_HOME)"


def test_the_makefile_leaves_the_home_to_the_cli() -> None:
    """`make demo` and `infaas demo` by hand must find the same home (no second training)."""
    assignment = re.compile(r"^\s*(export\s+)?INFAAS_HOME\s*[:?+!]?=", re.MULTILINE)
    assert not assignment.search((REPO / "Makefile").read_text())


def test_infaas_home_prints_the_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("INFAAS_HOME", str(tmp_path))
    assert main(["home"]) == 0
    assert capsys.readouterr().out == f"{tmp_path}\n"
    assert main(["home", "--explain"]) == 0
    assert capsys.readouterr().out == f"home: {tmp_path} (from INFAAS_HOME)\n"


def test_infaas_demo_says_its_home_first(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("INFAAS_HOME", str(tmp_path))
    for name in ("INFAAS_BROKER_URL", "INFAAS_CATALOG_URL", "INFAAS_STORE_URL", "INFAAS_STATE_URL"):
        monkeypatch.delenv(name, raising=False)
    seen: list[bool] = []

    def stop(*args: object, verbose: bool = False, **kwargs: object) -> object:
        seen.append(verbose)
        raise ConfigError("stopped by the test before any model is trained")

    monkeypatch.setattr(demo, "ensure_demo_app", stop)
    assert main(["demo", "--verbose"]) == 2
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"home: {tmp_path} (from INFAAS_HOME)"
    assert seen == [True]  # --verbose reaches the variant builders
    assert (tmp_path / "catalog.db").exists()  # the catalog is where the line said

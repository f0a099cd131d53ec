"""The catalog on its embedded default, an SQLite file."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from queues.errors import ConfigError, Unavailable
from registry.catalog import Catalog, normalize_url
from tests.catalog_cases import CatalogCases, make_app


@pytest.fixture
def catalog_url(tmp_path: Path) -> str:
    # A folder that does not exist yet: the catalog creates it.
    return f"sqlite:///{tmp_path / 'home' / 'nested' / 'catalog.db'}"


@pytest.fixture
def catalog(catalog_url: str) -> Iterator[Catalog]:
    with Catalog(catalog_url) as opened:
        yield opened


class TestCatalogSqlite(CatalogCases):
    pass


def test_creates_the_folder_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "catalog.db"
    with Catalog(f"sqlite:///{path}") as catalog:
        catalog.create_app(make_app())
        assert catalog.dialect == "sqlite"
    assert path.is_file()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        tables = {row[0] for row in raw.execute("SELECT name FROM sqlite_master")}
    assert {"apps", "models", "variants", "catalog_meta"} <= tables


def test_opening_twice_keeps_the_data(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    with Catalog(url) as first:
        first.create_app(make_app())
    with Catalog(url) as second:
        assert second.get_app("digits") == make_app()
        assert second.revision() == 1


def test_in_memory_catalog_works_across_threads() -> None:
    import threading

    with Catalog("sqlite://") as catalog:
        catalog.create_app(make_app())
        seen: list[int] = []
        thread = threading.Thread(target=lambda: seen.append(len(catalog.list_apps())))
        thread.start()
        thread.join()
        assert seen == [1]


def test_unwritable_place_is_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(Unavailable, match="pick a writable place"):
        Catalog(f"sqlite:///{blocker / 'catalog.db'}")


def test_unopenable_file_is_unavailable(tmp_path: Path) -> None:
    folder = tmp_path / "a-folder"
    folder.mkdir()
    with pytest.raises(Unavailable, match="cannot be used") as caught:
        Catalog(f"sqlite:///{folder}")
    assert str(folder) in caught.value.message


def test_bad_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not a valid database URL"):
        Catalog("not a url")
    with pytest.raises(ConfigError, match="no database driver"):
        Catalog("nosuchdb://somewhere/x")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@h:5432/db", "postgresql+psycopg://u:p@h:5432/db"),
        ("postgresql://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
    ],
)
def test_postgres_urls_use_psycopg(given: str, expected: str) -> None:
    assert normalize_url(given).render_as_string(hide_password=False) == expected

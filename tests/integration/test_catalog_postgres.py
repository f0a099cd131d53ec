"""The catalog on PostgreSQL (the production backend)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine

from queues.errors import Unavailable
from registry.catalog import Catalog
from registry.catalog_schema import Base
from tests import services
from tests.catalog_cases import CatalogCases, make_app

pytestmark = pytest.mark.integration


@pytest.fixture
def catalog_url(postgres_url: str) -> str:
    """The session's database with every catalog table dropped: each test starts empty."""
    engine = create_engine(postgres_url)
    try:
        Base.metadata.drop_all(engine)
    finally:
        engine.dispose()
    return postgres_url


@pytest.fixture
def catalog(catalog_url: str) -> Iterator[Catalog]:
    with Catalog(catalog_url) as opened:
        yield opened


class TestCatalogPostgres(CatalogCases):
    def test_runs_on_postgresql(self, catalog: Catalog) -> None:
        assert catalog.dialect == "postgresql"
        assert catalog.engine.dialect.driver == "psycopg"


def test_plain_postgresql_url_is_accepted(catalog_url: str) -> None:
    plain = catalog_url.replace("postgresql+psycopg://", "postgresql://")
    with Catalog(plain) as catalog:
        catalog.create_app(make_app())
    legacy = catalog_url.replace("postgresql+psycopg://", "postgres://")
    with Catalog(legacy) as catalog:
        assert catalog.get_app("digits") == make_app()


def test_concurrent_construction_on_a_fresh_database() -> None:
    with services.postgres_database() as url:
        catalogs: list[Catalog] = []
        failures: list[BaseException] = []
        start = threading.Barrier(4)

        def open_catalog() -> None:
            start.wait()
            try:
                catalogs.append(Catalog(url))
            except BaseException as error:
                failures.append(error)

        threads = [threading.Thread(target=open_catalog) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        try:
            assert failures == []
            assert len(catalogs) == 4
            catalogs[0].create_app(make_app())
            assert [c.revision() for c in catalogs] == [1, 1, 1, 1]
            assert all(c.get_app("digits") == make_app() for c in catalogs)
        finally:
            for catalog in catalogs:
                catalog.close()


def test_unreachable_database_is_unavailable_without_the_password() -> None:
    port = services.free_port()
    url = f"postgresql://infaas:s3cret-pw@127.0.0.1:{port}/catalog?connect_timeout=2"
    with pytest.raises(Unavailable) as caught:
        Catalog(url)
    message = caught.value.message
    assert "s3cret-pw" not in message
    assert f"postgresql+psycopg://infaas:***@127.0.0.1:{port}/catalog" in message
    assert "check that it is running" in message

"""Whole-system stacks, built once per test session (registration takes a while)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import services
from tests.e2e_support import Stack, embedded_stack, services_stack


@pytest.fixture(scope="session")
def embedded_e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with embedded_stack(tmp_path_factory.mktemp("e2e-embedded")) as stack:
        yield stack


@pytest.fixture(scope="session")
def services_e2e(
    tmp_path_factory: pytest.TempPathFactory,
    broker_url: str,
    redis_state_session: tuple[str, str],
    s3_store_url_session: str,
) -> Iterator[Stack]:
    # A database of its own: the catalog tests empty the session's shared one.
    with (
        services.postgres_database() as catalog_url,
        services_stack(
            tmp_path_factory.mktemp("e2e-services"),
            broker_url=broker_url,
            catalog_url=catalog_url,
            state=redis_state_session,
            store_url=s3_store_url_session,
        ) as stack,
    ):
        yield stack


@pytest.fixture(scope="module", params=["embedded", "services"])
def stack(request: pytest.FixtureRequest) -> Stack:
    """Each test that takes ``stack`` runs on both."""
    built: Stack = request.getfixturevalue(f"{request.param}_e2e")
    return built

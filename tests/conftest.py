"""Shared fixtures: the real services, isolated per test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import services


@pytest.fixture(scope="session")
def broker_url() -> Iterator[str]:
    with services.rabbitmq_vhost() as url:
        yield url


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with services.postgres_database() as url:
        yield url


@pytest.fixture
def redis_state() -> Iterator[tuple[str, str]]:
    with services.redis_prefix() as pair:
        yield pair


@pytest.fixture(scope="session")
def s3_server() -> Iterator[tuple[str, int]]:
    with services.s3_endpoint() as endpoint:
        yield endpoint


@pytest.fixture
def s3_store_url(s3_server: tuple[str, int]) -> str:
    """A fresh bucket on the session's S3 endpoint, as an INFAAS_STORE_URL."""
    host, port = s3_server
    return f"s3://testing:testing@{host}:{port}/{services.unique_name('bucket')}"


@pytest.fixture(scope="session")
def redis_state_session() -> Iterator[tuple[str, str]]:
    """A Redis URL and key prefix shared by a whole session (for long-lived stacks)."""
    with services.redis_prefix() as pair:
        yield pair


@pytest.fixture(scope="session")
def s3_store_url_session(s3_server: tuple[str, int]) -> str:
    host, port = s3_server
    return f"s3://testing:testing@{host}:{port}/{services.unique_name('bucket')}"

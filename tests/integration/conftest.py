"""Whole-system stacks, built once per test session (registration takes a while)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import services
from tests.e2e_support import Stack, embedded_stack, services_stack

# Whichever test first asks for a whole-system stack pays for building it: training the
# demo models, registering and profiling their variants, starting a worker. That took
# 147 s on an idle 2-core machine (`pytest tests/integration/test_e2e.py -k services
# --durations=5`, fresh clone; 58-74 s since the tests profile with fewer runs) and ran
# past the default 300 s on a loaded CI machine, so these tests get more; each wait
# inside them still has its own, shorter, limit. ``stack`` is also the name of
# test_scaler_live's own stack, which registers the demo app too.
STACK_FIXTURES = frozenset({"stack", "services_e2e", "embedded_e2e"})
STACK_TEST_TIMEOUT_S = 900


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        uses_a_stack = STACK_FIXTURES & set(getattr(item, "fixturenames", ()))
        if uses_a_stack and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(STACK_TEST_TIMEOUT_S))


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

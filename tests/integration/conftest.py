"""Whole-system stacks, built once for the integration tests and stopped after them.

The demo app is registered and profiled once per version of the code that does it, in
``demo_catalog`` (the embedded transports, through the demo's own registration, kept in
the test cache); every stack is then seeded from it
(tests/e2e_support.py ``seed_demo``), which takes seconds where profiling took a minute.
The stacks are package-scoped: they stop when the last integration test is done, so they
never load the machine while other tests run in the same process.

Under pytest-xdist (``--dist loadgroup``) the tests of each shared stack are one group
(``stack_group``), so each stack is built by one worker only, and the two shared stacks
run side by side on two workers, with the other tests filling in around them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from infaas.services import Services
from tests import services
from tests.e2e_support import (
    Stack,
    demo_catalog_home,
    embedded_stack,
    open_embedded,
    services_stack,
)

# A test that takes a stack first waits for one to be built: seeding a stack and starting
# its worker took 5-15 s, registering the demo once for the run 60-150 s (on a loaded CI
# machine more), so these tests get more than the default 300 s; each wait inside them
# still has its own, shorter, limit. ``stack`` is also the name of test_scaler_live's own
# stack, seeded from ``demo_catalog`` too.
STACK_FIXTURES = frozenset({"stack", "services_e2e", "embedded_e2e", "demo_catalog"})
STACK_TEST_TIMEOUT_S = 900
# The xdist groups of the stack tests: one per shared stack, so two workers each run one
# (the demo catalog both are seeded from is registered once, by tests/prebuild.py or
# whichever asks first), and one per module that builds a stack of its own from it.
EMBEDDED_GROUP = "stacks-embedded"
SERVICES_GROUP = "stacks-services"


def stack_group(item: pytest.Item) -> str | None:
    """The xdist group of a test that takes a stack, or None for one that takes none."""
    names = set(getattr(item, "fixturenames", ()))
    if not STACK_FIXTURES & names:
        return None
    callspec = getattr(item, "callspec", None)
    shared = callspec.params.get("stack") if callspec is not None else None
    if "services_e2e" in names or shared == "services":
        return SERVICES_GROUP
    if "embedded_e2e" in names or shared == "embedded":
        return EMBEDDED_GROUP
    module = item.module.__name__ if isinstance(item, pytest.Function) else item.nodeid
    return "stacks-" + module.rsplit(".", 1)[-1].removeprefix("test_")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        group = stack_group(item)
        if group is None:
            continue
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(STACK_TEST_TIMEOUT_S))
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="package")
def demo_catalog() -> Iterator[Services]:
    """The demo app registered and profiled once per version of the code that does it, to
    seed stacks from (kept in the test cache beside the demo models, tests/demo_build.py).

    Registered by the first process that asks (the others wait on the lock; ``make test``
    starts that process before lint, ``tests/prebuild.py``), then only read; under xdist
    every worker that needs it opens the same SQLite file."""

    source = open_embedded(demo_catalog_home())
    try:
        yield source
    finally:
        source.close()


@pytest.fixture(scope="package")
def embedded_e2e(
    tmp_path_factory: pytest.TempPathFactory, demo_catalog: Services
) -> Iterator[Stack]:
    with embedded_stack(tmp_path_factory.mktemp("e2e-embedded"), source=demo_catalog) as stack:
        yield stack


@pytest.fixture(scope="package")
def services_e2e(
    tmp_path_factory: pytest.TempPathFactory,
    broker_url: str,
    redis_state_session: tuple[str, str],
    s3_store_url_session: str,
    demo_catalog: Services,
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
            source=demo_catalog,
        ) as stack,
    ):
        yield stack


@pytest.fixture(scope="module", params=["embedded", "services"])
def stack(request: pytest.FixtureRequest) -> Stack:
    """Each test that takes ``stack`` runs on both."""
    built: Stack = request.getfixturevalue(f"{request.param}_e2e")
    return built

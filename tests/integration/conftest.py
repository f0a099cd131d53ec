"""Whole-system stacks, built once for the integration tests and stopped after them.

The demo app is registered and profiled once per run, in ``demo_catalog`` (the embedded
transports, through the demo's own registration); every stack is then seeded from it
(tests/e2e_support.py ``seed_demo``), which takes seconds where profiling took a minute.
The stacks are package-scoped: they stop when the last integration test is done, so they
never load the machine while other tests run in the same process.

Under pytest-xdist (``--dist loadgroup``) every test that takes a stack is in one group,
so one worker builds the stacks and the other runs everything else beside it.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from pathlib import Path

import pytest

from infaas.services import Services
from tests import services
from tests.e2e_support import Stack, embedded_stack, open_embedded, register_demo, services_stack

# A test that takes a stack first waits for one to be built: seeding a stack and starting
# its worker took 5-15 s, registering the demo once for the run 60-150 s (on a loaded CI
# machine more), so these tests get more than the default 300 s; each wait inside them
# still has its own, shorter, limit. ``stack`` is also the name of test_scaler_live's own
# stack, seeded from ``demo_catalog`` too.
STACK_FIXTURES = frozenset({"stack", "services_e2e", "embedded_e2e", "demo_catalog"})
STACK_TEST_TIMEOUT_S = 900
STACK_GROUP = "stacks"


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        uses_a_stack = STACK_FIXTURES & set(getattr(item, "fixturenames", ()))
        if not uses_a_stack:
            continue
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(STACK_TEST_TIMEOUT_S))
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(STACK_GROUP))


def _run_root(factory: pytest.TempPathFactory) -> Path:
    """The folder this whole run shares: under xdist, the parent of each worker's."""
    base = factory.getbasetemp()
    return base.parent if base.name.startswith("popen-gw") else base


@pytest.fixture(scope="package")
def demo_catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """The demo app registered and profiled once for the run, to seed stacks from.

    Registered by the first process that asks (the others wait on the lock), then only
    read; under xdist a second worker that needs it opens the same SQLite file."""
    home = _run_root(tmp_path_factory) / "demo-catalog"
    home.mkdir(parents=True, exist_ok=True)
    with (home / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            source = open_embedded(home)
            if not (home / "registered").exists():
                register_demo(source)
                (home / "registered").touch()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
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

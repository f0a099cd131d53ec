"""Shared fixtures: the real services, isolated per test session; the demo models,
trained once per code version; and CI's rule that a test skips only for hardware that CI
cannot have (tests/hardware.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests import services
from tests.demo_build import DemoBuild, ensure_demo_models
from tests.hardware import ALLOWED_SKIP_REASONS

# --cpu-durations: the CPU each test phase cost (tests/cpu_report.py)
pytest_plugins = ["tests.cpu_report"]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


@dataclass(frozen=True)
class Skip:
    nodeid: str
    reason: str


class SkipAccount:
    """Every skip of the run with its reason; in CI, any reason that is not in
    ``ALLOWED_SKIP_REASONS`` fails the run (exit status 1) and is listed at the end.

    Under pytest-xdist the controller sees every worker's reports, so this runs there."""

    def __init__(self) -> None:
        self.skips: list[Skip] = []

    def _record(self, report: pytest.CollectReport | pytest.TestReport) -> None:
        # an expected failure is reported as skipped too; it is not a skip
        if not report.skipped or hasattr(report, "wasxfail"):  # CI skip policy, no skip
            return
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        self.skips.append(Skip(report.nodeid, reason.removeprefix("Skipped: ")))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._record(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self._record(report)

    def unexpected(self) -> list[Skip]:
        return [s for s in self.skips if s.reason not in ALLOWED_SKIP_REASONS]

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if in_ci() and self.unexpected() and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        unexpected = self.unexpected()
        if not unexpected:
            return
        verdict = "fails the run (CI=true)" if in_ci() else "would fail the run in CI"
        terminalreporter.section(f"skips not allowed in CI: {len(unexpected)}, {verdict}")
        for skip in unexpected:
            terminalreporter.line(f"{skip.nodeid}: {skip.reason}")
        terminalreporter.line("only the reasons in tests/hardware.py ALLOWED_SKIP_REASONS may skip")


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # the controller (or a run without xdist)
        config.pluginmanager.register(SkipAccount(), "infaas-skip-account")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep ``--dist loadgroup`` grouping on pytest 9.2.

    An xdist worker tells the controller an item's ``xdist_group`` by a suffix on its node
    id (``...::test@stacks``), which pytest-xdist 3.8 writes to ``item._nodeid``; pytest 9.2
    keeps the id in ``item._id`` instead, so the suffix is lost and every group is spread
    over the workers without a word (pytest-xdist issue #1386). Until xdist writes it where
    pytest keeps it, this does, the same suffix xdist meant to write."""
    if not getattr(config.option, "loadgroup", False):  # set in xdist workers only
        return
    try:
        from _pytest.nodeid import NodeId
    except ImportError:  # an older pytest, where xdist's own suffix works
        return
    for item in items:
        groups = {
            str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
            for mark in item.iter_markers("xdist_group")
        }
        suffix = "@" + "_".join(sorted(groups))
        if groups and not item.nodeid.endswith(suffix):
            item._id = NodeId.parse(item.nodeid + suffix)


@pytest.fixture(scope="session")
def demo_build() -> DemoBuild:
    """The demo models, trained at most once per version of the code that trains them."""
    return ensure_demo_models()


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

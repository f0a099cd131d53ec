"""CPU seconds per test phase, beside pytest's ``--durations``: the suite is CPU-bound on
two cores, so what a test costs the other xdist worker is its CPU, not its wall time.

Each phase (setup, call, teardown) is charged the CPU its xdist worker spent in it plus
that of the child processes it reaped (a stack's gateway and workers are reaped when
their fixture stops, so a stack's processes are charged to the teardown that stops it).
Processes that are not our children (RabbitMQ, Redis, PostgreSQL) are not counted.
``--cpu-durations=N`` prints the N costliest phases and the total at the end of the run
(0: none)."""

from __future__ import annotations

import resource
from collections.abc import Generator
from dataclasses import dataclass, field

import pytest

REPORT_KEY = "cpu_s"


def _cpu_s() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


_started: dict[tuple[str, str], float] = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None]:
    _started[(item.nodeid, "setup")] = _cpu_s()
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None]:
    _started[(item.nodeid, "call")] = _cpu_s()
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None]:
    _started[(item.nodeid, "teardown")] = _cpu_s()
    yield


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    started = _started.pop((item.nodeid, call.when), None)
    if started is not None:  # user_properties travel from an xdist worker to the controller
        report.user_properties.append((REPORT_KEY, round(_cpu_s() - started, 3)))
    return report


@dataclass(eq=False)  # a pytest plugin: pluggy keeps plugins in sets
class CpuAccount:
    """On the controller: every phase's CPU seconds, printed as the run ends."""

    top: int
    phases: list[tuple[float, str, str]] = field(default_factory=list)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for key, value in report.user_properties:
            if key == REPORT_KEY and isinstance(value, (int, float)):
                self.phases.append((float(value), str(report.when), report.nodeid))

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.phases:
            return
        total = sum(cpu for cpu, _, _ in self.phases)
        terminalreporter.section(
            f"costliest {self.top} phases in CPU seconds (the test's process and the "
            f"children it reaped; all phases: {total:.1f} s)"
        )
        for cpu, when, nodeid in sorted(self.phases, reverse=True)[: self.top]:
            terminalreporter.line(f"{cpu:8.2f}s {when:<8} {nodeid}")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--cpu-durations",
        type=int,
        default=0,
        metavar="N",
        help="print the N test phases that cost the most CPU (with their child processes)",
    )


def pytest_configure(config: pytest.Config) -> None:
    top = int(config.getoption("--cpu-durations"))
    if top > 0 and not hasattr(config, "workerinput"):
        config.pluginmanager.register(CpuAccount(top), "infaas-cpu-account")

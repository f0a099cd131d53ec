"""The --cpu-durations report: each phase's CPU seconds travel on its report and the
controller prints the costliest, with the total."""

from __future__ import annotations

import subprocess
import sys
from typing import Any, Literal

import pytest

from tests.cpu_report import REPORT_KEY, CpuAccount, _cpu_s


class _Terminal:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def section(self, title: str) -> None:
        self.lines.append(f"== {title}")

    def line(self, text: str) -> None:
        self.lines.append(text)


def _report(
    nodeid: str, when: Literal["setup", "call", "teardown"], cpu_s: float | None
) -> pytest.TestReport:
    props: list[tuple[str, Any]] = [] if cpu_s is None else [(REPORT_KEY, cpu_s)]
    return pytest.TestReport(
        nodeid, ("f.py", 1, "t"), {}, "passed", None, when, user_properties=props
    )


def test_the_costliest_phases_are_printed_first_with_the_total() -> None:
    account = CpuAccount(top=2)
    account.pytest_runtest_logreport(_report("a", "setup", 0.5))
    account.pytest_runtest_logreport(_report("a", "call", 3.0))
    account.pytest_runtest_logreport(_report("b", "call", 1.25))
    account.pytest_runtest_logreport(_report("b", "teardown", 2.0))
    account.pytest_runtest_logreport(_report("c", "call", None))  # measured by no one
    terminal = _Terminal()
    account.pytest_terminal_summary(terminal)  # type: ignore[arg-type]
    assert "all phases: 6.8 s" in terminal.lines[0]
    assert [line.split() for line in terminal.lines[1:]] == [
        ["3.00s", "call", "a"],
        ["2.00s", "teardown", "b"],
    ]


def test_nothing_is_printed_when_nothing_was_measured() -> None:
    terminal = _Terminal()
    CpuAccount(top=5).pytest_terminal_summary(terminal)  # type: ignore[arg-type]
    assert terminal.lines == []


def test_a_reaped_child_process_counts() -> None:
    before = _cpu_s()
    burn = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"
    subprocess.run([sys.executable, "-c", burn], check=True, timeout=60)
    assert _cpu_s() - before >= 0.3

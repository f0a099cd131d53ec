"""CI's rule on skips (tests/conftest.py ``SkipAccount``): with CI=true a run in which any
test skipped for a reason not in tests/hardware.py ``ALLOWED_SKIP_REASONS`` fails, and
says which test and why; the hardware reasons pass; outside CI the run only warns."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import Skip, SkipAccount
from tests.hardware import ALLOWED_SKIP_REASONS, NO_CUDA

REPO = Path(__file__).resolve().parents[2]
OTHER_REASON = "the broker is not running"


def _skipped(nodeid: str, reason: str, **extra: object) -> pytest.TestReport:
    report = pytest.TestReport(
        nodeid, ("f.py", 1, nodeid), {}, "skipped", ("f.py", 1, f"Skipped: {reason}"), "call"
    )
    for name, value in extra.items():
        setattr(report, name, value)
    return report


def _finish(account: SkipAccount) -> int:
    session = SimpleNamespace(exitstatus=pytest.ExitCode.OK)
    account.pytest_sessionfinish(session)  # type: ignore[arg-type]
    return int(session.exitstatus)


def test_the_hardware_skips_pass_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    account = SkipAccount()
    for i, allowed in enumerate(sorted(ALLOWED_SKIP_REASONS)):
        account.pytest_runtest_logreport(_skipped(f"t::gpu{i}", allowed))
    assert len(account.skips) == len(ALLOWED_SKIP_REASONS) >= 3
    assert account.unexpected() == []
    assert _finish(account) == pytest.ExitCode.OK


def test_any_other_skip_fails_in_ci_and_an_xfail_is_no_skip(  # skips nothing: CI policy
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CI", "true")
    account = SkipAccount()
    account.pytest_runtest_logreport(_skipped("t::gpu", NO_CUDA))
    expected = _skipped("t::xfail", "known bug", wasxfail="known bug")  # CI policy input
    account.pytest_runtest_logreport(expected)
    account.pytest_runtest_logreport(_skipped("t::broker", OTHER_REASON))
    assert account.unexpected() == [Skip("t::broker", OTHER_REASON)]
    assert _finish(account) == pytest.ExitCode.TESTS_FAILED


def test_outside_ci_another_skip_does_not_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    account = SkipAccount()
    account.pytest_runtest_logreport(_skipped("t::broker", OTHER_REASON))
    assert _finish(account) == pytest.ExitCode.OK


def test_a_real_run_in_ci_fails_on_a_skip_and_names_it(tmp_path: Path) -> None:
    """The hook as pytest loads it, in a run of its own."""
    (tmp_path / "conftest.py").write_text("from tests.conftest import pytest_configure  # noqa\n")
    (tmp_path / "test_one.py").write_text(
        "import pytest\n\n\n"
        "def test_runs():\n    pass\n\n\n"
        f"@pytest.mark.skip(reason={OTHER_REASON!r})\n"  # in a generated file: CI must fail it
        "def test_skips():\n    pass\n"
    )
    env = {**os.environ, "CI": "true"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, done.stdout + done.stderr
    assert "1 passed, 1 skipped" in done.stdout
    assert "skips not allowed in CI: 1, fails the run (CI=true)" in done.stdout
    assert f"test_one.py::test_skips: {OTHER_REASON}" in done.stdout

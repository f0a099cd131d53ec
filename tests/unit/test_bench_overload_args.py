"""The overload benchmark refuses bad arguments before it starts anything."""

from __future__ import annotations

import pytest

from bench import overload


@pytest.mark.parametrize(
    "argv",
    [["--trials", "0"], ["--clients", "0"], ["--timeout-s", "0"], ["--timeout-s", "-1"]],
)
def test_bad_arguments_are_refused_with_a_clear_message(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def must_not_run(_args: object) -> None:
        raise AssertionError("the benchmark started despite a bad argument")

    monkeypatch.setattr(overload, "run", must_not_run)
    with pytest.raises(SystemExit) as exit_info:
        overload.main(argv)
    assert exit_info.value.code == 2
    assert "--trials and --clients must be at least 1" in capsys.readouterr().err

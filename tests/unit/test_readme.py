"""The README stays true: its first lines give the two commands, its error table lists
every error code with its HTTP status."""

from __future__ import annotations

import re
from pathlib import Path

from queues.errors import error_codes

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_first_lines_give_the_two_commands() -> None:
    head = README.splitlines()[:6]
    assert any(line.startswith("make demo") for line in head)
    assert any(line.startswith("make test") for line in head)


def test_error_table_lists_every_code_with_its_status() -> None:
    rows = {
        code: int(status)
        for code, status in re.findall(r"^\| `([a-z_]+)` \| (\d{3}) \|", README, re.M)
    }
    assert rows == error_codes()


def test_ci_runs_the_readme_test_command() -> None:
    ci = (Path(__file__).resolve().parents[2] / ".ci" / "run").read_text()
    assert "\nmake test\n" in ci

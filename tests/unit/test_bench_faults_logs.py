"""bench/faults.py keeps the processes' logs past its temporary home (``--logs``), and
refuses a file where a folder is asked for, before starting anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import faults


def test_each_fault_keeps_the_logs_so_far(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "gateway.log").write_text("started\n")
    (home / "worker-a.log").write_text("serving\n")
    (home / "notes.txt").write_text("not a log\n")
    kept = tmp_path / "kept"
    assert faults.copy_logs(home, kept / "worker-kill-job") == ["gateway.log", "worker-a.log"]
    (home / "gateway.log").write_text("started\nstopped\n")
    faults.copy_logs(home, kept / "broker-stop")
    assert (kept / "worker-kill-job" / "gateway.log").read_text() == "started\n"
    assert (kept / "broker-stop" / "gateway.log").read_text() == "started\nstopped\n"
    assert not (kept / "broker-stop" / "notes.txt").exists()


@pytest.mark.parametrize("flag", ["--logs", "--shots"])
def test_a_file_for_a_folder_is_refused_before_anything_runs(
    flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[object] = []
    monkeypatch.setattr(faults, "run", started.append)
    taken = tmp_path / "taken"
    taken.write_text("")
    with pytest.raises(SystemExit) as exit_info:
        faults.main([flag, str(taken)])
    assert exit_info.value.code == 2
    assert f"{taken} is a file; give a folder" in capsys.readouterr().err
    assert started == []
    assert taken.read_text() == ""

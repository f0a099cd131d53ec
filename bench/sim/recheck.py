"""Re-run recorded simulator results and compare them field by field.

    python -m bench.sim.recheck bench/results/sim/steady-low bench/results/sim/fluctuating

Each folder's ``summary.json`` holds the command that wrote it; this runs that command
again into a scratch folder and compares every field of the two summaries, except the
ones that measure this machine's wall clock (``wall_s``, ``plan_ms_p99``) and the command
line itself. A refactoring that changes no behaviour re-runs every other field exactly.
The report (``--report``, default ``bench/results/sim/recheck.json``) lists, per folder,
the fields compared and every difference; the exit status is 1 when any differs.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

WALL_CLOCK_FIELDS = frozenset({"wall_s", "plan_ms_p99", "command"})
DEFAULT_REPORT = Path("bench/results/sim/recheck.json")


def leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every scalar of a JSON document with its dotted path, wall-clock fields left out."""
    if isinstance(value, dict):
        for key in sorted(value):
            if key not in WALL_CLOCK_FIELDS:
                yield from leaves(value[key], f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from leaves(item, f"{path}[{i}]")
    else:
        yield path, value


def differences(recorded: Any, rerun: Any) -> tuple[int, list[dict[str, Any]]]:
    """(fields compared, the fields whose values differ or exist on one side only)."""
    old = dict(leaves(recorded))
    new = dict(leaves(rerun))
    missing = object()
    diffs = [
        {"field": name, "recorded": old.get(name), "rerun": new.get(name)}
        for name in sorted(old.keys() | new.keys())
        if old.get(name, missing) != new.get(name, missing)
    ]
    return len(old.keys() | new.keys()), diffs


def rerun_argv(command: str, out: Path) -> list[str]:
    """The recorded command's arguments, writing to ``out`` instead."""
    words = shlex.split(command)
    if words[:3] != ["python", "-m", "bench.sim"]:
        raise ValueError(f"not a bench.sim command: {command!r}")
    args = words[3:]
    if "--out" in args:
        at = args.index("--out")
        del args[at : at + 2]
    return [*args, "--out", str(out)]


def recheck(folder: Path) -> dict[str, Any]:
    summary_path = folder / "summary.json"
    if not summary_path.is_file():
        raise FileNotFoundError(f"{summary_path} does not exist; give a folder a run wrote")
    recorded = json.loads(summary_path.read_text())
    with tempfile.TemporaryDirectory(prefix="infaas-recheck-") as scratch:
        argv = rerun_argv(recorded["command"], Path(scratch))
        started = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "bench.sim", *argv],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        wall_s = time.monotonic() - started
        rerun = json.loads((Path(scratch) / "summary.json").read_text())
    compared, diffs = differences(recorded, rerun)
    return {
        "folder": str(folder),
        "command": recorded["command"],
        "fields_compared": compared,
        "differences": diffs,
        "identical": not diffs,
        "rerun_wall_s": round(wall_s, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="folders holding summary.json")
    parser.add_argument("--report", type=Path, default=DEFAULT_REPORT)
    args = parser.parse_args(argv)
    try:
        results = [recheck(folder) for folder in args.folders]
    except (FileNotFoundError, ValueError) as exc:
        print(f"bench.sim.recheck: {exc}", file=sys.stderr)
        return 2
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    report = {
        "benchmark": "sim-recheck",
        "command": "python -m bench.sim.recheck " + " ".join(str(f) for f in args.folders),
        "commit": commit,
        "ignored_fields": sorted(WALL_CLOCK_FIELDS),
        "results": results,
    }
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=1) + "\n")
    for r in results:
        verdict = "identical" if r["identical"] else f"{len(r['differences'])} differ"
        print(f"{r['folder']}: {r['fields_compared']} fields, {verdict} ({r['rerun_wall_s']} s)")
        for d in r["differences"][:20]:
            print(f"  {d['field']}: recorded {d['recorded']!r}, rerun {d['rerun']!r}")
    return 0 if all(r["identical"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

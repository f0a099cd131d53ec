"""CPU time and memory of named process trees over a load cell, read from /proc.

A benchmark names its process groups (gateway, worker, broker, redis), each by a function
that returns the group's root pids; a group is those roots and every descendant (a
gateway may run several processes). :class:`ProcWatch` reads each group's CPU time
(utime + stime of all threads, plus the reaped children's cutime + cstime, so that a
child that exits during the cell keeps its time in the tree) and resident memory before
a cell, samples the memory during it, reads the CPU again after it and gives CPU
milliseconds per answered query and the idle and peak RSS.

The parsing and arithmetic are pure functions of /proc's text (unit-tested); the
readers are thin.
"""

from __future__ import annotations

import math
import os
import resource
import statistics
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROC = Path("/proc")
CLK_TCK = os.sysconf("SC_CLK_TCK")

# the groups whose CPU per query the target counts (gateway + worker <= 0.22 ms)
SERVING = ("gateway", "worker")
SHARED = ("broker", "redis")
SHARED_NOTE = "broker and redis are shared with the machine's other users: noisy"


@dataclass(frozen=True)
class ProcStat:
    """One process's line of /proc/<pid>/stat, the fields this module uses."""

    pid: int
    comm: str
    ppid: int
    cpu_ticks: int  # utime + stime: all the process's threads, live and exited
    child_ticks: int  # cutime + cstime: its waited-for children


def parse_stat(text: str) -> ProcStat:
    """Parse /proc/<pid>/stat. The command name is in parentheses and may itself hold
    spaces and parentheses, so the fields are split after the last ``)``."""
    head, _, rest = text.rpartition(")")
    pid_text, _, comm = head.partition(" (")
    fields = rest.split()
    # fields[0] is field 3 (state) of proc(5): ppid 4, utime 14, stime 15, cutime 16, cstime 17
    return ProcStat(
        pid=int(pid_text),
        comm=comm,
        ppid=int(fields[1]),
        cpu_ticks=int(fields[11]) + int(fields[12]),
        child_ticks=int(fields[13]) + int(fields[14]),
    )


def parse_rss_kb(status_text: str) -> int:
    """VmRSS of /proc/<pid>/status in kB; 0 where there is none (a zombie)."""
    for line in status_text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def descendants(roots: Iterable[int], parent_of: Mapping[int, int]) -> set[int]:
    """``roots`` (those alive, i.e. in ``parent_of``) and every process below them."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parent_of.items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    todo = [pid for pid in roots if pid in parent_of]
    while todo:
        pid = todo.pop()
        if pid in found:
            continue
        found.add(pid)
        todo.extend(children.get(pid, ()))
    return found


def tree_ticks(stats: Iterable[ProcStat]) -> int:
    """A tree's CPU ticks: every member's own time and its reaped children's, so that a
    child's time stays counted once it exits and is waited for."""
    return sum(s.cpu_ticks + s.child_ticks for s in stats)


def cpu_ms_per_query(
    ticks_before: int, ticks_after: int, answered: int, hz: int = CLK_TCK
) -> float:
    """CPU milliseconds a group spent per answered query; NaN with no answers."""
    if answered <= 0:
        return float("nan")
    return (ticks_after - ticks_before) * 1000.0 / hz / answered


def kb_to_mb(kb: int) -> float:
    return kb / 1024.0


# -- thin readers of /proc


def read_stat(pid: int) -> ProcStat | None:
    try:
        return parse_stat((PROC / str(pid) / "stat").read_text())
    except (OSError, ValueError, IndexError):
        return None


def read_rss_kb(pid: int) -> int:
    try:
        return parse_rss_kb((PROC / str(pid) / "status").read_text())
    except OSError:
        return 0


def all_pids() -> list[int]:
    return [int(p.name) for p in PROC.iterdir() if p.name.isdigit()]


def parent_map() -> dict[int, int]:
    """Every live process's parent."""
    parents = {}
    for pid in all_pids():
        stat = read_stat(pid)
        if stat is not None:
            parents[pid] = stat.ppid
    return parents


def pids_named(comm: str, cmdline_has: str = "") -> list[int]:
    """Processes whose command name is ``comm`` (and whose command line holds
    ``cmdline_has``, when given)."""
    found = []
    for pid in all_pids():
        try:
            if (PROC / str(pid) / "comm").read_text().strip() != comm:
                continue
            if (
                cmdline_has
                and cmdline_has.encode() not in (PROC / str(pid) / "cmdline").read_bytes()
            ):
                continue
        except OSError:
            continue
        found.append(pid)
    return found


def broker_pids() -> list[int]:
    """RabbitMQ's Erlang VM."""
    return pids_named("beam.smp")


def redis_pids(port: int = 6379) -> list[int]:
    return pids_named("redis-server", f":{port}")


def client_cpu_s() -> float:
    """This process's own CPU time (the load generator's), all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- a watch over one cell


Roots = Callable[[], Iterable[int]]


@dataclass
class _Group:
    pids: set[int]
    ticks: int
    rss_idle_kb: int
    rss_peak_kb: int


class ProcWatch:
    """Named process groups (``{"gateway": roots, ...}``), measured over cells:

        finish = watch.begin()
        ... the cell's load ...
        figures = finish(answered)

    ``figures`` maps each group, ``gateway+worker``, ``all`` and ``client`` (this
    process) to ``cpu_ms_per_query`` and the groups to ``rss_mb_idle`` (before the
    cell) and ``rss_mb_load`` (the most sampled during it, every ``sample_s``)."""

    def __init__(self, groups: Mapping[str, Roots], *, sample_s: float = 0.25) -> None:
        self.groups = dict(groups)
        self.sample_s = sample_s

    def _snapshot(self) -> dict[str, tuple[set[int], int, int]]:
        parents = parent_map()
        out = {}
        for name, roots in self.groups.items():
            pids = descendants(roots(), parents)
            stats = [s for s in map(read_stat, pids) if s is not None]
            out[name] = (pids, tree_ticks(stats), sum(map(read_rss_kb, pids)))
        return out

    def begin(self) -> Callable[[int], dict[str, dict[str, float]]]:
        groups = {
            name: _Group(pids, ticks, rss, rss)
            for name, (pids, ticks, rss) in self._snapshot().items()
        }
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(self.sample_s):
                for group in groups.values():
                    rss = sum(map(read_rss_kb, group.pids))
                    group.rss_peak_kb = max(group.rss_peak_kb, rss)

        sampler = threading.Thread(target=sample, name="procstat-rss", daemon=True)
        client_before = client_cpu_s()
        sampler.start()

        def finish(answered: int) -> dict[str, dict[str, float]]:
            client_after = client_cpu_s()
            stop.set()
            sampler.join()
            after = self._snapshot()
            ticks = {name: (groups[name].ticks, after[name][1]) for name in groups}
            peaks = {name: max(groups[name].rss_peak_kb, after[name][2]) for name in groups}
            client_ms = (client_after - client_before) * 1000.0
            return summarize(
                ticks,
                {name: g.rss_idle_kb for name, g in groups.items()},
                peaks,
                answered,
                client_ms=client_ms,
            )

        return finish


def summarize(
    ticks: Mapping[str, tuple[int, int]],
    rss_idle_kb: Mapping[str, int],
    rss_peak_kb: Mapping[str, int],
    answered: int,
    *,
    client_ms: float | None = None,
    hz: int = CLK_TCK,
) -> dict[str, dict[str, float]]:
    """Per group: CPU ms per answered query and RSS idle and under load (MB); then
    ``gateway+worker`` and ``all`` (CPU summed), and ``client`` when given."""
    out: dict[str, dict[str, float]] = {}
    for name, (before, after) in ticks.items():
        out[name] = {
            "cpu_ms_per_query": _round(cpu_ms_per_query(before, after, answered, hz)),
            "rss_mb_idle": round(kb_to_mb(rss_idle_kb.get(name, 0)), 1),
            "rss_mb_load": round(kb_to_mb(rss_peak_kb.get(name, 0)), 1),
        }

    def total(names: Iterable[str]) -> dict[str, float]:
        present = [n for n in names if n in ticks]
        before = sum(ticks[n][0] for n in present)
        after = sum(ticks[n][1] for n in present)
        return {
            "cpu_ms_per_query": _round(cpu_ms_per_query(before, after, answered, hz)),
            "rss_mb_idle": round(kb_to_mb(sum(rss_idle_kb.get(n, 0) for n in present)), 1),
            "rss_mb_load": round(kb_to_mb(sum(rss_peak_kb.get(n, 0) for n in present)), 1),
        }

    if any(name in ticks for name in SERVING):
        out["gateway+worker"] = total(SERVING)
    out["all"] = total(ticks)
    if client_ms is not None:
        per_query = client_ms / answered if answered > 0 else float("nan")
        out["client"] = {"cpu_ms_per_query": _round(per_query)}
    return out


def _round(value: float) -> float:
    return value if math.isnan(value) else round(value, 4)


def median_figures(cells: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, Any]]:
    """Several rounds' :func:`summarize` figures of one cell: the median CPU per query,
    the first round's idle RSS and the most RSS under load."""
    out: dict[str, dict[str, Any]] = {}
    for name in cells[0]:
        rows = [c[name] for c in cells if name in c]
        cpu = [
            r["cpu_ms_per_query"] for r in rows if r["cpu_ms_per_query"] == r["cpu_ms_per_query"]
        ]
        figures: dict[str, Any] = {
            "cpu_ms_per_query": round(statistics.median(cpu), 4) if cpu else float("nan")
        }
        if "rss_mb_idle" in rows[0]:
            figures["rss_mb_idle"] = rows[0]["rss_mb_idle"]
            figures["rss_mb_load"] = max(r["rss_mb_load"] for r in rows)
        out[name] = figures
    return out

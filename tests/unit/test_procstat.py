"""The pure parts of bench/procstat.py: /proc text parsing, process trees, CPU per query."""

from __future__ import annotations

import math
import os

import pytest

from bench import procstat
from bench.procstat import ProcStat

# utime 26, stime 28, cutime 3, cstime 4 (fields 14 to 17 of proc(5))
REDIS_STAT = (
    "2258 (redis-server) S 1 2258 2258 0 -1 4194624 372 0 0 0 26 28 3 4 20 0 5 0 3879 "
    "62283776 1711 18446744073709551615 94002619355136 94002620497597 0 0 0 0 12289 17642"
)


def test_parse_stat_reads_pid_parent_and_cpu_ticks() -> None:
    stat = procstat.parse_stat(REDIS_STAT)
    assert stat == ProcStat(pid=2258, comm="redis-server", ppid=1, cpu_ticks=54, child_ticks=7)


def test_parse_stat_survives_a_command_name_with_spaces_and_parentheses() -> None:
    text = "77 (odd ) (name) R 12 77 77 0 -1 0 0 0 0 0 100 50 0 0 20 0 1 0 5 0 0"
    stat = procstat.parse_stat(text)
    assert (stat.pid, stat.comm, stat.ppid, stat.cpu_ticks) == (77, "odd ) (name", 12, 150)


def test_parse_rss_reads_vmrss_in_kb_and_zero_without_it() -> None:
    status = "Name:\tbeam.smp\nVmPeak:\t 2232000 kB\nVmRSS:\t  121924 kB\nThreads:\t40\n"
    assert procstat.parse_rss_kb(status) == 121924
    assert procstat.parse_rss_kb("Name:\tzombie\nState:\tZ (zombie)\n") == 0


def test_descendants_walks_the_tree_and_skips_dead_roots() -> None:
    parent_of = {1: 0, 10: 1, 11: 10, 12: 10, 13: 11, 20: 1, 21: 20}
    assert procstat.descendants([10], parent_of) == {10, 11, 12, 13}
    assert procstat.descendants([10, 21], parent_of) == {10, 11, 12, 13, 21}
    assert procstat.descendants([99], parent_of) == set()


def test_tree_ticks_counts_reaped_children_so_an_exit_keeps_the_total() -> None:
    parent = ProcStat(10, "gw", 1, cpu_ticks=100, child_ticks=0)
    child = ProcStat(11, "gw-child", 10, cpu_ticks=40, child_ticks=0)
    before = procstat.tree_ticks([parent, child])
    # the child exits and is waited for: its time moves into the parent's cutime
    after = procstat.tree_ticks([ProcStat(10, "gw", 1, cpu_ticks=100, child_ticks=40)])
    assert before == after == 140


def test_cpu_ms_per_query() -> None:
    # 50 ticks at 100 Hz = 500 ms over 2500 queries = 0.2 ms each
    assert procstat.cpu_ms_per_query(1000, 1050, 2500, hz=100) == pytest.approx(0.2)
    assert math.isnan(procstat.cpu_ms_per_query(1000, 1050, 0, hz=100))


def test_summarize_gives_each_group_and_the_totals() -> None:
    ticks = {"gateway": (0, 30), "worker": (10, 20), "broker": (0, 40), "redis": (5, 15)}
    idle = {"gateway": 100 * 1024, "worker": 200 * 1024, "broker": 50 * 1024, "redis": 1024}
    peak = {"gateway": 150 * 1024, "worker": 210 * 1024, "broker": 60 * 1024, "redis": 1024}
    out = procstat.summarize(ticks, idle, peak, 1000, client_ms=300.0, hz=100)
    assert out["gateway"] == {"cpu_ms_per_query": 0.3, "rss_mb_idle": 100.0, "rss_mb_load": 150.0}
    assert out["worker"]["cpu_ms_per_query"] == pytest.approx(0.1)
    assert out["gateway+worker"]["cpu_ms_per_query"] == pytest.approx(0.4)
    assert out["gateway+worker"]["rss_mb_load"] == 360.0
    assert out["all"]["cpu_ms_per_query"] == pytest.approx(0.9)
    assert out["client"] == {"cpu_ms_per_query": 0.3}


def test_median_figures_of_rounds() -> None:
    def cell(cpu: float, idle: float, load: float) -> dict[str, dict[str, float]]:
        return {"gateway": {"cpu_ms_per_query": cpu, "rss_mb_idle": idle, "rss_mb_load": load}}

    rounds = [cell(0.3, 100, 120), cell(0.1, 101, 130), cell(0.2, 102, 125)]
    rounds.append(
        {"gateway": {"cpu_ms_per_query": float("nan"), "rss_mb_idle": 1, "rss_mb_load": 1}}
    )
    assert procstat.median_figures(rounds) == {
        "gateway": {"cpu_ms_per_query": 0.2, "rss_mb_idle": 100, "rss_mb_load": 130}
    }


def test_readers_see_this_process() -> None:
    me = procstat.read_stat(os.getpid())
    assert me is not None
    assert me.pid == os.getpid()
    assert me.ppid == os.getppid()
    assert procstat.read_rss_kb(os.getpid()) > 0
    assert os.getpid() in procstat.descendants([os.getppid()], procstat.parent_map())

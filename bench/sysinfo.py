"""Machine facts for the results header, and /proc readings of a process tree."""

from __future__ import annotations

import asyncio
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CpuPlan",
    "TreeSample",
    "child_env",
    "cores_busy",
    "machine_info",
    "plan_cpus",
    "raise_nofile_limit",
    "sample_tree",
]

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_REPO = str(Path(__file__).resolve().parent.parent)


def child_env() -> dict[str, str]:
    """The environment for child processes: unbuffered, and ``bench`` importable
    whatever the working directory (``python bench/run.py`` from elsewhere)."""
    path = os.environ.get("PYTHONPATH", "")
    return dict(
        os.environ,
        PYTHONUNBUFFERED="1",
        PYTHONPATH=_REPO + (os.pathsep + path if path else ""),
    )


_PAGE = os.sysconf("SC_PAGE_SIZE")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine_info() -> dict[str, object]:
    """CPU model, core counts, memory, Python and kernel versions, load average."""
    try:
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kb = 0
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count() or 1,
        "cores_usable": len(os.sched_getaffinity(0)),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "kernel": platform.release(),
        "loadavg_at_start": list(os.getloadavg()),
        "git_commit": _git_commit(),
    }


@dataclass(frozen=True)
class CpuPlan:
    """Which cores the server and the load generator are pinned to (empty: not pinned)."""

    server: frozenset[int]
    loadgen: frozenset[int]

    def describe(self) -> str:
        if not self.server:
            return "not pinned (fewer than 2 usable cores)"
        return f"server on cpu {sorted(self.server)}, load generator on cpu {sorted(self.loadgen)}"


def plan_cpus(enabled: bool = True) -> CpuPlan:
    """Pin the server to the first usable core and everything else to the rest."""
    cores = sorted(os.sched_getaffinity(0))
    if not enabled or len(cores) < 2:
        return CpuPlan(frozenset(), frozenset())
    return CpuPlan(frozenset(cores[:1]), frozenset(cores[1:]))


def raise_nofile_limit() -> int:
    """Raise this process's open-file soft limit to its hard limit; return the new limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


@dataclass(frozen=True)
class TreeSample:
    """CPU seconds and resident memory of a process and all its descendants."""

    cpu_s: float
    rss_bytes: int
    pids: int


def process_children() -> dict[int, list[int]]:
    """Every process's direct children (pid -> pids, ascending), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    for pids in children.values():
        pids.sort()
    return children


def _descendants(root: int) -> list[int]:
    children = process_children()
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


async def median_rss(pid: int) -> int:
    """RSS of ``pid`` and its descendants: the median of three readings 100 ms apart."""
    values = []
    for _ in range(3):
        values.append(sample_tree(pid).rss_bytes)
        await asyncio.sleep(0.1)
    return sorted(values)[1]


def sample_tree(root: int) -> TreeSample:
    """Read utime+stime and RSS of ``root`` and its descendants from /proc."""
    cpu_ticks = 0
    rss_pages = 0
    count = 0
    for pid in _descendants(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            statm = Path(f"/proc/{pid}/statm").read_text().split()
        except OSError:
            continue
        # fields[0] is state (field 3 of stat); utime, stime are fields 14, 15.
        cpu_ticks += int(fields[11]) + int(fields[12])
        rss_pages += int(statm[1])
        count += 1
    return TreeSample(cpu_ticks / _CLK_TCK, rss_pages * _PAGE, count)


def cores_busy(cores: frozenset[int]) -> tuple[float, float]:
    """Busy and total seconds so far of the given cores, summed, from /proc/stat.

    Busy is everything but idle and iowait, whoever ran: comparing a core's busy
    time with the server's own CPU time shows what else ran on the server's core.
    """
    busy = total = 0
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return 0.0, 0.0
    for line in lines:
        name, *rest = line.split()
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cores:
            continue
        ticks = [int(x) for x in rest[:8]]
        total += sum(ticks)
        busy += sum(ticks) - ticks[3] - ticks[4]
    return busy / _CLK_TCK, total / _CLK_TCK

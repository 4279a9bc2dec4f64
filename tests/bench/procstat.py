"""What a gateway process costs, read from /proc: CPU seconds (utime+stime), peak and current RSS.
A pid's live children (a gateway's workers) are included: CPU summed, RSS per worker (the largest)."""

from __future__ import annotations

import os
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def children(pid: int) -> list[int]:
    """`pid`'s live descendants (every thread's children, recursively)."""
    out: list[int] = []
    try:
        tasks = [p.name for p in Path(f"/proc/{pid}/task").iterdir()]
    except OSError:
        return out
    for tid in tasks:
        try:
            kids = [int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
        except OSError:
            continue
        for kid in kids:
            out += [kid, *children(kid)]
    return out


def cpu_seconds(pid: int) -> float:
    """utime+stime of `pid` and its live descendants, in seconds (0 for a pid that is gone)."""
    total = 0
    for p in [pid, *children(pid)]:
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # the name in parentheses may hold blanks
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5): utime, stime
    return total / _TICK


def _status_mb(pid: int, key: str) -> float:
    """The largest `key` (VmHWM, VmRSS) of `pid` and its descendants, in MB."""
    best = 0.0
    for p in [pid, *children(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    best = max(best, int(line.split()[1]) / 1024)
        except OSError:
            continue
    return best


def rss_peak_mb(pid: int) -> float:
    """Peak RSS (VmHWM) of the largest of `pid` and its workers, in MB."""
    return _status_mb(pid, "VmHWM")


def rss_now_mb(pid: int) -> float:
    """Current RSS (VmRSS) of the largest of `pid` and its workers, in MB."""
    return _status_mb(pid, "VmRSS")

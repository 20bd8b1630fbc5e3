"""CPU seconds and RSS of one process from ``/proc/PID/stat``.

restate-server is one process with many threads and the SDK process is one Python process
(its thread pool included), so a process's own counters cover all its work; no psutil needed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class Usage:
    cpu_s: float  # user + system
    rss_bytes: int


def parse_stat(line: str, ticks: int = TICKS, page: int = PAGE) -> Usage:
    """The usage in one ``/proc/PID/stat`` line. The command name, in parentheses, may hold
    spaces and parentheses itself, so fields are counted from the last ``)``."""
    fields = line[line.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state): utime is field 14, stime 15, rss 24
    utime, stime, rss = int(fields[11]), int(fields[12]), int(fields[21])
    return Usage((utime + stime) / ticks, rss * page)


def usage(pid: int) -> Usage | None:
    """None where the process is gone or there is no ``/proc``."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return parse_stat(f.read())
    except (OSError, ValueError, IndexError):
        return None

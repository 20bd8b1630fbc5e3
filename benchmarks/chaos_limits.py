"""The chaos run's limited service: ``ChaosLimited`` (``concurrency=LIMIT``) under kills, and
the check that the limit was never exceeded, counted in the ledger outside the processes.

Each attempt writes ``lim-enter`` and ``lim-exit`` lines (invocation, pid, wall clock in ns)
around the section the limit guards; an attempt that kills its own host (the first attempt of
one invocation in ``CRASH_EVERY``) writes ``lim-dead`` (pid, time) first, and a full restart of
the runtime writes ``lim-restart`` (time) once the old hosts are gone: nothing of a process
runs after either. The scheduler and journal kills of the run restart the limiter under it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import zlib
from collections import defaultdict
from pathlib import Path

import ray

from actors import Context, Runtime, Service
from actors.cluster.names import host_name
from benchmarks.chaos_apps import Job, append

LIMIT = 2
CRASH_EVERY = 6

limited = Service("ChaosLimited", concurrency=LIMIT)


def _line(ledger: str, what: str, *fields: object) -> None:
    append(ledger, " ".join([what, *map(str, fields), str(time.time_ns())]))


@limited.handler()
async def guarded(ctx: Context, job: Job) -> None:
    inv = ctx.invocation_id()
    _line(job.ledger, "lim-enter", inv, os.getpid())
    try:
        await asyncio.sleep(job.seconds)  # the work the limit guards
        marker = Path(job.crash_dir) / f"lim-crashed-{inv}"
        if zlib.crc32(inv.encode()) % CRASH_EVERY == 0 and not marker.exists():
            marker.touch()
            _line(job.ledger, "lim-dead", os.getpid())
            os._exit(19)
    finally:
        _line(job.ledger, "lim-exit", inv, os.getpid())
    await ctx.run("lim-done", append, job.ledger, f"lim-done {inv}")


def host_pids(namespace: str, pool_size: int) -> list[int]:
    """The limited service's host processes (a full restart waits until they are gone)."""
    pids: list[int] = []
    for i in range(pool_size):
        with contextlib.suppress(Exception):
            actor = ray.get_actor(host_name(limited.name, i), namespace=namespace)
            pids.append(ray.get(actor.pid.remote(), timeout=10))
    return pids


def restarted(ledger: str) -> None:
    """The runtime was stopped: every host process of it is gone."""
    _line(ledger, "lim-restart")


def max_overlap(lines: list[str]) -> tuple[int, list[str]]:
    """The most attempts inside the guarded section at one moment, and the attempts that
    neither exited nor died (there should be none)."""
    events: list[tuple[int, int]] = []
    open_at: dict[str, list[tuple[str, int]]] = defaultdict(list)  # pid -> (inv, since)
    for line in lines:
        parts = line.split()
        if not parts or not parts[0].startswith("lim-") or parts[0] == "lim-done":
            continue
        t = int(parts[-1])
        if parts[0] == "lim-enter":
            open_at[parts[2]].append((parts[1], t))
            events.append((t, 1))
        elif parts[0] == "lim-exit":
            started = open_at[parts[2]]
            started.remove(next(s for s in started if s[0] == parts[1]))
            events.append((t, -1))
        elif parts[0] == "lim-dead":
            events += [(t, -1) for _ in open_at.pop(parts[1], [])]
        elif parts[0] == "lim-restart":
            for pid in list(open_at):
                events += [(t, -1) for _ in open_at.pop(pid)]
    events.sort()
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak, [f"{inv}@{pid}" for pid, s in open_at.items() for inv, _ in s]


def stats(lines: list[str]) -> dict[str, int]:
    """How hard the limit was pressed: the peak inside, attempts, and hosts it killed."""
    return {
        "peak": max_overlap(lines)[0],
        "attempts": sum(ln.startswith("lim-enter ") for ln in lines),
        "host_exits": sum(ln.startswith("lim-dead ") for ln in lines),
    }


def check(lines: list[str], acked: list[str], rt: Runtime) -> dict[str, str]:
    """The invariants of the limited service, as the chaos report's checks."""
    peak, unended = max_overlap(lines)
    done = {ln.split()[1] for ln in lines if ln.startswith("lim-done ")}
    status = {
        row["id"]: row["status"]
        for row in rt.sql(
            "SELECT id, status FROM sys_invocation WHERE target_service_name = 'ChaosLimited'"
        ).to_pylist()
    }
    lost = [i for i in acked if i not in done or status.get(i) != "completed"]
    return {
        f"the concurrency limit ({LIMIT}) was never exceeded": (
            "ok" if peak <= LIMIT and not unended else f"peak {peak}, unended {unended[:3]}"
        ),
        "every acknowledged limited send ran and completed": (
            "ok" if not lost else f"{len(lost)} of {len(acked)}, e.g. {lost[:3]}"
        ),
    }

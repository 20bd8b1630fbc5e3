"""The chaos workload's schedule (``benchmarks.chaos``): one ``every=1s`` schedule ticking
through every fault (the timer scheduler's kill also kills the schedule runner; the journal's
kill, host kills and full restarts hit it as they come), and its invariants:

- none twice: one invocation per tick time, and each tick's journaled start recorded once;
- none early: the start each tick journaled (wall clock, in ``ctx.run``) is not before its tick;
- none missed within the catch-up window (one minute, longer than any fault lasts): the ticks
  from the first to the last are consecutive seconds;
- every tick's invocation completed, and its handler ran (its start is in the ledger, a file
  outside the processes).

Overlap is ``allow_all``, so that a tick slowed by a fault does not make the next one skip.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

from actors import Context, Runtime, Service, TerminalError
from journal.errors import StatusCode
from scheduler.schedules import tick_time_ms

SCHEDULE_ID = "chaos-tick"
EVERY_MS = 1_000
ticks = Service("ChaosTicks")


def _stamp(ledger: str, invocation_id: str) -> int:
    at = time.time_ns() // 1_000_000
    with open(ledger, "a") as f:
        f.write(f"tick {at} {invocation_id}\n")
    return at


@ticks.handler()
async def tick(ctx: Context, ledger: str) -> int:
    return await ctx.run("start", _stamp, ledger, ctx.invocation_id())


def ledger_of(work_dir: Path) -> Path:
    return work_dir / "ticks.txt"


def ensure(rt: Runtime, work_dir: Path) -> None:
    """Define the schedule unless the journal has it (a full restart keeps it)."""
    try:
        rt.schedule(
            SCHEDULE_ID,
            tick,
            arg=str(ledger_of(work_dir)),
            every=timedelta(milliseconds=EVERY_MS),
            overlap="allow_all",
        )
    except TerminalError as e:
        if e.status_code != StatusCode.CONFLICT:
            raise


def stop(rt: Runtime) -> None:
    """Pause it, so that the end of the run has a last tick (its invocation finishes with the
    others before the checks); return once that tick's invocation is accepted (it may still
    be on its way to its host)."""
    rt.pause_schedule(SCHEDULE_ID)
    [last] = [s.last_invocation_id for s in rt.schedules() if s.id == SCHEDULE_ID]
    deadline = time.monotonic() + 60
    while last is not None and time.monotonic() < deadline:
        if rt.sql(f"SELECT count(*) FROM sys_invocation WHERE id = '{last}'").column(0)[0].as_py():
            return
        time.sleep(0.1)  # polling the journal, with a deadline


def check(rt: Runtime, work_dir: Path) -> dict[str, str]:
    """The schedule's invariants, by name: "ok" or what went wrong."""
    rows = rt.sql(
        "SELECT i.id, i.invoked_by_id AS k, i.status, j.result->>'$' AS started"
        " FROM sys_invocation i LEFT JOIN sys_journal j"
        " ON j.invocation_id = i.id AND j.entry_type = 'run' AND j.name = 'start'"
        f" WHERE starts_with(i.invoked_by_id, 'schedule:{SCHEDULE_ID}@')"
    ).to_pylist()
    by_tick: dict[int, list[dict]] = {}
    for r in rows:
        parsed = tick_time_ms(r["k"])
        if parsed is not None:
            by_tick.setdefault(parsed[1], []).append(r)
    ledger = ledger_of(work_dir)
    lines = set(ledger.read_text().splitlines()) if ledger.exists() else set()
    times = sorted(by_tick)
    twice = [t for t, rs in by_tick.items() if len(rs) != 1]
    unfinished = [r["id"] for r in rows if r["status"] != "completed" or r["started"] is None]
    early = [
        (t, int(r["started"]) - t)
        for t, rs in by_tick.items()
        for r in rs
        if r["started"] is not None and int(r["started"]) < t
    ]
    unrecorded = [
        r["id"] for r in rows if r["started"] is not None
        and f"tick {r['started']} {r['id']}" not in lines
    ]  # fmt: skip
    missed = sorted(set(range(times[0], times[-1] + 1, EVERY_MS)) - set(times)) if times else []
    return {
        "schedule ticked (at least 5 ticks)": "ok" if len(times) >= 5 else f"{len(times)} ticks",
        "no tick twice": "ok" if not twice else f"{len(twice)}: {twice[:3]}",
        "no tick early": "ok" if not early else f"{len(early)} (tick, ms): {early[:3]}",
        "no tick missed within the catch-up window": (
            "ok" if not missed else f"{len(missed)} of {len(times) + len(missed)}: {missed[:3]}"
        ),
        "every tick completed, its start in the ledger": (
            "ok"
            if not unfinished and not unrecorded
            else f"unfinished {unfinished[:3]}, not in the ledger {unrecorded[:3]}"
        ),
    }

"""Schedules' pure logic: when a schedule ticks, which missed ticks still run, and what a tick
does while the previous one runs (no Ray, no I/O; unit-tested).

Times are integer epoch milliseconds. Cron expressions are parsed by ``cronsim`` (not by us) in
the schedule's ``zoneinfo`` time zone, so a DST change does what cron does: a time the spring
change skips fires at the first minute after the gap, a time the autumn change repeats fires
once. An interval (``every``) ticks at ``anchor + n * every``, the anchor being when the
schedule was created: the ticks of schedules created at different moments do not all fall on
the same instant (10,000 schedules of ``every=10s`` created over a minute spread their ticks
over each 10 s instead of firing at once).

Catch-up. A tick is *missed* when the runner reaches it later than the schedule's ``catchup``
(ticks that fell due while the runtime, or the schedule runner, was down). When the runner
(re)loads a schedule it starts at the first tick not older than ``catchup``: ``catchup=0`` runs
none of the missed ones. In steady state a tick is only dropped when it is later than
``max(catchup, LATE_GRACE_MS)``: a runner that is merely busy, or a clock that jumps forward
by a little, does not lose ticks; a jump of an hour does not make an ``every=1s`` schedule
fire 3,600 times. A tick never starts early: the runner fires it only once the wall clock has
passed it (a clock that jumps back makes ticks wait).

Pause. Ticks that fall while a schedule is paused are not missed but skipped: resuming starts
with the first tick after the resume.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from journal.kinds import Overlap

DEFAULT_CATCHUP = timedelta(minutes=1)
LATE_GRACE_MS = 10_000  # a tick this late in steady state still runs, whatever ``catchup``
MAX_ID_LENGTH = 200


class ScheduleError(ValueError):
    """A schedule's definition is malformed (the client turns it into ``TerminalError`` 400)."""


class Action(StrEnum):
    """What the runner does with a due tick."""

    FIRE = "fire"  # start the tick's invocation
    SKIP = "skip"  # drop it (the previous runs, overlap "skip"; or a buffered one waits)
    BUFFER = "buffer"  # keep it; it starts when the previous tick's invocation completes


@dataclass(frozen=True, slots=True)
class Spec:
    """When a schedule ticks: a cron expression in a time zone, or an interval from an
    anchor."""

    cron: str | None
    every_ms: int | None
    timezone: str
    anchor_ms: int

    def next_after(self, after_ms: int) -> int:
        """The first tick strictly after ``after_ms``."""
        if self.every_ms is not None:
            n = max((after_ms - self.anchor_ms) // self.every_ms + 1, 1)  # ticks: n >= 1
            return self.anchor_ms + n * self.every_ms
        assert self.cron is not None
        zone = ZoneInfo(self.timezone)
        # cronsim yields times strictly after a whole second (cron's resolution)
        start = dt.datetime.fromtimestamp(after_ms // 1000, zone)
        tick = next(iter(CronSim(self.cron, start)))
        return round(tick.timestamp() * 1000)

    def first_due(self, cursor_ms: int, now_ms: int, window_ms: int) -> int:
        """The first tick after ``cursor_ms`` (the last tick decided) that is not older than
        ``window_ms`` at ``now_ms``: older ones are missed."""
        return self.next_after(max(cursor_ms, now_ms - window_ms - 1))

    def describe(self) -> str:
        """The spec as ``sys_schedule.spec`` shows it: the cron expression, or ``@every 30s``."""
        if self.cron is not None:
            return self.cron
        assert self.every_ms is not None
        return "@every " + _duration(self.every_ms)


def _duration(ms: int) -> str:
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000)):
        if ms >= size:
            parts.append(f"{ms // size}{unit}")
            ms %= size
    if ms or not parts:
        parts.append(f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms / 1000:g}s")
    return "".join(parts)


def parse_spec(
    cron: str | None,
    every: timedelta | float | None,
    timezone: str,
    anchor_ms: int,
) -> Spec:
    """Check a schedule's timing arguments; ``ScheduleError`` says what is wrong."""
    if (cron is None) == (every is None):
        raise ScheduleError("give either cron=... or every=... (exactly one of them)")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ScheduleError(
            f"unknown time zone {timezone!r} (an IANA name: 'Europe/Berlin')"
        ) from None
    if every is not None:
        if isinstance(every, bool) or not isinstance(every, timedelta | int | float):
            raise ScheduleError(f"every must be a timedelta, not {type(every).__name__}")
        seconds = every.total_seconds() if isinstance(every, timedelta) else float(every)
        every_ms = round(seconds * 1000)
        if not every_ms > 0:
            raise ScheduleError(f"every must be positive (at least 1 ms), not {every!r}")
        return Spec(None, every_ms, timezone, anchor_ms)
    if not isinstance(cron, str):
        raise ScheduleError(f"cron must be a string, not {type(cron).__name__}")
    try:
        CronSim(cron, dt.datetime.now(ZoneInfo(timezone)))
    except CronSimError as e:
        raise ScheduleError(f"malformed cron expression {cron!r}: {e}") from None
    spec = Spec(cron, None, timezone, anchor_ms)
    try:  # a valid expression that never matches ('0 0 30 2 *': February 30th)
        spec.next_after(anchor_ms)
    except (StopIteration, CronSimError):
        raise ScheduleError(f"cron expression {cron!r} never fires") from None
    return spec


def check_id(schedule_id: object) -> str:
    if not isinstance(schedule_id, str) or not schedule_id.strip():
        raise ScheduleError(f"a schedule id is a non-empty string, not {schedule_id!r}")
    if len(schedule_id) > MAX_ID_LENGTH or any(ord(c) < 32 for c in schedule_id):
        raise ScheduleError(
            f"a schedule id has at most {MAX_ID_LENGTH} printable characters: {schedule_id!r}"
        )
    return schedule_id


def check_overlap(overlap: object) -> Overlap:
    if isinstance(overlap, str) and overlap in {o.value for o in Overlap}:
        return Overlap(overlap)
    choices = ", ".join(repr(o.value) for o in Overlap)
    raise ScheduleError(f"overlap must be one of {choices}, not {overlap!r}")


def check_catchup(catchup: timedelta | float) -> int:
    """``catchup`` in ms (a timedelta, or seconds); ``ScheduleError`` if negative."""
    if isinstance(catchup, bool) or not isinstance(catchup, timedelta | int | float):
        raise ScheduleError(f"catchup must be a timedelta, not {type(catchup).__name__}")
    seconds = catchup.total_seconds() if isinstance(catchup, timedelta) else float(catchup)
    if not seconds >= 0:
        raise ScheduleError(f"catchup must not be negative, not {catchup!r}")
    return round(seconds * 1000)


def decide(overlap: Overlap, running: bool, buffered: bool) -> Action:
    """What a due tick does, given whether the previous tick's invocation still runs and
    whether a tick is already buffered behind it."""
    if not running or overlap == Overlap.ALLOW_ALL:
        return Action.FIRE
    if overlap == Overlap.BUFFER_ONE and not buffered:
        return Action.BUFFER
    return Action.SKIP


def tick_key(schedule_id: str, tick_ms: int) -> str:
    """A tick's key: the schedule and the tick's time (UTC, ms). Its invocation id derives
    from it, so a tick fired again after a crash is the same invocation; it is shown as the
    invocation's ``sys_invocation.invoked_by_id``."""
    when = dt.datetime.fromtimestamp(tick_ms / 1000, dt.UTC).isoformat(timespec="milliseconds")
    return f"schedule:{schedule_id}@{when.replace('+00:00', 'Z')}"


def tick_time_ms(key: str) -> tuple[str, int] | None:
    """(schedule id, tick time) of a tick key; None for anything else."""
    if not key.startswith("schedule:") or "@" not in key:
        return None
    schedule_id, _, when = key[len("schedule:") :].rpartition("@")
    try:
        at = dt.datetime.fromisoformat(when.replace("Z", "+00:00"))
    except ValueError:
        return None
    return schedule_id, round(at.timestamp() * 1000)

"""The ``Runtime``'s schedule methods: ``schedule``, ``schedules``, ``pause_schedule``,
``resume_schedule``, ``delete_schedule`` (and their ``*_async`` twins).

Every argument is checked here, before anything is written: the timing (``scheduler.schedules``:
cron parsed by ``cronsim``, the time zone by ``zoneinfo``), the overlap policy, and the handler,
key and argument exactly as a call would be (``Router.request``). The schedule is then one row
in the journal (a duplicate id is refused there, atomically) and the schedule runner
(``actors.cluster.schedule_runner``) is made if it does not run yet and told to read it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import ray

from actors.cluster.names import SCHEDULES
from actors.cluster.remote import UNAVAILABLE
from actors.cluster.router import SYSTEM_ACTOR, Router, Target
from actors.cluster.schedules_actor import ScheduleRunnerActor
from actors.sdk.definitions import Workflow
from actors.sdk.errors import TerminalError
from journal.clock import now_ms
from journal.errors import StatusCode
from journal.kinds import InvokeMode, Overlap
from journal.retry import retry
from journal.schedules import ScheduleRow
from scheduler.schedules import (
    DEFAULT_CATCHUP,
    ScheduleError,
    check_catchup,
    check_id,
    check_overlap,
    parse_spec,
)

if TYPE_CHECKING:
    from actors.client.handles import _LoopThread
    from actors.cluster.remote import RemoteJournal

RUNNER_PATIENCE_S = 60.0  # how long telling the runner about a change is tried


@dataclass(frozen=True, slots=True)
class Schedule:
    """A schedule as ``Runtime.schedules()`` lists it (``sys_schedule`` in SQL)."""

    id: str
    target: str  # "Service/handler"
    key: str | None
    input: str  # the handler's argument, JSON
    spec: str  # the cron expression, or "@every 30s"
    timezone: str
    overlap: Overlap
    catchup: timedelta
    paused: bool
    next_fire_at: dt.datetime | None
    last_fire_at: dt.datetime | None
    last_invocation_id: str | None

    @classmethod
    def of(cls, row: ScheduleRow) -> Schedule:
        return cls(
            row.id,
            row.target,
            row.key,
            row.input,
            row.spec,
            row.timezone,
            Overlap(row.overlap),
            timedelta(milliseconds=row.catchup_ms),
            row.paused,
            _time(row.next_fire_at_ms),
            _time(row.last_fire_at_ms),
            row.last_invocation_id,
        )


def _time(ms: int | None) -> dt.datetime | None:
    return None if ms is None else dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def start_runner(namespace: str, partitions: int = 1) -> Any:
    """The namespace's schedule runner, made if it does not run."""
    return (
        ray.remote(ScheduleRunnerActor)
        .options(name=SCHEDULES, namespace=namespace, get_if_exists=True, **SYSTEM_ACTOR)
        .remote(namespace, partitions)
    )


def bad(message: str) -> TerminalError:
    return TerminalError(message, StatusCode.BAD_REQUEST)


class ScheduleMethods:
    """Mixed into ``Runtime``."""

    namespace: str
    router: Router
    _journal: RemoteJournal
    _loop: _LoopThread

    def _check_open(self) -> None:
        raise NotImplementedError

    def _row(
        self,
        schedule_id: str,
        target: Target,
        key: str | None,
        arg: Any,
        cron: str | None,
        every: timedelta | float | None,
        timezone: str,
        overlap: Overlap | str,
        catchup: timedelta | float,
    ) -> ScheduleRow:
        """The journal row of a new schedule; ``TerminalError`` (400/404) for bad input."""
        now = now_ms()
        try:
            check_id(schedule_id)
            spec = parse_spec(cron, every, timezone, now)
            policy = check_overlap(overlap)
            catchup_ms = check_catchup(catchup)
        except ScheduleError as e:
            raise bad(str(e)) from None
        handler, req = self.router.request(target, key, arg, InvokeMode.SEND)
        d = handler.definition
        if isinstance(d, Workflow) and d.is_main(handler.name):
            raise bad(
                f"{handler.target} is a workflow's main handler, which runs once per key: "
                "schedule a handler that starts a workflow run with a key of its own"
            )
        return ScheduleRow(
            schedule_id,
            req.service,
            req.handler,
            req.key,
            req.input,
            spec.describe(),
            spec.cron,
            spec.every_ms,
            spec.timezone,
            policy.value,
            catchup_ms,
            False,
            now,
            now,
            spec.next_after(now),
        )

    async def schedule_async(
        self,
        schedule_id: str,
        target: Target,
        key: str | None = None,
        arg: Any = None,
        *,
        cron: str | None = None,
        every: timedelta | float | None = None,
        timezone: str = "UTC",
        overlap: Overlap | str = Overlap.SKIP,
        catchup: timedelta | float = DEFAULT_CATCHUP,
    ) -> Schedule:
        self._check_open()
        row = self._row(schedule_id, target, key, arg, cron, every, timezone, overlap, catchup)
        if not await self._journal.call("create_schedule", row):
            raise TerminalError(
                f"schedule {schedule_id!r} exists (delete it first to define it anew)",
                StatusCode.CONFLICT,
            )
        await self._tell_runner(schedule_id)
        return Schedule.of(row)

    def schedule(
        self,
        schedule_id: str,
        target: Target,
        key: str | None = None,
        arg: Any = None,
        *,
        cron: str | None = None,
        every: timedelta | float | None = None,
        timezone: str = "UTC",
        overlap: Overlap | str = Overlap.SKIP,
        catchup: timedelta | float = DEFAULT_CATCHUP,
    ) -> Schedule:
        """Run ``target`` (with ``key`` and ``arg``, checked as for a call) on a schedule:
        ``cron`` (5 fields, or 6 with seconds first; in ``timezone``, an IANA name) or ``every``
        (a timedelta, or seconds; ticks at whole multiples of it after now). Each tick is one
        invocation whose id derives from the schedule id and the tick's time, never started
        before that time. ``overlap``: a tick while the previous tick's invocation runs is
        skipped ("skip"), waits for it ("buffer_one": at most one waits) or starts anyway
        ("allow_all"). ``catchup``: ticks missed (the runtime was down) that are at most this
        old still run; older ones are dropped (``timedelta(0)``: none; default one minute).
        ``TerminalError`` 400/404 for bad input, 409 if ``schedule_id`` exists."""
        return self._loop.run(
            self.schedule_async(
                schedule_id,
                target,
                key,
                arg,
                cron=cron,
                every=every,
                timezone=timezone,
                overlap=overlap,
                catchup=catchup,
            )
        )

    async def schedules_async(self) -> list[Schedule]:
        self._check_open()
        loaded = await self._journal.call("load_schedules", None)
        return [Schedule.of(item.row) for item in loaded]

    def schedules(self) -> list[Schedule]:
        """Every schedule, by id."""
        return self._loop.run(self.schedules_async())

    async def _change(self, schedule_id: str, method: str, *args: Any) -> None:
        self._check_open()
        if not await self._journal.call(method, schedule_id, *args):
            raise TerminalError(f"unknown schedule {schedule_id!r}", StatusCode.NOT_FOUND)
        await self._tell_runner(schedule_id)

    async def pause_schedule_async(self, schedule_id: str) -> None:
        await self._change(schedule_id, "pause_schedule", True, now_ms())

    def pause_schedule(self, schedule_id: str) -> None:
        """Stop a schedule's ticks (a tick's invocation already started goes on).
        ``TerminalError`` 404 for an unknown id."""
        self._loop.run(self.pause_schedule_async(schedule_id))

    async def resume_schedule_async(self, schedule_id: str) -> None:
        await self._change(schedule_id, "pause_schedule", False, now_ms())

    def resume_schedule(self, schedule_id: str) -> None:
        """Start a paused schedule's ticks again, from the first tick after now: the ticks
        of the pause do not run."""
        self._loop.run(self.resume_schedule_async(schedule_id))

    async def delete_schedule_async(self, schedule_id: str) -> None:
        await self._change(schedule_id, "delete_schedule")

    def delete_schedule(self, schedule_id: str) -> None:
        """Delete a schedule: no more ticks (one already started completes); its id may be
        used again."""
        self._loop.run(self.delete_schedule_async(schedule_id))

    async def _tell_runner(self, schedule_id: str) -> None:
        """Make the runner if it does not run, and have it read the schedule (a runner that
        is starting reads every schedule anyway)."""

        async def tell() -> None:
            runner = start_runner(self.namespace, self.router.partitions.count)
            await runner.refresh.remote([schedule_id])

        await retry(tell, retry_on=UNAVAILABLE, deadline_s=RUNNER_PATIENCE_S)

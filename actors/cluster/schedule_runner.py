"""The schedule runner: fires the ticks of every schedule in the journal (``Runtime.schedule``).

One named, detached, restartable actor per runtime (``schedules``), made on demand: by the
first ``Runtime.schedule``, and by ``Runtime.start`` when the journal holds schedules, so a
runtime without schedules has no such process. All schedules share one ``TimerQueue`` (one
entry per schedule: its next tick) and one loop: no task per schedule.

Why an actor of its own rather than the durable timers (a ``TimerKind`` the timer scheduler
fires): a tick needs routing (which host runs the handler) and overlap decisions (is the last
tick's invocation done?), both of which live above the scheduler package (``actors.cluster``);
and a tick is not one timer but a recurring decision, made from the schedule's row.

A tick, exactly once: the loop records it in the journal (``journal.schedules``, one UPDATE for
the ticks of one turn) before it submits the invocation, whose id derives from (schedule id,
tick time) (``tick_invocation_id``). A runner killed between the two submits the recorded tick
when it starts again (the log did not accept it); killed after, it finds the tick recorded and
goes on after it; hosts de-duplicate the id either way. The invocation is a call: the runner
learns that it completed (overlap "skip" and "buffer_one") from the host's answer, or, for the
ticks a previous runner fired, from the journal (``await_output``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from actors.cluster.names import tick_invocation_id
from actors.sdk.errors import TerminalError
from journal.clock import now_ms
from journal.kinds import Overlap
from journal.records import Outcome
from journal.retry import Backoff, retry
from journal.schedules import Loaded, Progress, ScheduleRow
from scheduler.schedules import LATE_GRACE_MS, Action, Spec, decide, tick_key
from scheduler.timers import TimerQueue

log = logging.getLogger("raystate.schedules")

FIRE_BATCH = 2_000  # ticks decided (and recorded in one UPDATE) per turn at most
LATENESS_KEPT = 100_000  # recent ticks' lateness kept for ``info``
JOURNAL_BACKOFF = Backoff(0.2, 2.0, 1.0)


class RunnerJournal(Protocol):
    async def load_schedules(self, ids: list[str] | None = None) -> list[Loaded]: ...

    async def schedule_progress(self, steps: list[Progress]) -> list[str]: ...

    async def await_output(self, invocation_id: str) -> Outcome: ...


# submit(row, tick_ms, invocation_id, resubmit): run the tick's invocation; return once it
# completed (``resubmit``: it may have been submitted before)
Submit = Callable[[ScheduleRow, int, str, bool], Awaitable[Any]]


@dataclass(slots=True)
class Live:
    """A schedule as the runner holds it."""

    row: ScheduleRow
    spec: Spec
    overlap: Overlap
    cursor_ms: int
    next_ms: int
    running: str | None = None  # the last tick's invocation, until it completes
    buffered_ms: int | None = None


class ScheduleRunner:
    """Fires due ticks: recorded first, then submitted (no Ray in here; the actor wraps it)."""

    def __init__(
        self,
        journal: RunnerJournal,
        submit: Submit,
        clock: Callable[[], int] = now_ms,
        place: Callable[[ScheduleRow, str], str] | None = None,
    ) -> None:
        """``place``: an invocation id placed in its target's partition (none: as it is)."""
        self.journal = journal
        self.submit = submit
        self.place = place
        self.clock = clock
        self.queue: TimerQueue[str] = TimerQueue(clock)
        self.live: dict[str, Live] = {}
        self.fired = 0
        self.skipped = 0
        # (tick, ms after it the tick was submitted) of recent ticks
        self.lateness_ms: collections.deque[tuple[int, int]] = collections.deque(
            maxlen=LATENESS_KEPT
        )
        self._waiting: dict[str, asyncio.Future[Any]] = {}  # tick invocations not completed
        self._wakeup = asyncio.Event()
        self.loaded = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def refresh(self, ids: list[str] | None = None) -> None:
        """Read these schedules (None: all) from the journal again: created, paused, resumed
        or deleted meanwhile."""
        await self.loaded.wait()
        await self._load(ids)

    def info(self) -> dict[str, Any]:
        return {
            "schedules": len(self.live),
            "queued": len(self.queue),
            "fired": self.fired,
            "skipped": self.skipped,
            "running": len(self._waiting),
        }

    def lateness(self) -> list[tuple[int, int]]:
        """(tick, ms after it it was submitted) of recent ticks, oldest first."""
        return list(self.lateness_ms)

    def close(self) -> None:
        self._task.cancel()

    # -- loading ---------------------------------------------------------------------------

    async def _load(self, ids: list[str] | None) -> None:
        loaded = await retry(lambda: self.journal.load_schedules(ids), backoff=JOURNAL_BACKOFF)
        now = self.clock()
        found = {item.row.id for item in loaded}
        for gone in set(self.live if ids is None else ids) - found:  # deleted
            self.live.pop(gone, None)
            self.queue.discard(gone)
        steps: list[Progress] = []
        for item in loaded:
            live = self._take(item, now)
            if live is not None and (live.next_ms, live.buffered_ms) != (
                item.row.next_fire_at_ms,
                item.row.buffered_at_ms,
            ):  # (a new schedule's row has its next tick already)
                steps.append(
                    Progress(
                        live.row.id, live.cursor_ms, live.next_ms, None, None, live.buffered_ms
                    )
                )
        await self._record(steps)
        self._wakeup.set()

    def _take(self, item: Loaded, now: int) -> Live | None:
        """Hold a loaded schedule (None when it is paused): its next tick is the first one
        after its cursor that is not older than its catch-up window."""
        row = item.row
        self.queue.discard(row.id)
        before = self.live.pop(row.id, None)
        if row.paused:
            return None
        spec = Spec(row.cron, row.every_ms, row.timezone, row.created_at_ms)
        cursor = max(row.cursor_ms, before.cursor_ms if before else row.cursor_ms)
        live = Live(row, spec, Overlap(row.overlap), cursor, 0, None, row.buffered_at_ms)
        live.next_ms = spec.first_due(cursor, now, row.catchup_ms)
        last = row.last_invocation_id
        if before is not None and before.running is not None:  # (maybe newer than ``last``)
            live.running = before.running
        elif last is not None and not item.last_done:
            if last in self._waiting:  # fired by this runner, still running
                live.running = last
            elif item.last_accepted:  # fired by a previous runner: wait for it in the journal
                live.running = last
                self._watch(row.id, last, self._outcome_of(last))
            elif row.last_fire_at_ms is not None and (
                row.last_fire_at_ms >= now - max(row.catchup_ms, LATE_GRACE_MS)
            ):  # recorded, never submitted (a runner died in between): submit it now
                live.running = last
                self._start(live, row.last_fire_at_ms, last, now, resubmit=True)
        self.live[row.id] = live
        self.queue.add(row.id, live.next_ms, row.id)
        return live

    async def _outcome_of(self, invocation_id: str) -> Any:
        return await retry(
            lambda: self.journal.await_output(invocation_id), backoff=JOURNAL_BACKOFF
        )

    # -- firing ----------------------------------------------------------------------------

    async def _run(self) -> None:
        await self._load(None)
        self.loaded.set()
        while True:
            due = self.queue.pop_due(FIRE_BATCH)
            if due:
                try:
                    await self._tick(due)
                except Exception:  # never let the loop die; the journal is retried
                    log.exception("firing schedule ticks failed")
                continue
            nxt = self.queue.next_due_ms()
            timeout = None if nxt is None else max(nxt - self.clock(), 1) / 1000
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):  # the next tick is due
                await asyncio.wait_for(self._wakeup.wait(), timeout)

    async def _tick(self, due: list[str]) -> None:
        now = self.clock()
        steps: list[Progress] = []
        fires: list[tuple[Live, int, str]] = []
        for schedule_id in due:
            live = self.live.get(schedule_id)
            if live is None:
                continue
            tick = live.next_ms
            window = max(live.row.catchup_ms, LATE_GRACE_MS)
            if tick < now - window:  # missed (a clock jump, a runner long stalled)
                tick = live.spec.first_due(tick, now, window)
                if tick > now:
                    live.next_ms = tick
                    self.queue.add(schedule_id, tick, schedule_id)
                    continue
            action = decide(live.overlap, live.running is not None, live.buffered_ms is not None)
            invocation_id = None
            if action == Action.FIRE:
                invocation_id = self._tick_id(live.row, tick)
                fires.append((live, tick, invocation_id))
            elif action == Action.BUFFER:
                live.buffered_ms = tick
            else:
                self.skipped += 1
            live.cursor_ms = tick
            live.next_ms = live.spec.next_after(tick)
            self.queue.add(schedule_id, live.next_ms, schedule_id)
            steps.append(
                Progress(
                    schedule_id,
                    tick,
                    live.next_ms,
                    tick if invocation_id else None,
                    invocation_id,
                    live.buffered_ms,
                )
            )
        applied = set(await self._record(steps))
        now = self.clock()
        for live, tick, invocation_id in fires:
            current = self.live.get(live.row.id)  # (a refresh meanwhile holds a new one)
            if live.row.id in applied and current is not None:  # not paused or deleted
                self._start(current, tick, invocation_id, now)

    async def _record(self, steps: list[Progress]) -> list[str]:
        if not steps:
            return []
        return await retry(
            lambda: self.journal.schedule_progress(steps),
            backoff=JOURNAL_BACKOFF,
            on_retry=lambda _: log.exception("cannot record schedule ticks; trying again"),
        )

    @staticmethod
    def _invocation_id(row: ScheduleRow, tick: int) -> str:
        return tick_invocation_id(row.service, row.handler, row.key, tick_key(row.id, tick))

    def _tick_id(self, row: ScheduleRow, tick: int) -> str:
        inv = self._invocation_id(row, tick)
        return inv if self.place is None else self.place(row, inv)

    def _start(
        self, live: Live, tick: int, invocation_id: str, now: int, *, resubmit: bool = False
    ) -> None:
        self.fired += 1
        self.lateness_ms.append((tick, now - tick))
        live.running = invocation_id
        row, tries = live.row, 0

        def submit() -> Awaitable[Any]:  # sent again after a failure that may pass
            nonlocal tries
            tries += 1
            return self.submit(row, tick, invocation_id, resubmit or tries > 1)

        def again(e: BaseException) -> None:
            log.warning("tick %s of schedule %s: %r; sending it again", invocation_id, row.id, e)

        done = retry(submit, when=_may_pass, backoff=SUBMIT_BACKOFF, on_retry=again)
        self._watch(live.row.id, invocation_id, done)

    def _watch(self, schedule_id: str, invocation_id: str, done: Awaitable[Any]) -> None:
        """Note when a tick's invocation completes (a buffered tick may start then)."""

        async def wait() -> None:
            try:
                await done
            except Exception:
                log.exception(
                    "the invocation %s of schedule %s failed to run", invocation_id, schedule_id
                )
            finally:
                self._waiting.pop(invocation_id, None)
            await self._completed(schedule_id, invocation_id)

        self._waiting[invocation_id] = asyncio.ensure_future(wait())

    async def _completed(self, schedule_id: str, invocation_id: str) -> None:
        live = self.live.get(schedule_id)
        if live is None or live.running != invocation_id:
            return
        live.running = None
        tick = live.buffered_ms
        if tick is None:
            return
        live.buffered_ms = None
        next_id = self._tick_id(live.row, tick)
        live.running = next_id  # (nothing else fires meanwhile: this one holds the slot)
        applied = await self._record(
            [Progress(schedule_id, live.cursor_ms, live.next_ms, tick, next_id, None)]
        )
        if schedule_id in applied and self.live.get(schedule_id) is live:
            self._start(live, tick, next_id, self.clock())
        elif live.running == next_id:
            live.running = None


SUBMIT_BACKOFF = Backoff(0.1, 2, 5.0)  # a tick whose submission failed is sent again


def _may_pass(e: BaseException) -> bool:
    """A tick's submission failed in a way that may pass (the tick is recorded: it must run);
    a ``TerminalError`` (an unknown service, a bad input) is the tick's outcome."""
    return not isinstance(e, TerminalError)

"""TimerScheduler: fires durable timers (no Ray in here; the actor wraps it).

Timers are written to the journal by the hosts before anyone waits on them; hosts hand them
here after the commit, and at start the scheduler reloads every unfired timer from the journal,
so a timer survives any crash. When one is due, the scheduler first makes its firing (and, for a
sleep, the entry's completion) durable, then notifies the host named in the timer; a lost
notification is harmless, since a host reads completions from the journal when it replays.
Firing is at-least-once towards hosts; hosts de-duplicate by (invocation, index).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Protocol

from journal import metrics
from journal.clock import now_ms
from journal.errors import StaleHost
from journal.kinds import InvocationStatus, TimerKind
from journal.records import Batch, Completion, Record, StatusChange, Timer, TimerFired
from journal.retry import Backoff, retry
from scheduler.timers import TimerQueue

log = logging.getLogger("raystate.scheduler")

FIRE_BATCH = 2_000
RECENTLY_FIRED = 100_000  # fired timer ids remembered, so a timer handed over again is ignored
LOAD_BACKOFF = Backoff(1.0, 1.0, 1.0)  # a fixed second between tries to load the timers
COMMIT_BACKOFF = Backoff(0.5, 1.0, 0.5)  # and between tries to commit fired ones
Wake = tuple[str, int, Completion | None]


class TimerJournal(Protocol):
    async def commit(self, batch: Batch) -> None: ...

    async def writer_epoch(self) -> int | None: ...

    async def pending_timers(self, host: str | None = None) -> list[Timer]: ...

    async def fired_open_timers(self) -> list[Timer]: ...


class TimerScheduler:
    """Fires due timers: durable first, then a notification to each timer's host."""

    def __init__(self, journal: TimerJournal, notify: Callable[[str, list[Wake]], None]) -> None:
        self.journal = journal
        self.notify = notify
        self.queue: TimerQueue[Timer] = TimerQueue()
        self._wakeup = asyncio.Event()
        self._batch_ids = itertools.count()
        self._prefix = "sched-" + uuid.uuid4().hex[:8]
        self.fired = 0
        self._recently_fired: dict[str, None] = {}  # insertion-ordered, bounded
        self.loaded = asyncio.Event()  # set once the journal's pending timers are queued
        self.epoch: int | None = None  # of the journal writer loaded from (None: unfenced)
        # called when a newer writer refuses a firing (``StaleHost``); firing stops either way
        self.on_stale: Callable[[StaleHost], None] | None = None
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def add(self, timers: list[Timer]) -> None:
        """Queue timers; one already queued, or fired by this scheduler, is ignored (a host
        that starts hands over every unfired timer it finds, racing with their firing)."""
        for t in timers:
            if t.timer_id not in self._recently_fired:
                self.queue.add(t.timer_id, t.fire_at_ms, t)
        self._wakeup.set()

    def info(self) -> dict[str, int]:
        return {"pending": len(self.queue), "fired": self.fired}

    def close(self) -> None:
        self._task.cancel()

    async def _run(self) -> None:
        fired = await retry(
            self._load,
            backoff=LOAD_BACKOFF,
            on_retry=lambda _: log.exception("cannot load timers from the journal; trying again"),
        )
        self.loaded.set()
        self._renotify(fired)
        while True:
            due = self.queue.pop_due(FIRE_BATCH)
            if due:
                await self._fire(due)
                continue
            nxt = self.queue.next_due_ms()
            timeout = None if nxt is None else max(nxt - now_ms(), 1) / 1000
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):  # the next timer is due
                await asyncio.wait_for(self._wakeup.wait(), timeout)

    async def _load(self) -> list[Timer]:
        """Queue the journal's pending timers; return those that fired but are still open.
        First the writer's epoch: a newer writer refuses the firings of a scheduler that loaded
        from an older one (its node lost while it ran on), as it does a host's batches."""
        self.epoch = await self.journal.writer_epoch()
        await self.add(await self.journal.pending_timers())
        return await self.journal.fired_open_timers()

    def _renotify(self, timers: list[Timer]) -> None:
        """Wake the hosts of timers that fired before this scheduler started (a previous one
        may have died between the durable firing and the message)."""
        wakes: dict[str, list[Wake]] = defaultdict(list)
        for t in timers:
            completion = Completion(t.invocation_id, t.idx) if t.kind == TimerKind.SLEEP else None
            wakes[t.host].append((t.invocation_id, t.idx, completion))
        for host, items in wakes.items():
            self.notify(host, items)

    async def _fire(self, timers: list[Timer]) -> None:
        at = now_ms()
        records: list[Record] = []
        wakes: dict[str, list[Wake]] = defaultdict(list)
        for t in timers:
            metrics.timer_lateness((at - t.fire_at_ms) / 1000)
            records.append(TimerFired(t.timer_id, t.invocation_id, at))
            completion = None
            if t.kind == TimerKind.SLEEP:
                completion = Completion(t.invocation_id, t.idx, None, None, None, at)
                records.append(completion)
            elif t.kind == TimerKind.START:
                records.append(StatusChange(t.invocation_id, InvocationStatus.PENDING, 0, None, at))
            wakes[t.host].append((t.invocation_id, t.idx, completion))
        batch = Batch(f"{self._prefix}:{next(self._batch_ids)}", records, epoch=self.epoch)

        def resend(_: BaseException) -> None:
            log.exception("cannot commit fired timers; trying again")
            batch.resent = True

        try:
            await retry(
                lambda: self.journal.commit(batch),
                when=lambda e: not isinstance(e, StaleHost),
                backoff=COMMIT_BACKOFF,
                on_retry=resend,
            )
        except StaleHost as stale:
            if self.on_stale is not None:
                self.on_stale(stale)
            raise
        self.fired += len(timers)
        for t in timers:
            self._recently_fired[t.timer_id] = None
        while len(self._recently_fired) > RECENTLY_FIRED:
            del self._recently_fired[next(iter(self._recently_fired))]
        for host, items in wakes.items():
            self.notify(host, items)

"""Recovery: how a host takes over the accepted, unfinished invocations of its keys when it
starts (after a crash, a restart or an idle exit), and how a recovered invocation is rebuilt
from the journal. A part of ``ObjectHost`` (a mixin over ``HostBase``)."""

from __future__ import annotations

import asyncio
import logging

from actors.engine.invocation import Invocation
from actors.host.base import HostBase
from actors.host.slots import Parked
from journal.kinds import EntryType, InvocationStatus, TimerKind
from journal.records import PendingInvocation
from scheduler.service import TimerScheduler

log = logging.getLogger("raystate.host")


class Recovery(HostBase):
    """Start and recovery of ``ObjectHost``."""

    async def start(self) -> None:
        """Take over every accepted, unfinished invocation of this host's keys (idempotent).

        Its unfired timers are handed to the scheduler again: the host that committed one
        may have died before handing it over, and a scheduler loads timers only when it starts.
        Without a scheduler port (unit tests, embedded use) the host fires its own timers with
        an in-process ``TimerScheduler`` over the same journal. A failed start is tried again
        by the next caller."""
        if self._ready is None or (self._ready.done() and self._ready.exception() is not None):
            self._ready = asyncio.get_running_loop().create_future()
            if self.scheduler is None:
                self._local_timers = TimerScheduler(
                    self.journal, lambda _host, items: self._spawn(self.wake(items))
                )
                self.scheduler = self._local_timers
            try:
                if self.limited:  # free what this host's previous process held
                    await self.admission.hello()
                # first: a writer that starts after this read refuses what this host sends
                self.flusher.epoch = await self.journal.writer_epoch()
                pending = await self.journal.pending(
                    [self.definition.name], self.partition, self.dedicated_key
                )
                timers = await self.journal.pending_timers(self._name) if pending else []
            except BaseException as e:
                self._ready.set_exception(e)
                self._ready.exception()  # mark retrieved; callers re-raise via await
                raise
            for p in pending:
                self._take_over(p)
            if timers:
                self._spawn(self.scheduler.add(timers))
            self._ready.set_result(None)
            if pending:
                log.info("%s: took over %d invocations", self._name, len(pending))
        await self._ready

    def _take_over(self, p: PendingInvocation) -> None:
        """Resume a recovered invocation, or park it if it waits for something."""
        key = p.accept.key
        if p.waiting_for == TimerKind.START:
            self._parked[p.accept.id] = Parked(p.accept.id, key, TimerKind.START)
            return
        last = p.entries[-1] if p.entries else None
        # Park only what waits for a timer: a sleep (its timer wakes it) or a retry back-off.
        # Anything else replays: a call is re-issued (same id), a promise watched again, and
        # an awakeable may be followed by code that never ran (handing out its id).
        waiting = p.waiting_for == TimerKind.RETRY or (
            last is not None
            and not last.completed
            and last.idx not in p.completions
            and last.entry_type == EntryType.SLEEP
        )
        spec = self.definition.handlers.get(p.accept.handler)
        if waiting and spec is not None:
            self._park_suspended(p.accept.id, key, spec.kind == "exclusive")
            return
        inv = self._invocation_of(p)
        self._active[inv.id] = inv
        self._schedule(inv)

    def _invocation_of(self, p: PendingInvocation) -> Invocation:
        spec = self.definition.handlers.get(p.accept.handler)
        inv = Invocation(
            p.accept,
            spec,  # type: ignore[arg-type]
            p.entries,
            p.retry_count,
            accept_durable=True,
            completions=dict(p.completions),
        )
        inv.durable.set_result(None)
        return inv

    def _park_suspended(self, inv_id: str, key: str | None, exclusive: bool) -> None:
        self._parked[inv_id] = Parked(inv_id, key, InvocationStatus.SUSPENDED)
        if key is not None and exclusive:
            self._slot(key).inbox.append(Parked(inv_id, key, InvocationStatus.SUSPENDED))

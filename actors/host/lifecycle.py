"""The end of invocations and keys: cancel, kill (passed on to callees), idle eviction."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque

from actors.engine.invocation import (
    CANCEL_INDEX,
    CANCELLED,
    CANCELLED_CODE,
    KILLED,
    Invocation,
)
from actors.host.base import PASS_ON_BACKOFF, HostBase
from actors.host.slots import Parked
from actors.sdk.errors import TerminalError
from journal.clock import now_ms
from journal.errors import StatusCode
from journal.kinds import EntryType
from journal.records import Completion, Outcome, Output
from journal.retry import retry

log = logging.getLogger("raystate.host")


class Lifecycle(HostBase):
    """Cancel and kill; which keys and hosts are idle."""

    async def cancel(self, inv_id: str, kill: bool = False) -> str:
        """Cancel (``TerminalError("cancelled")`` at the handler's next await, so it can
        compensate; passed on to the callee it waits for) or kill (stop now, free its key).
        Returns "cancelled", "killed", "completed" (too late) or "unknown"."""
        await self.start()
        inv = self._active.get(inv_id)
        parked = self._parked.get(inv_id)
        if inv is None and parked is None:
            known = inv_id in self._recent or await self.journal.outcome(inv_id) is not None
            return "completed" if known else "unknown"
        if kill:
            await self._kill(inv_id, inv, parked)
            return "killed"
        signal = Completion(inv_id, CANCEL_INDEX, None, CANCELLED, CANCELLED_CODE, now_ms())
        await self.flusher.submit([signal])
        inv = self._active.get(inv_id)
        if inv is not None:
            inv.completions.setdefault(CANCEL_INDEX, signal)
            self._interrupt(inv, kill=False)
            if not inv.entries:  # waiting for a slot to start: it ends without one
                self.admission.give_up(inv_id)
        elif inv_id in self._parked:  # replay it: the replay meets the request at its wait
            await self.wake([(inv_id, CANCEL_INDEX, signal)])
        return "cancelled"

    def _interrupt(self, inv: Invocation, kill: bool) -> None:
        """Wake ``inv`` from the wait it is in, and pass the request on to its callee."""
        idx = inv.awaiting
        if idx is None:
            return
        entry = inv.entries[idx] if 0 <= idx < len(inv.entries) else None
        if (
            kill
            and entry is not None
            and entry.entry_type == EntryType.CALL
            and entry.result is not None
            and idx not in inv.completions
        ):
            self.pass_on(json.loads(entry.result), kill)  # (a cancel passes on in the engine)
        waiter = inv.waiters.pop(idx, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def pass_on(self, callee: str, kill: bool) -> None:
        if self.outbox is not None:
            self._spawn(self._pass_on(callee, kill))

    async def _pass_on(self, callee: str, kill: bool) -> None:
        """Unknown (404) while this host is still delivering the call: its acceptance is not
        durable yet, so try again (backing off) until it is, or the delivery is over."""
        assert self.outbox is not None
        outbox = self.outbox

        def still_delivering(e: BaseException) -> bool:
            return (
                isinstance(e, TerminalError)
                and e.status_code == StatusCode.NOT_FOUND
                and callee in self._delivering
            )

        try:
            await retry(
                lambda: outbox.cancel(callee, kill), when=still_delivering, backoff=PASS_ON_BACKOFF
            )
        except Exception:
            # unknown (never delivered) or gone: the caller moves on anyway
            log.warning(
                "could not %s callee %s", "kill" if kill else "cancel", callee, exc_info=True
            )

    async def _kill(self, inv_id: str, inv: Invocation | None, parked: Parked | None) -> None:
        out = Outcome(False, None, KILLED, CANCELLED_CODE)
        record = Output(inv_id, False, None, KILLED, CANCELLED_CODE, now_ms())
        if inv is not None:
            inv.killed = True
            self._interrupt(inv, kill=True)
            key = inv.accept.key
            slot = self._slots.get(key) if key is not None else None
            if slot is not None and inv in slot.inbox and slot.inbox[0] is not inv:
                slot.inbox.remove(inv)  # queued behind others: it never ran
                await self.submit(inv, [record])
                self._finish(inv, out)
                return
            if inv.task is not None and not inv.task.done():
                inv.task.cancel()  # ``execute`` commits what it recorded, then "killed"
            # else it is about to start, and ``execute`` ends it at once
            await asyncio.shield(self._outcome(inv_id))
            return
        assert parked is not None
        self._parked.pop(inv_id, None)
        await self.flusher.submit([record])
        if parked.key is not None:
            slot = self._slot(parked.key)
            was_head = bool(slot.inbox) and slot.inbox[0].id == inv_id
            slot.inbox = deque(i for i in slot.inbox if i.id != inv_id)
            if was_head:
                self._kick(parked.key, slot)
        fut = self._outcomes.pop(inv_id, None)
        if fut is not None and not fut.done():
            fut.set_result(out)
        self._recent[inv_id] = out

    def evict_idle(self, idle_seconds: float) -> int:
        """Drop keys idle longer than ``idle_seconds`` from memory; return how many."""
        cutoff = time.monotonic() - idle_seconds
        stale = [k for k, s in self._slots.items() if s.idle and s.last_used < cutoff]
        for k in stale:
            del self._slots[k]
        return len(stale)

    def is_idle(self, idle_seconds: float) -> bool:
        return (
            not self._active
            and not self._parked
            and not self._tasks
            and time.monotonic() - self.last_activity > idle_seconds
        )

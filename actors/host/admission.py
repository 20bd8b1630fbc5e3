"""A host's side of the concurrency and rate limits: ask the limiter before an invocation of a
limited handler runs, give the slot back when it finishes or waits.

The limiter (``scheduler.admission``, in the scheduler actor) is one per runtime, so a limit
holds across hosts and nodes. A host tells it what it holds every ``SYNC_INTERVAL_S`` while it
holds anything (so a restarted limiter learns it again), and says hello when it starts (so what
its previous process held is freed at once). An invocation that has to wait is made durable
and shows in ``sys_waiting`` with the limit it waits for; one that waits for a timer, an
awakeable, a call or a promise gives its slot back meanwhile (``release_while``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from journal.clock import now_ms
from journal.records import Record, Waiting
from scheduler.admission import SYNC_INTERVAL_S
from scheduler.limiter import LimitSpec

if TYPE_CHECKING:
    from actors.engine.invocation import Invocation
    from actors.host.ports import LimiterPort

log = logging.getLogger("raystate.host")


class Admission:
    """Slots this host holds, by invocation id."""

    def __init__(
        self,
        host: str,
        limiter: LimiterPort | None,
        record: Callable[[Invocation, list[Record]], Awaitable[None]],
    ) -> None:
        self.host = host
        self.incarnation = secrets.token_hex(8)
        self._limiter = limiter
        self._record = record
        self._held: dict[str, tuple[int, tuple[LimitSpec, ...]]] = {}
        self._releasing: dict[str, asyncio.Task[None]] = {}
        self._entering: set[str] = set()
        self._sync: asyncio.Task[None] | None = None

    async def hello(self) -> None:
        if self._limiter is not None:
            await self._limiter.limits_hello(self.host, self.incarnation)

    def holds(self, invocation_id: str) -> bool:
        return invocation_id in self._held

    async def enter(self, inv: Invocation) -> None:
        """Wait until ``inv`` may run under its limits (at once when there is room). If it
        has to wait, it is made durable first, with the reason (``sys_waiting``)."""
        limits: tuple[LimitSpec, ...] = inv.spec.limits
        if not limits or self._limiter is None or inv.id in self._held:
            return
        releasing = self._releasing.get(inv.id)
        if releasing is not None:  # its slot must be free before it asks again
            await asyncio.shield(releasing)
        order = inv.accept.host_order
        args = (self.host, self.incarnation, inv.id, order, limits)
        self._entering.add(inv.id)
        try:
            why = await self._limiter.admit(*args, False)
            if why is not None:
                await self._record(inv, [Waiting(inv.id, why, now_ms())])
                await self._limiter.admit(*args, True)
                self._record(inv, [Waiting(inv.id, None, now_ms())])
        except asyncio.CancelledError:  # killed while it waited: give its place up
            task = asyncio.ensure_future(self._release(inv.id))
            self._releasing[inv.id] = task
            task.add_done_callback(lambda _: self._releasing.pop(inv.id, None))
            raise
        finally:
            self._entering.discard(inv.id)
        self._held[inv.id] = (order, limits)
        if self._sync is None or self._sync.done():
            self._sync = asyncio.ensure_future(self._sync_while_holding())

    def leave(self, inv: Invocation) -> None:
        """``inv`` runs no more (finished, suspended, killed) or waits: free its slots."""
        if self._held.pop(inv.id, None) is None or self._limiter is None:
            return
        task = asyncio.ensure_future(self._release(inv.id))
        self._releasing[inv.id] = task
        task.add_done_callback(lambda _: self._releasing.pop(inv.id, None))

    async def release_while(self, inv: Invocation, wait: Awaitable[Any]) -> Any:
        """Await ``wait`` without holding ``inv``'s slots; hold them again afterwards."""
        if inv.id not in self._held:
            return await wait
        self.leave(inv)
        result = await wait
        await self.enter(inv)
        return result

    async def _release(self, invocation_id: str) -> None:
        assert self._limiter is not None
        try:
            await self._limiter.release(self.host, self.incarnation, invocation_id)
        except Exception:  # the next sync tells the limiter what this host holds
            log.warning("could not release the slot of %s; the next sync will", invocation_id)

    async def _sync_while_holding(self) -> None:
        assert self._limiter is not None
        while self._held or self._releasing or self._entering:
            await asyncio.sleep(SYNC_INTERVAL_S)
            held = [(i, order, limits) for i, (order, limits) in self._held.items()]
            with contextlib.suppress(Exception):  # down: the next round tells it
                await self._limiter.limits_sync(
                    self.host, self.incarnation, held, list(self._entering)
                )

    def close(self) -> None:
        if self._sync is not None:
            self._sync.cancel()

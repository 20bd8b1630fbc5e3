"""A host's side of the concurrency and rate limits: ask the limiter before an invocation of a
limited handler runs, give the slot back when it finishes or waits.

The limiter (``scheduler.admission``, in the scheduler actor) is one per runtime, so a limit
holds across hosts and nodes. A host tells it what it holds every ``SYNC_INTERVAL_S`` while it
holds anything (so a restarted limiter learns it again), and says hello when it starts (so what
its previous process held is freed at once). An invocation that has to wait is made durable
and shows in ``sys_waiting`` with the limit it waits for; one that waits for a timer, an
awakeable, a call or a promise gives its slot back meanwhile. The asks and releases of one
turn of the host's event loop travel in one call.
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

# a release waits this long for an ask to travel with (under load one always comes), so most
# exchanges carry both; a slot freed this much later is all a waiting invocation loses
FREE_DELAY_S = 0.002


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
        self._releasing: dict[str, asyncio.Future[None]] = {}
        self._entering: set[str] = set()
        self._waits: dict[str, asyncio.Future[Any]] = {}  # waiting for ``admit``, by id
        self._giving_up: set[str] = set()  # cancelled while they ask (``give_up``)
        # the asks and releases of one turn of the event loop go in one call each
        self._asks: list[tuple[tuple[str, int, tuple[LimitSpec, ...]], asyncio.Future[Any]]] = []
        self._frees: list[tuple[str, asyncio.Future[None]]] = []
        self._calls: set[asyncio.Future[Any]] = set()
        self._exchange_due = False
        self._frees_due: asyncio.TimerHandle | None = None
        self._sync: asyncio.Task[None] | None = None

    async def hello(self) -> None:
        if self._limiter is not None:
            await self._limiter.limits_hello(self.host, self.incarnation)

    def holds(self, invocation_id: str) -> bool:
        return invocation_id in self._held

    async def enter(self, inv: Invocation) -> bool:
        """Wait until ``inv`` may run under its limits (at once when there is room). If it
        has to wait, it is made durable first, with the reason (``sys_waiting``). False: it
        stopped waiting without a slot (``give_up``)."""
        limits: tuple[LimitSpec, ...] = inv.spec.limits
        if not limits or self._limiter is None or inv.id in self._held:
            return True
        releasing = self._releasing.get(inv.id)
        if releasing is not None:  # its slot must be free before it asks again
            await asyncio.shield(releasing)
        order = inv.accept.host_order
        args = (self.host, self.incarnation, inv.id, order, limits)
        self._entering.add(inv.id)
        try:
            why = await self._ask((inv.id, order, limits))
            if why is not None:
                await self._record(inv, [Waiting(inv.id, why, now_ms())])
                self._waits[inv.id] = wait = asyncio.ensure_future(self._limiter.admit(*args, True))
                if inv.id in self._giving_up:  # cancelled while it asked: wait for nothing
                    wait.cancel()
                try:
                    await wait
                except asyncio.CancelledError:
                    me = asyncio.current_task()
                    if not wait.cancelled() or (me is not None and me.cancelling()):
                        raise  # killed (its task was cancelled): the handler below
                    # ``give_up``: it runs without a slot (ends at once, it was cancelled)
                    self._free(inv.id)
                    self._record(inv, [Waiting(inv.id, None, now_ms())])
                    return False
                finally:
                    self._waits.pop(inv.id, None)
                self._record(inv, [Waiting(inv.id, None, now_ms())])
        except asyncio.CancelledError:  # killed while it waited: give its place up
            self._free(inv.id)
            raise
        finally:
            self._entering.discard(inv.id)
            self._giving_up.discard(inv.id)
        self._held[inv.id] = (order, limits)
        if self._sync is None or self._sync.done():
            self._sync = asyncio.ensure_future(self._sync_while_holding())
        return True

    def give_up(self, invocation_id: str) -> None:
        """``invocation_id``, waiting for its first slot, was cancelled: stop waiting, so that
        it ends now (its cancellation ends it before any of its code runs, which needs no
        slot) rather than once a slot is free for it (``enter`` returns False)."""
        if invocation_id in self._entering:  # still asking: ``enter`` sees it before it waits
            self._giving_up.add(invocation_id)
        wait = self._waits.get(invocation_id)
        if wait is not None and not wait.done():
            wait.cancel()

    def leave(self, inv: Invocation) -> None:
        """``inv`` runs no more (finished, suspended, killed) or waits: free its slots."""
        if self._held.pop(inv.id, None) is not None:
            self._free(inv.id)

    def _free(self, invocation_id: str) -> None:
        if self._limiter is None:
            return
        fut = asyncio.get_running_loop().create_future()
        self._frees.append((invocation_id, fut))
        self._releasing[invocation_id] = fut
        fut.add_done_callback(lambda _: self._releasing.pop(invocation_id, None))
        if self._frees_due is None and not self._exchange_due:  # else they go with the asks
            self._frees_due = asyncio.get_running_loop().call_later(FREE_DELAY_S, self._soon)

    def _ask(self, ask: tuple[str, int, tuple[LimitSpec, ...]]) -> asyncio.Future[Any]:
        fut = asyncio.get_running_loop().create_future()
        self._asks.append((ask, fut))
        self._soon()
        return fut

    def _soon(self) -> None:
        if not self._exchange_due:
            self._exchange_due = True
            asyncio.get_running_loop().call_soon(self._exchange)

    def _exchange(self) -> None:
        """One call for the releases and asks of this turn of the loop (releases first, so
        their room serves the asks)."""
        assert self._limiter is not None
        self._exchange_due = False
        if self._frees_due is not None:
            self._frees_due.cancel()
            self._frees_due = None
        frees, self._frees = self._frees, []
        asks, self._asks = self._asks, []
        exchange = self._limiter.exchange(
            self.host, self.incarnation, [i for i, _ in frees], [a for a, _ in asks]
        )
        self._calls.add(call := asyncio.ensure_future(exchange))

        def answered(done: asyncio.Future[list[str | None]]) -> None:
            self._calls.discard(done)
            error = None if done.cancelled() else done.exception()
            if error is not None and frees:  # the next sync tells the limiter
                log.warning("could not release %d slots; the next sync will", len(frees))
            for i, (_, fut) in enumerate([*frees, *asks]):
                if fut.done():
                    continue
                if done.cancelled():
                    fut.cancel()
                elif error is not None:
                    fut.set_exception(error)
                else:
                    fut.set_result(None if i < len(frees) else done.result()[i - len(frees)])
            for _, fut in frees:
                if not fut.cancelled():
                    fut.exception()  # retrieved: logged above

        call.add_done_callback(answered)

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

"""The limiter's service: hosts ask it whether an invocation of a limited handler may start.

One per runtime (mixed into the scheduler actor), so a limit holds across every host and node.
It keeps no state of its own on disk: what holds slots is known by the hosts, which tell it
again every ``SYNC_INTERVAL_S`` (so a limiter that Ray restarted admits nobody for
``RESTART_GRACE_S``, until the hosts have told it what they hold); a rate limit's admissions
are journaled (``records.Admitted``) before the host hears of them, and a limiter reads the
last window of them back before it admits under that limit again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from collections.abc import Coroutine
from typing import Any, Protocol

from journal import metrics
from journal.clock import now_ms
from journal.records import Admitted, Batch
from journal.retry import Backoff, retry
from scheduler.limiter import Limiter, LimitSpec, Owner, Request

log = logging.getLogger("raystate.limiter")

SYNC_INTERVAL_S = 1.0  # hosts holding slots say which, this often
RESTART_GRACE_S = 3 * SYNC_INTERVAL_S
COMMIT_BACKOFF = Backoff(0.1, 2, 1.0)
RESTARTING = "the limiter restarted: it waits until the hosts have told it their slots"


class AdmissionJournal(Protocol):
    async def commit(self, batch: Batch) -> None: ...

    async def admissions(self, limit: str, since_ms: int) -> list[int]: ...


class StaleHost(Exception):
    """The asking host process was replaced by a newer one (it is a zombie): not admitted."""


Held = list[tuple[str, int, tuple[LimitSpec, ...]]]  # (invocation id, order, its limits)
Asks = Held


class AdmissionService:
    """Admits invocations under their limits for the hosts (``exchange``, ``admit``,
    ``limits_sync``, ``limits_hello``)."""

    def __init__(self, journal: AdmissionJournal, restarted: bool = False) -> None:
        self.limiter = Limiter()
        self._journal = journal
        self._granted: dict[str, asyncio.Future[None]] = {}  # waiting -> resolved on admission
        self._seeded: dict[str, asyncio.Future[None]] = {}  # rate limit -> its window read
        self._grace_until = now_ms() + int(RESTART_GRACE_S * 1000) if restarted else 0
        self._pump_handle: asyncio.TimerHandle | None = None
        self._pump_due: int | None = None
        self._admit_ids = itertools.count()
        self._admit_prefix = f"admit:{uuid.uuid4().hex}"
        self._tasks: set[asyncio.Task[None]] = set()
        self._reporting: asyncio.Task[None] | None = None

    async def admit(
        self,
        host: str,
        incarnation: str,
        invocation_id: str,
        order: int,
        limits: tuple[LimitSpec, ...],
        wait: bool,
    ) -> str | None:
        """None once admitted; with ``wait`` False, the reason it has to wait instead (it
        keeps its place: ask again with ``wait`` to wait for it).

        Raises:
            StaleHost: a newer process of ``host`` has spoken since.
        """
        await self._seed(limits)
        req = Request(invocation_id, Owner(host, incarnation), order, limits)
        if not self.limiter.request(req):
            raise StaleHost(f"{host} was restarted")
        if self.limiter.is_held(invocation_id) and invocation_id not in self._granted:
            return None
        granted = self._granted.get(invocation_id)
        if granted is None:
            granted = self._granted[invocation_id] = asyncio.get_running_loop().create_future()
        self._pump()
        if granted.done():
            return None
        if not wait and self.limiter.is_waiting(invocation_id):
            return self.limiter.waiting_for(req)
        await asyncio.shield(granted)
        return None

    async def exchange(
        self, host: str, incarnation: str, frees: list[str], asks: Asks
    ) -> list[str | None]:
        """``release`` and ``admit`` without waiting for several invocations at once (a host
        sends those of one turn of its event loop together): for each ask, None if admitted,
        else why it waits.

        Raises:
            StaleHost: a newer process of ``host`` has spoken since.
        """
        owner = Owner(host, incarnation)
        if not self.limiter.current(owner):
            raise StaleHost(f"{host} was restarted")
        for invocation_id in frees:
            self._release(owner, invocation_id)
        answers: list[str | None] = [None] * len(asks)
        slow: list[tuple[int, Request]] = []
        grace = now_ms() < self._grace_until  # restarted: the hosts have not told all yet
        for i, (invocation_id, order, limits) in enumerate(asks):
            req = Request(invocation_id, owner, order, limits)
            if grace or not self.limiter.admit_now(req):
                slow.append((i, req))
        for _, req in slow:
            await self._seed(req.limits)
            self.limiter.request(req)
            if not self.limiter.is_held(req.invocation_id) or req.invocation_id in self._granted:
                self._granted.setdefault(
                    req.invocation_id, asyncio.get_running_loop().create_future()
                )
        if frees or slow:
            self._pump()
        journaling = []
        for i, req in slow:
            granted = self._granted.get(req.invocation_id)
            if granted is not None and self.limiter.is_waiting(req.invocation_id):
                answers[i] = RESTARTING if grace else self.limiter.waiting_for(req)
            elif granted is not None and not granted.done():  # being journaled (a rate)
                journaling.append(asyncio.shield(granted))
        if journaling:
            await asyncio.gather(*journaling)
        return answers

    def _release(self, owner: Owner, invocation_id: str) -> None:
        if self.limiter.owner_of(invocation_id) == owner:
            self.limiter.release(invocation_id)
            self._drop(invocation_id)

    def limits_sync(
        self, host: str, incarnation: str, held: Held, entering: list[str] | None = None
    ) -> None:
        """What a host holds now, and what it is asking for (every ``SYNC_INTERVAL_S`` while
        it holds anything)."""
        self.limiter.sync(Owner(host, incarnation), held, entering or ())
        self._forget_dropped()
        self._pump()

    def limits_hello(self, host: str, incarnation: str) -> None:
        """A host started: its earlier process's slots and places in line are freed."""
        self.limiter.hello(Owner(host, incarnation))
        self._forget_dropped()
        self._pump()

    def limits_info(self) -> dict[str, int]:
        return self.limiter.stats()

    # -- inside -------------------------------------------------------------------------------

    async def _seed(self, limits: tuple[LimitSpec, ...]) -> None:
        for spec in limits:
            if spec.rate is None:
                continue
            seeded = self._seeded.get(spec.name)
            if seeded is None:
                seeded = self._seeded[spec.name] = asyncio.ensure_future(self._read_window(spec))
            if not seeded.done():
                await asyncio.shield(seeded)

    async def _read_window(self, spec: LimitSpec) -> None:
        since = now_ms() - spec.per_ms - 1
        times = await retry(
            lambda: self._journal.admissions(spec.name, since),
            backoff=COMMIT_BACKOFF,
            on_retry=lambda _: log.warning("cannot read %s's admissions; trying again", spec.name),
        )
        self.limiter.seed(spec, times)

    def _pump(self) -> None:
        if self._reporting is None:
            self._reporting = asyncio.ensure_future(self._report())
        now = now_ms()
        if now < self._grace_until:
            self._pump_at(self._grace_until)
            return
        admitted = self.limiter.pump()
        rated = [r for r in admitted if any(s.rate is not None for s in r.limits)]
        for req in admitted:
            if not any(s.rate is not None for s in req.limits):
                self._grant(req.invocation_id)
        if rated:
            self._spawn(self._journal_admissions(rated, now))
        nxt = self.limiter.next_room_ms()
        if nxt is not None:
            self._pump_at(nxt)

    async def _report(self) -> None:
        """Each limit's held slots and waiting invocations as Ray metrics, every second."""
        while True:
            for name, (held, waiting) in self.limiter.by_limit().items():
                metrics.limit_slots(name, held, waiting)
            await asyncio.sleep(SYNC_INTERVAL_S)

    def _pump_at(self, at_ms: int) -> None:
        if self._pump_due is not None and self._pump_due <= at_ms:
            return
        if self._pump_handle is not None:
            self._pump_handle.cancel()
        self._pump_due = at_ms

        def fire() -> None:
            self._pump_due = self._pump_handle = None
            self._pump()

        delay = max(at_ms - now_ms(), 0) / 1000
        self._pump_handle = asyncio.get_running_loop().call_later(delay, fire)

    async def _journal_admissions(self, admitted: list[Request], at_ms: int) -> None:
        """Make rate admissions durable, then tell their hosts (a restarted limiter counts
        them in its window)."""
        records = [
            Admitted(r.invocation_id, s.name, at_ms)
            for r in admitted
            for s in r.limits
            if s.rate is not None
        ]
        batch = Batch(f"{self._admit_prefix}:{next(self._admit_ids)}", list(records))

        def resent(_: BaseException) -> None:
            batch.resent = True
            log.warning("cannot journal %d admissions; trying again", len(records))

        await retry(lambda: self._journal.commit(batch), backoff=COMMIT_BACKOFF, on_retry=resent)
        for r in admitted:
            self._grant(r.invocation_id)

    def _grant(self, invocation_id: str) -> None:
        granted = self._granted.pop(invocation_id, None)
        if granted is not None and not granted.done():
            granted.set_result(None)

    def _drop(self, invocation_id: str) -> None:
        """It waits no more without being admitted: whoever waits for it is told off."""
        granted = self._granted.pop(invocation_id, None)
        if granted is not None and not granted.done():
            granted.set_exception(StaleHost(f"{invocation_id} no longer waits"))
            granted.exception()  # retrieved: a caller that is gone must not log it

    def _forget_dropped(self) -> None:
        for invocation_id in list(self._granted):
            if not (self.limiter.is_waiting(invocation_id) or self.limiter.is_held(invocation_id)):
                self._drop(invocation_id)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close_admission(self) -> None:
        if self._pump_handle is not None:
            self._pump_handle.cancel()
        if self._reporting is not None:
            self._reporting.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(Exception):
                task.cancel()

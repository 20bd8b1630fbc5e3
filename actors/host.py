"""ObjectHost: runs the invocations of the keys (or service calls) routed to one host.

Exclusive invocations of a key queue in a FIFO inbox and run one at a time; shared handlers
and service handlers run beside them. Everything an invocation records goes through one
``Flusher`` per host: while one batch is being committed, the records of every invocation on
the host accumulate for the next, so one Ray call carries many entries. No Ray import here:
the actor wrapper (``actors.host_actor``) supplies the journal port.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from actors.definitions import ServiceDefinition
from actors.engine import Invocation, execute
from journal.records import Accept, Batch, Outcome, PendingInvocation, Record, StateWrite

log = logging.getLogger("raystate.host")

RECENT_OUTCOMES = 10_000


@dataclass(slots=True)
class InvokeRequest:
    """A client's (or handler's) request to run one handler. ``id`` is chosen by the caller, so
    a request re-sent after a failure is recognised."""

    id: str
    service: str
    handler: str
    key: str | None
    input: str
    mode: Literal["call", "send"] = "call"
    route_hash: int = 0
    idempotency_key: str | None = None
    invoked_by: str | None = None
    resubmit: bool = False
    created_at_ms: int = 0


class JournalPort(Protocol):
    """The journal as a host sees it (the actor, or an in-process store in unit tests)."""

    async def commit(self, batch: Batch) -> None: ...

    async def outcome(self, invocation_id: str) -> Outcome | None: ...

    async def pending(self, services: list[str], partition: tuple[int, int] | None = None,
                      key: str | None = None) -> list[PendingInvocation]: ...

    async def load_state(self, service: str, key: str) -> dict[str, str]: ...


class Flusher:
    """Host-side group commit: one batch in flight, the next one filling meanwhile.

    A failed commit is sent again (same batch id, marked re-sent) until it succeeds: its
    records are already in the invocations' in-memory journals, so dropping them would let a
    retry replay entries that were never durable."""

    def __init__(self, commit: Callable[[Batch], Awaitable[None]],
                 on_committed: Callable[[list[Record]], None]) -> None:
        self._commit = commit
        self._on_committed = on_committed
        self._prefix = uuid.uuid4().hex[:12]
        self._ids = itertools.count()
        self._records: list[Record] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._task: asyncio.Task[None] | None = None

    def submit(self, records: list[Record]) -> asyncio.Future[None]:
        fut = asyncio.get_running_loop().create_future()
        self._records.extend(records)
        self._waiters.append(fut)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        return fut

    async def _run(self) -> None:
        while self._waiters:
            records, self._records = self._records, []
            waiters, self._waiters = self._waiters, []
            if records:
                await self._commit_until_done(Batch(f"{self._prefix}:{next(self._ids)}", records))
                self._on_committed(records)
            for w in waiters:
                if not w.done():
                    w.set_result(None)

    async def _commit_until_done(self, batch: Batch) -> None:
        """Nothing may go on until the batch is durable, and its records are already part of
        invocations' in-memory journals: so send the same batch again until it commits."""
        delay = 0.1
        while True:
            try:
                await self._commit(batch)
                return
            except Exception:
                log.exception("commit of batch %s failed; sending it again", batch.batch_id)
                batch.resent = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)


class KeySlot:
    """One object key in memory: committed state, the FIFO inbox, who is using it."""

    __slots__ = ("committed", "working", "uncommitted", "loading", "inbox", "worker", "users",
                 "last_used")

    def __init__(self) -> None:
        self.committed: dict[str, str] | None = None  # what shared handlers read
        self.working: dict[str, str] = {}  # committed + queued changes; exclusive handlers
        self.uncommitted = 0  # finished exclusive invocations whose output is not yet durable
        self.loading: asyncio.Task[dict[str, str]] | None = None
        self.inbox: deque[Invocation] = deque()
        self.worker: asyncio.Task[None] | None = None
        self.users = 0
        self.last_used = time.monotonic()

    @property
    def idle(self) -> bool:
        return not self.inbox and self.users == 0 and self.uncommitted == 0 and \
            (self.worker is None or self.worker.done())


class ObjectHost:
    """Hosts one service's invocations: a partition of its keys, or one dedicated key."""

    def __init__(
        self,
        definition: ServiceDefinition,
        journal: JournalPort,
        *,
        partition: tuple[int, int] | None = None,
        key: str | None = None,
    ) -> None:
        self.definition = definition
        self.journal = journal
        self.partition = partition
        self.dedicated_key = key
        self.flusher = Flusher(journal.commit, self._apply_committed)
        self._active: dict[str, Invocation] = {}
        self._recent: OrderedDict[str, Outcome] = OrderedDict()
        self._slots: dict[str, KeySlot] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._ready: asyncio.Future[None] | None = None
        self._order = 0  # acceptance order, increasing across restarts (wall-clock based)
        self.last_activity = time.monotonic()

    # -- start and recovery ------------------------------------------------------------------

    async def start(self) -> None:
        """Resume every accepted, unfinished invocation of this host's keys (idempotent)."""
        if self._ready is None:
            self._ready = asyncio.get_running_loop().create_future()
            try:
                pending = await self.journal.pending(
                    [self.definition.name], self.partition, self.dedicated_key)
            except BaseException as e:
                self._ready.set_exception(e)
                self._ready.exception()  # mark retrieved; callers re-raise via await
                raise
            for p in pending:
                self._resume(p)
            self._ready.set_result(None)
            if pending:
                log.info("%s: resumed %d invocations", self.definition.name, len(pending))
        await self._ready

    def _resume(self, p: PendingInvocation) -> None:
        spec = self.definition.handlers.get(p.accept.handler)
        inv = Invocation(p.accept, spec, p.entries, p.retry_count, accept_durable=True)  # type: ignore[arg-type]
        inv.durable.set_result(None)
        self._active[inv.id] = inv
        self._schedule(inv)

    # -- accepting ---------------------------------------------------------------------------

    async def invoke(self, req: InvokeRequest) -> Outcome | None:
        """Accept (or attach to) an invocation. A call returns its outcome; a send returns
        None once the invocation is durable."""
        await self.start()
        self.last_activity = time.monotonic()
        inv = self._active.get(req.id)
        done = self._recent.get(req.id)
        if inv is None and done is None and (req.resubmit or req.idempotency_key):
            done = await self.journal.outcome(req.id)
            inv = self._active.get(req.id)
            done = done or self._recent.get(req.id)
        if done is not None:
            return done if req.mode == "call" else None
        if inv is None:
            spec = self.definition.handlers.get(req.handler)
            if spec is None:
                return Outcome(False, None, f"unknown handler {req.service}/{req.handler}", 404)
            self._order = max(self._order + 1, time.time_ns())
            inv = Invocation(Accept(req.id, req.service, req.handler, req.key, req.route_hash,
                                    req.input, req.idempotency_key, req.invoked_by,
                                    req.created_at_ms, self._order), spec)
            self._active[inv.id] = inv
            if req.mode == "send":
                self.submit(inv, [])
            self._schedule(inv)
        if req.mode == "send":
            await asyncio.shield(inv.durable)
            return None
        return await asyncio.shield(inv.outcome)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _schedule(self, inv: Invocation) -> None:
        if inv.spec is None:
            self._spawn(self._finish_unknown(inv))
            return
        key = inv.accept.key
        if key is None:
            self._spawn(self._run(inv, None))
            return
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = KeySlot()
        slot.last_used = time.monotonic()
        if inv.spec.kind == "shared":
            slot.users += 1
            self._spawn(self._run(inv, slot))
            return
        slot.inbox.append(inv)
        if slot.worker is None or slot.worker.done():
            slot.worker = asyncio.create_task(self._drain(key, slot))

    # -- running -----------------------------------------------------------------------------

    async def _drain(self, key: str, slot: KeySlot) -> None:
        """Run a key's exclusive invocations one at a time, in acceptance order.

        The next one starts as soon as the previous one's output is queued for commit (not
        committed): the flusher commits in order, a caller sees an outcome only once it is
        durable, and a side effect waits for the changes it could observe (see ``engine``)."""
        while slot.inbox:
            await self._execute(slot.inbox[0], slot, key)
            slot.inbox.popleft()
            slot.last_used = time.monotonic()

    async def _run(self, inv: Invocation, slot: KeySlot | None) -> None:
        try:
            await self._execute(inv, slot, inv.accept.key)
        finally:
            if slot is not None:
                slot.users -= 1
                slot.last_used = time.monotonic()

    async def _execute(self, inv: Invocation, slot: KeySlot | None, key: str | None) -> None:
        while True:
            try:
                state = None
                if slot is not None:
                    await self._load_state(slot, key)
                    state = slot.working if inv.spec.kind == "exclusive" else slot.committed
                out, durable = await execute(self, inv, state)
                break
            except Exception:  # state could not be loaded for long, or a bug: try again later
                log.exception("invocation %s could not make progress; retrying", inv.id)
                await asyncio.sleep(1.0)
        if slot is not None and inv.spec.kind == "exclusive":
            slot.uncommitted += 1
        self._spawn(self._finish_when_durable(inv, out, durable, slot))

    async def _finish_when_durable(self, inv: Invocation, out: Outcome,
                                   durable: asyncio.Future[None], slot: KeySlot | None) -> None:
        await durable
        if slot is not None and inv.spec.kind == "exclusive":
            slot.uncommitted -= 1
        self._finish(inv, out)

    async def _finish_unknown(self, inv: Invocation) -> None:
        from journal.records import Output

        msg = f"unknown handler {inv.accept.service}/{inv.accept.handler}"
        await self.submit(inv, [Output(inv.id, False, None, msg, 404)])
        self._finish(inv, Outcome(False, None, msg, 404))

    def _finish(self, inv: Invocation, out: Outcome) -> None:
        if not inv.durable.done():
            inv.durable.set_result(None)
        if not inv.outcome.done():
            inv.outcome.set_result(out)
        self._active.pop(inv.id, None)
        self._recent[inv.id] = out
        if len(self._recent) > RECENT_OUTCOMES:
            self._recent.popitem(last=False)
        self.last_activity = time.monotonic()

    async def _load_state(self, slot: KeySlot, key: str | None) -> None:
        if slot.committed is None:
            assert key is not None
            if slot.loading is None or (slot.loading.done() and slot.loading.exception()):
                slot.loading = asyncio.ensure_future(
                    self.journal.load_state(self.definition.name, key))
            state = await asyncio.shield(slot.loading)
            if slot.committed is None:
                slot.committed = dict(state)
                slot.working = dict(state)

    # -- durability --------------------------------------------------------------------------

    def submit(self, invocation: Invocation, records: list[Record]) -> asyncio.Future[None]:
        """Queue ``records`` (preceded by the invocation's acceptance if not yet) for commit;
        the future resolves once they and everything queued before are durable."""
        if not invocation.accept_durable:
            invocation.accept_durable = True
            records = [invocation.accept, *records]
        fut = self.flusher.submit(records)
        if not invocation.durable.done():
            fut.add_done_callback(lambda _: invocation.durable.done() or
                                  invocation.durable.set_result(None))
        return fut

    def depends_on_uncommitted(self, invocation: Invocation) -> bool:
        if invocation.accept.key is None or invocation.spec.kind != "exclusive":
            return False
        slot = self._slots.get(invocation.accept.key)
        return slot is not None and slot.uncommitted > 0

    def _apply_committed(self, records: list[Record]) -> None:
        """State writes that are now durable become visible to shared readers."""
        for r in records:
            if isinstance(r, StateWrite):
                slot = self._slots.get(r.key)
                if slot is not None and slot.committed is not None:
                    if r.value is None:
                        slot.committed.pop(r.name, None)
                    else:
                        slot.committed[r.name] = r.value

    # -- memory ------------------------------------------------------------------------------

    def evict_idle(self, idle_seconds: float) -> int:
        """Drop keys idle longer than ``idle_seconds`` from memory; return how many."""
        cutoff = time.monotonic() - idle_seconds
        stale = [k for k, s in self._slots.items() if s.idle and s.last_used < cutoff]
        for k in stale:
            del self._slots[k]
        return len(stale)

    def is_idle(self, idle_seconds: float) -> bool:
        return not self._active and not self._tasks and \
            time.monotonic() - self.last_activity > idle_seconds

    def stats(self) -> dict[str, int]:
        return {"active": len(self._active), "keys": len(self._slots)}

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        for slot in self._slots.values():
            if slot.worker is not None:
                slot.worker.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)

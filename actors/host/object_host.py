"""ObjectHost: runs the invocations of the keys (or service calls) routed to one host.

Exclusive invocations of a key queue in a FIFO inbox and run one at a time; shared handlers
and service handlers run beside them. Everything an invocation records goes through the host's
``Flusher``. An invocation waiting on a timer longer than ``suspend_after`` is *parked*: it
leaves memory (a small stub keeps its key's place in line) and is replayed from the journal
when the scheduler wakes it; a delayed send stays parked until its start timer fires. No Ray
import here: the actor wrapper (``actors.cluster.host_actor``) supplies the journal and
scheduler ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, Protocol

from actors.engine.awakeable_ids import AwakeableIds
from actors.engine.context import (
    CANCEL_INDEX,
    CANCELLED,
    CANCELLED_CODE,
    KILLED,
    PROMISE_STATE,
    Invocation,
    Suspended,
    execute,
    now_ms,
)
from actors.host.actions import SyncActions
from actors.host.flusher import Flusher
from actors.host.loader import StateLoader
from actors.sdk.definitions import ServiceDefinition
from actors.sdk.errors import AlreadyCompletedError, TerminalError
from actors.sdk.serde import Serde
from journal import metrics
from journal.records import (
    Accept,
    Batch,
    Completion,
    Outcome,
    Output,
    PendingInvocation,
    Record,
    StateWrite,
    StatusChange,
    Timer,
)
from scheduler.service import TimerScheduler

log = logging.getLogger("raystate.host")

RECENT_OUTCOMES = 10_000
AWAKEABLE_TYPE_WAIT_S = 5.0  # see ``_awakeable_type``
START_INDEX = -(2**31)  # the completion index a delayed start's timer wakes


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
    delay_ms: int = 0


class JournalPort(Protocol):
    """The journal as a host sees it (the actor, or an in-process store in unit tests)."""

    async def commit(self, batch: Batch) -> None: ...

    async def outcome(self, invocation_id: str) -> Outcome | None: ...

    async def completion(self, invocation_id: str, idx: int) -> Completion | None: ...

    async def pending(self, services: list[str], partition: tuple[int, int] | None = None,
                      key: str | None = None,
                      ids: list[str] | None = None) -> list[PendingInvocation]: ...

    async def load_states(self, service: str, keys: list[str]) -> dict[str, dict[str, str]]: ...

    async def state_key_filter(self, service: str) -> bytes: ...

    async def pending_timers(self, host: str | None = None) -> list[Timer]: ...

    async def fired_open_timers(self) -> list[Timer]: ...


class SchedulerPort(Protocol):
    async def add(self, timers: list[Timer]) -> None: ...


class OutboxPort(Protocol):
    """How a host reaches other handlers (the runtime's ``Router`` in an actor)."""

    def request(self, target: Any, key: str | None, arg: Any, mode: str, *,
                delay: Any = None, invocation_id: str | None = None,
                invoked_by: str | None = None) -> tuple[Any, InvokeRequest]: ...

    async def submit(self, spec: Any, req: InvokeRequest) -> Outcome | None: ...

    async def cancel(self, invocation_id: str, kill: bool = False) -> str: ...

    async def resolve_awakeable(self, awakeable_id: str, result: str | None,
                                failure: str | None, by: str | None = None) -> None: ...


@dataclass(slots=True)
class Parked:
    """An invocation out of memory: suspended on a wait, or scheduled for a delayed start."""

    id: str
    key: str | None
    reason: Literal["suspended", "start"]
    reloading: bool = False  # being reloaded from the journal to resume
    early: dict[int, Completion] = field(default_factory=dict)  # woken while reloading


class KeySlot:
    """One object key in memory: committed state, the FIFO inbox, who is using it."""

    __slots__ = (
        "committed",
        "inbox",
        "last_used",
        "loading",
        "promises",
        "uncommitted",
        "users",
        "watchers",
        "worker",
        "working",
    )

    def __init__(self) -> None:
        self.committed: dict[str, str] | None = None  # what shared handlers read
        self.working: dict[str, str] = {}  # committed + queued changes; exclusive handlers
        self.uncommitted = 0  # finished exclusive invocations whose output is not yet durable
        self.loading: asyncio.Future[dict[str, str]] | None = None
        self.inbox: deque[Invocation | Parked] = deque()
        self.worker: asyncio.Task[None] | None = None
        self.users = 0
        self.last_used = time.monotonic()
        # workflow promises: completed (or claimed) name -> completion JSON, and who waits
        self.promises: dict[str, str] = {}
        self.watchers: dict[str, list[tuple[str, int]]] = {}

    @property
    def idle(self) -> bool:
        return not self.inbox and self.users == 0 and self.uncommitted == 0 and \
            not self.watchers and \
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
        name: str = "host",
        scheduler: SchedulerPort | None = None,
        suspend_after: float = 30.0,
        outbox: OutboxPort | None = None,
        secret: str | None = None,
    ) -> None:
        """``secret``: the runtime's, which awakeable ids are signed with (a host actor sets
        it from the runtime config before it starts); a random one by default."""
        self.definition = definition
        self.journal = journal
        self.partition = partition
        self.dedicated_key = key
        self._name = name
        self.scheduler = scheduler
        self.suspend_after = suspend_after
        self.outbox = outbox
        self.actions = SyncActions()
        self.flusher = Flusher(journal.commit, self._apply_committed, self.actions.settle)
        self.loader = StateLoader(  # a dedicated host loads its one key once: no filter
            partial(journal.load_states, definition.name),
            None if key is not None else partial(journal.state_key_filter, definition.name))
        self._active: dict[str, Invocation] = {}
        self._parked: dict[str, Parked] = {}
        self._outcomes: dict[str, asyncio.Future[Outcome]] = {}
        self._recent: OrderedDict[str, Outcome] = OrderedDict()
        self._slots: dict[str, KeySlot] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._ready: asyncio.Future[None] | None = None
        self._order = 0  # acceptance order, increasing across restarts (wall-clock based)
        self._local_timers: TimerScheduler | None = None
        self._calls: dict[tuple[str, int], asyncio.Task[None]] = {}  # (caller, idx) in flight
        self._delivering: dict[str, int] = {}  # callee id -> its calls in flight (see _pass_on)
        self.awakeables = AwakeableIds(secret or secrets.token_hex(32))
        self._awakeables: dict[str, dict[int, Serde]] = {}  # types of open awakeables
        # resolutions waiting for a recovered invocation's replay to declare an awakeable's type
        self._types_due: dict[tuple[str, int], asyncio.Future[None]] = {}
        # awakeables completed here (first one wins): done once durable, and who completed it
        self._resolved: OrderedDict[tuple[str, int],
                                    tuple[asyncio.Future[None], str | None]] = OrderedDict()
        self._resolving: dict[tuple[str, int], asyncio.Future[None]] = {}  # handlers' deliveries
        self.last_activity = time.monotonic()

    @property
    def name(self) -> str:
        return self._name

    # -- start and recovery ------------------------------------------------------------------

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
                    self.journal, lambda _host, items: self._spawn(self.wake(items)))
                self.scheduler = self._local_timers
            try:
                pending = await self.journal.pending(
                    [self.definition.name], self.partition, self.dedicated_key)
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
        if p.waiting_for == "start":
            self._parked[p.accept.id] = Parked(p.accept.id, key, "start")
            return
        last = p.entries[-1] if p.entries else None
        # Park only what waits for a timer: a sleep (its timer wakes it) or a retry back-off.
        # Anything else replays: a call is re-issued (same id), a promise watched again, and
        # an awakeable may be followed by code that never ran (handing out its id).
        waiting = p.waiting_for == "retry" or (
            last is not None and not last.completed and last.idx not in p.completions
            and last.entry_type == "sleep")
        spec = self.definition.handlers.get(p.accept.handler)
        if waiting and spec is not None:
            self._park_suspended(p.accept.id, key, spec.kind == "exclusive")
            return
        inv = self._invocation_of(p)
        self._active[inv.id] = inv
        self._schedule(inv)

    def _invocation_of(self, p: PendingInvocation) -> Invocation:
        spec = self.definition.handlers.get(p.accept.handler)
        inv = Invocation(p.accept, spec, p.entries, p.retry_count,  # type: ignore[arg-type]
                         accept_durable=True, completions=dict(p.completions))
        inv.durable.set_result(None)
        return inv

    def _park_suspended(self, inv_id: str, key: str | None, exclusive: bool) -> None:
        self._parked[inv_id] = Parked(inv_id, key, "suspended")
        if key is not None and exclusive:
            self._slot(key).inbox.append(Parked(inv_id, key, "suspended"))

    # -- accepting ---------------------------------------------------------------------------

    async def invoke(self, req: InvokeRequest) -> Outcome | None:
        """Accept (or attach to) an invocation. A call returns its outcome; a send returns
        None once the invocation is durable."""
        await self.start()
        self.last_activity = time.monotonic()
        known = req.id in self._active or req.id in self._parked
        done = self._recent.get(req.id)
        if not known and done is None and (req.resubmit or req.idempotency_key):
            done = await self.journal.outcome(req.id)
            known = req.id in self._active or req.id in self._parked
            done = done or self._recent.get(req.id)
        if done is not None:
            return done if req.mode == "call" else None
        if not known:
            spec = self.definition.handlers.get(req.handler)
            if spec is None:
                return Outcome(False, None, f"unknown handler {req.service}/{req.handler}", 404)
            self._order = max(self._order + 1, time.time_ns())
            accept = Accept(req.id, req.service, req.handler, req.key, req.route_hash,
                            req.input, req.idempotency_key, req.invoked_by,
                            req.created_at_ms, self._order)
            if req.delay_ms > 0:
                durable = self._accept_delayed(accept, req.delay_ms)
                if req.mode == "send":
                    await durable
                    return None
            else:
                inv = Invocation(accept, spec, fresh=True)
                self._active[inv.id] = inv
                if req.mode == "send":
                    self.submit(inv, [])
                self._schedule(inv)
        if req.mode == "send":
            running = self._active.get(req.id)
            if running is not None:
                await asyncio.shield(running.durable)
            return None
        return await asyncio.shield(self._outcome(req.id))

    def _accept_delayed(self, accept: Accept, delay_ms: int) -> asyncio.Future[None]:
        fire_at = now_ms() + delay_ms
        timer = Timer(f"{accept.id}:start", accept.id, START_INDEX, "start", fire_at, self._name)
        self._parked[accept.id] = Parked(accept.id, accept.key, "start")
        return self.flusher.submit(
            [accept, StatusChange(accept.id, "scheduled", 0, None, now_ms()), timer])

    def _outcome(self, inv_id: str) -> asyncio.Future[Outcome]:
        fut = self._outcomes.get(inv_id)
        if fut is None:
            fut = self._outcomes[inv_id] = asyncio.get_running_loop().create_future()
        return fut

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _slot(self, key: str) -> KeySlot:
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = KeySlot()
        return slot

    def _schedule(self, inv: Invocation) -> None:
        if inv.spec is None:
            self._spawn(self._finish_unknown(inv))
            return
        key = inv.accept.key
        if key is None:
            self._spawn(self._run(inv, None))
            return
        slot = self._slot(key)
        slot.last_used = time.monotonic()
        if inv.spec.kind == "shared":
            slot.users += 1
            self._spawn(self._run(inv, slot))
            return
        slot.inbox.append(inv)
        self._kick(key, slot)

    def _kick(self, key: str, slot: KeySlot) -> None:
        if slot.worker is None or slot.worker.done():
            slot.worker = asyncio.create_task(self._drain(key, slot))

    # -- waking ------------------------------------------------------------------------------

    async def wake(self, items: list[tuple[str, int, Completion | None]]) -> None:
        """Timers fired (their completions are durable): resume the invocations waiting."""
        await self.start()
        parked: list[Parked] = []
        for inv_id, idx, completion in items:
            inv = self._active.get(inv_id)
            if inv is not None:
                inv.completions.setdefault(idx, completion or Completion(inv_id, idx))
                waiter = inv.waiters.pop(idx, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
            elif inv_id in self._parked:
                p = self._parked[inv_id]
                if p.reloading:  # its reload may have read the journal before this completion
                    p.early.setdefault(idx, completion or Completion(inv_id, idx))
                else:
                    p.reloading = True
                    parked.append(p)
        if parked:
            self._spawn(self._unpark(parked))

    async def _unpark(self, parked: list[Parked]) -> None:
        """Reload parked invocations from the journal (one query for all) and resume them.

        They stay parked (marked as reloading) until resumed: a completion that arrives
        meanwhile is kept for the resumed invocation, and a kill meanwhile stops it."""
        delay = 0.1
        while True:
            try:
                pending = await self.journal.pending([self.definition.name],
                                                     ids=[p.id for p in parked])
                break
            except Exception:
                log.exception("cannot reload %d parked invocations; trying again", len(parked))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        by_id = {p.accept.id: p for p in pending}
        for p in parked:
            if self._parked.get(p.id) is not p:
                continue  # killed meanwhile
            del self._parked[p.id]
            if p.id in by_id:  # else it finished meanwhile
                inv = self._invocation_of(by_id[p.id])
                for idx, completion in p.early.items():
                    inv.completions.setdefault(idx, completion)
                self._resume_parked(p, inv)

    def _resume_parked(self, parked: Parked, inv: Invocation) -> None:
        self._active[inv.id] = inv
        key = parked.key
        if parked.reason == "start" or key is None or inv.spec is None \
                or inv.spec.kind != "exclusive":
            self._schedule(inv)
            return
        slot = self._slot(key)
        for i, item in enumerate(slot.inbox):
            if isinstance(item, Parked) and item.id == inv.id:
                slot.inbox[i] = inv
                break
        else:
            slot.inbox.appendleft(inv)
        self._kick(key, slot)

    # -- running -----------------------------------------------------------------------------

    async def _drain(self, key: str, slot: KeySlot) -> None:
        """Run a key's exclusive invocations one at a time, in acceptance order.

        The next one starts as soon as the previous one's output is queued for commit (not
        committed): the flusher commits in order, a caller sees an outcome only once it is
        durable, and a side effect waits for the changes it could observe (see ``engine``).
        A parked invocation at the head keeps the key until it is woken."""
        while slot.inbox:
            head = slot.inbox[0]
            if isinstance(head, Parked):
                return
            if not await self._execute(head, slot, key):
                slot.inbox[0] = Parked(head.id, key, "suspended")
                return
            slot.inbox.popleft()
            slot.last_used = time.monotonic()

    async def _run(self, inv: Invocation, slot: KeySlot | None) -> None:
        try:
            await self._execute(inv, slot, inv.accept.key)
        finally:
            if slot is not None:
                slot.users -= 1
                slot.last_used = time.monotonic()

    async def _execute(self, inv: Invocation, slot: KeySlot | None, key: str | None) -> bool:
        """Run an invocation until its outcome is queued (True) or it is parked (False)."""
        exclusive = slot is not None and inv.spec.kind == "exclusive"
        while True:
            try:
                state = None
                if slot is not None:
                    await self._load_state(slot, key)
                    state = slot.working if exclusive else slot.committed
                inv.task = asyncio.ensure_future(execute(self, inv, state))
                out, durable = await inv.task
                break
            except asyncio.CancelledError:
                me = asyncio.current_task()
                if not inv.killed or (me is not None and me.cancelling()):
                    raise  # the host is closing
                # killed where ``execute`` could not answer (while it was suspending)
                out = Outcome(False, None, KILLED, CANCELLED_CODE)
                durable = self.submit(inv, [Output(inv.id, False, None, KILLED, CANCELLED_CODE,
                                                   now_ms())])
                break
            except Suspended:
                if inv.awaiting is not None and (inv.awaiting in inv.completions
                                                 or inv.cancel_pending):
                    continue  # woken while suspending: replay right away
                self._active.pop(inv.id, None)
                self._parked[inv.id] = Parked(inv.id, key, "suspended")
                return False
            except Exception:  # state could not be loaded for long, or a bug: try again later
                log.exception("invocation %s could not make progress; retrying", inv.id)
                await asyncio.sleep(1.0)
        if exclusive:
            assert slot is not None
            slot.uncommitted += 1
        self._spawn(self._finish_when_durable(inv, out, durable, slot if exclusive else None))
        return True

    async def _finish_when_durable(self, inv: Invocation, out: Outcome,
                                   durable: asyncio.Future[None], slot: KeySlot | None) -> None:
        await durable
        if slot is not None:
            slot.uncommitted -= 1
        self._finish(inv, out)

    async def _finish_unknown(self, inv: Invocation) -> None:
        msg = f"unknown handler {inv.accept.service}/{inv.accept.handler}"
        await self.submit(inv, [Output(inv.id, False, None, msg, 404)])
        self._finish(inv, Outcome(False, None, msg, 404))

    def _finish(self, inv: Invocation, out: Outcome) -> None:
        if not inv.durable.done():
            inv.durable.set_result(None)
        metrics.invocation_done(inv.accept.service, inv.accept.handler, metrics.status_of(out))
        fut = self._outcomes.pop(inv.id, None)
        if fut is not None and not fut.done():
            fut.set_result(out)
        self._active.pop(inv.id, None)
        self._awakeables.pop(inv.id, None)
        self._recent[inv.id] = out
        if len(self._recent) > RECENT_OUTCOMES:
            self._recent.popitem(last=False)
        self.last_activity = time.monotonic()

    async def _load_state(self, slot: KeySlot, key: str | None) -> None:
        if slot.committed is None:
            assert key is not None
            if slot.loading is None or (slot.loading.done() and slot.loading.exception()):
                slot.loading = self.loader.load(key)
            state = await asyncio.shield(slot.loading)
            if slot.committed is None:
                slot.committed = dict(state)
                slot.working = dict(state)
                slot.promises = {n[len(PROMISE_STATE):]: v for n, v in state.items()
                                 if n.startswith(PROMISE_STATE)}

    # -- durability (the engine's HostPort) --------------------------------------------------

    def submit(self, invocation: Invocation, records: list[Record]) -> asyncio.Future[None]:
        """Queue ``records`` (preceded by the invocation's acceptance if not yet) for commit;
        the future resolves once they and everything queued before are durable."""
        if not invocation.accept_durable:
            invocation.accept_durable = True
            records = [invocation.accept, *records]
        for r in records:
            if isinstance(r, StateWrite):
                self.loader.wrote(r.key)
        fut = self.flusher.submit(records)

        def now_durable(_: asyncio.Future[None]) -> None:
            if not invocation.durable.done():
                invocation.durable.set_result(None)

        if not invocation.durable.done():
            fut.add_done_callback(now_durable)
        return fut

    def depends_on_uncommitted(self, invocation: Invocation) -> bool:
        if invocation.ahead:  # resumed with a completion not yet durable (``resume_ahead``)
            return True
        if invocation.accept.key is None or invocation.spec.kind != "exclusive":
            return False
        slot = self._slots.get(invocation.accept.key)
        return slot is not None and slot.uncommitted > 0

    async def await_completion(self, invocation: Invocation, idx: int,
                               records: list[Record]) -> Completion | None:
        if idx in invocation.completions:
            if records:
                self.submit(invocation, records)
            return invocation.completions[idx]
        if records:
            await self.submit(invocation, records)
        invocation.awaiting = idx  # stays set if it suspends (see ``_execute``)
        if idx not in invocation.completions and not invocation.cancel_pending:
            waiter = invocation.waiters.get(idx)
            if waiter is None:
                waiter = invocation.waiters[idx] = asyncio.get_running_loop().create_future()
            if self.suspend_after <= 0:
                raise Suspended
            try:
                await asyncio.wait_for(asyncio.shield(waiter), self.suspend_after)
            except TimeoutError:
                raise Suspended from None
            finally:
                if invocation.resumed_ahead:  # running on now: the flusher may cut its batch
                    invocation.resumed_ahead = False
                    self.actions.end()
        invocation.awaiting = None
        return invocation.completions.get(idx)

    def resume_ahead(self, completion: Completion) -> tuple[asyncio.Future[None], bool]:
        """Queue ``completion`` for commit and, if its invocation waits for it in memory,
        resume it now rather than a commit later (True): its next records then share the
        completion's commit (the flusher's settle waits for it to run on), and nothing it does
        is seen outside before that commit: its next ``ctx.run`` waits for it
        (``depends_on_uncommitted``), its sends go out once it is durable (``send``), its
        calls and output become durable after it (the flusher commits in order), and whoever
        delivered the completion is answered once it is durable. Otherwise (parked: its
        reload reads the journal) the caller wakes it once the completion is durable
        (False)."""
        inv = self._active.get(completion.invocation_id)
        waiter = None if inv is None else inv.waiters.get(completion.idx)
        if inv is None or waiter is None or waiter.done() or completion.idx in inv.completions:
            return self.flusher.submit([completion]), False
        inv.completions[completion.idx] = completion
        del inv.waiters[completion.idx]
        inv.ahead += 1
        inv.resumed_ahead = True
        self.actions.begin()
        waiter.set_result(None)
        durable = self.flusher.submit([completion])

        def committed(_: asyncio.Future[None]) -> None:
            inv.ahead -= 1

        durable.add_done_callback(committed)
        return durable, True

    async def _complete(self, completion: Completion) -> None:
        """Make ``completion`` durable and resume its invocation: at once if it waits in
        memory (``resume_ahead``), else once durable."""
        durable, resumed = self.resume_ahead(completion)
        await durable
        if not resumed:
            await self.wake([(completion.invocation_id, completion.idx, completion)])

    def send(self, target: Any, key: str | None, arg: Any, delay: Any, invocation_id: str,
             sender: Invocation) -> tuple[str, str, Callable[[], asyncio.Future[None]]]:
        if self.outbox is None:
            raise TerminalError("sending to other handlers needs a runtime (no outbox here)")
        spec, req = self.outbox.request(target, key, arg, "send", delay=delay,
                                        invocation_id=invocation_id, invoked_by=sender.id)
        # a replay sends the same id again: then the callee's host checks the journal first
        # (as it always does for a workflow's run, which ``request`` marks as a resubmission)
        req.resubmit = req.resubmit or not sender.first_run
        # A send goes out at once, before its entry is durable: a replay sends the same request
        # again. Not while resumed ahead of a completion's commit: until that value is durable,
        # a replay after a crash may resume with another one (``resume_ahead``).
        committed = self.flusher.submit([]) if sender.ahead else None

        async def deliver() -> None:
            assert self.outbox is not None
            if committed is not None:
                await committed
            await self.outbox.submit(spec, req)

        return spec.target, req.id, lambda: asyncio.ensure_future(deliver())

    def call(self, target: Any, key: str | None, arg: Any, invocation_id: str,
             caller: Invocation) -> tuple[str, str, Any, Callable[[int], None]]:
        if self.outbox is None:
            raise TerminalError("calling other handlers needs a runtime (no outbox here)")
        spec, req = self.outbox.request(target, key, arg, "call", invocation_id=invocation_id,
                                        invoked_by=caller.id)
        if caller.spec.kind == "exclusive" and spec.kind == "exclusive" and \
                caller.accept.key is not None and key == caller.accept.key and \
                spec.definition.name == caller.accept.service:
            raise TerminalError(
                f"{caller.spec.target} (exclusive) calls {spec.target} (exclusive) on its own "
                f"key {key!r}: that call would wait for the caller to finish, forever. Use "
                "object_send, a shared handler, or a plain function", 409)
        req.resubmit = req.resubmit or not caller.first_run  # see ``send``

        def start(idx: int) -> None:
            if (caller.id, idx) not in self._calls:
                self._delivering[req.id] = self._delivering.get(req.id, 0) + 1
                self._calls[caller.id, idx] = asyncio.ensure_future(
                    self._deliver_call(caller.id, idx, spec, req))

        return spec.target, req.id, spec.output, start

    async def _deliver_call(self, caller_id: str, idx: int, spec: Any,
                            req: InvokeRequest) -> None:
        """Wait for the callee's outcome, make it durable as the call entry's completion in
        the caller's journal, then resume the caller (replayed if it left memory meanwhile)."""
        assert self.outbox is not None
        delay = 0.1
        try:
            while True:
                try:
                    out = await self.outbox.submit(spec, req)
                    break
                except Exception:
                    log.exception("call %s from %s failed; trying again", req.id, caller_id)
                    req.resubmit = True  # the first try may have got through
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
            assert out is not None
            completion = Completion(caller_id, idx, out.output, None, None, now_ms()) if out.ok \
                else Completion(caller_id, idx, None, out.failure or "failed",
                                out.failure_code or 500, now_ms())
            await self._complete(completion)
        finally:
            self._calls.pop((caller_id, idx), None)
            left = self._delivering.pop(req.id, 1) - 1
            if left:
                self._delivering[req.id] = left

    # -- awakeables ---------------------------------------------------------------------------

    def expect_awakeable(self, invocation: Invocation, idx: int, serde: Serde) -> None:
        self._awakeables.setdefault(invocation.id, {})[idx] = serde
        due = self._types_due.pop((invocation.id, idx), None)
        if due is not None and not due.done():
            due.set_result(None)

    async def _awakeable_type(self, inv: Invocation, idx: int) -> Serde | None:
        """The type the awakeable was created with. A recovered invocation declares it again
        when its replay passes ``ctx.awakeable``, moments after its host started: wait for
        that (a bounded while), so a value of the wrong type is refused before it is written.
        None if it never comes (the replay failed, say): the handler then checks at its
        await."""
        serde = self._awakeables.get(inv.id, {}).get(idx)
        if serde is None and self._active.get(inv.id) is inv:
            due = self._types_due.get((inv.id, idx))
            if due is None:
                due = self._types_due[inv.id, idx] = asyncio.get_running_loop().create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(due), AWAKEABLE_TYPE_WAIT_S)
            if self._types_due.get((inv.id, idx)) is due:
                del self._types_due[inv.id, idx]
            serde = self._awakeables.get(inv.id, {}).get(idx)
        return serde

    def complete_awakeable(self, invocation: Invocation, idx: int, awakeable_id: str,
                           result: str | None, failure: str | None,
                           after: asyncio.Future[None]) -> asyncio.Future[None]:
        if self.outbox is None:
            raise TerminalError("resolving awakeables needs a runtime (no outbox here)")
        at = (invocation.id, idx)
        delivery = self._resolving.get(at)
        if delivery is None:
            delivery = self._resolving[at] = asyncio.ensure_future(
                self._deliver_resolution(invocation.id, idx, awakeable_id, result, failure, after))
            delivery.add_done_callback(lambda _: self._resolving.pop(at, None))
        return delivery

    async def _deliver_resolution(self, caller_id: str, idx: int, awakeable_id: str,
                                  result: str | None, failure: str | None,
                                  after: asyncio.Future[None]) -> None:
        """Deliver a handler's resolution (entry ``idx`` of ``caller_id``) once that entry is
        durable; make the verdict durable as the entry's completion, then resume the caller.
        The delivery names its entry (``by``), so one repeated after a crash counts as the
        same resolution, not a second one: the verdict is the same on every replay."""
        assert self.outbox is not None
        await after
        delay = 0.1
        while True:
            try:
                await self.outbox.resolve_awakeable(awakeable_id, result, failure,
                                                    f"{caller_id}:{idx}")
                completion = Completion(caller_id, idx, None, None, None, now_ms())
                break
            except TerminalError as e:  # refused: already completed (409), unknown (404) ...
                completion = Completion(caller_id, idx, None, e.message, e.status_code, now_ms())
                break
            except Exception:
                log.exception("resolving %s from %s failed; trying again", awakeable_id,
                              caller_id)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        await self._complete(completion)

    async def resolve_awakeable(self, awakeable_id: str, result: str | None,
                                failure: str | None,
                                by: str | None = None) -> tuple[bool, str, int]:
        """Complete an awakeable of an invocation on this host: durable first, then the
        invocation resumes. Returns (ok, message, status) rather than raising, so the error
        reaches any caller as data: unknown (404), already completed (409), bad value (400).
        ``by`` names a handler's resolution (see ``_deliver_resolution``): the same one
        delivered again is answered as delivered."""
        try:
            inv_id, idx = self.awakeables.parse(awakeable_id)
            await self.start()
            if await self._refuse_if_resolved(awakeable_id, inv_id, idx, by):
                return True, "resolved before", 200
            inv = self._active.get(inv_id)
            serde = None
            if inv is not None:
                mine = self._check_awakeable(awakeable_id, inv.entries, inv.completions, idx,
                                             by)
                if not mine and result is not None:
                    serde = await self._awakeable_type(inv, idx)
            elif inv_id in self._parked:
                found = await self.journal.pending([self.definition.name], ids=[inv_id])
                if not found:
                    mine = await self._finished(awakeable_id, inv_id, idx, by)
                else:
                    mine = self._check_awakeable(awakeable_id, found[0].entries,
                                                 found[0].completions, idx, by)
            elif inv_id in self._recent or await self.journal.outcome(inv_id) is not None:
                mine = await self._finished(awakeable_id, inv_id, idx, by)
            else:
                raise TerminalError(f"unknown awakeable {awakeable_id}", 404)
            if mine or await self._refuse_if_resolved(awakeable_id, inv_id, idx, by):
                return True, "resolved before", 200  # (the second: someone else meanwhile)
            serde = serde or self._awakeables.get(inv_id, {}).get(idx)  # parked: if still known
            if serde is not None and result is not None:
                try:
                    serde.load(result)
                except Exception as e:
                    raise TerminalError(f"value for awakeable {awakeable_id} does not "
                                        f"validate: {e}", 400) from None
            completion = Completion(inv_id, idx, result, failure,
                                    None if failure is None else 500, now_ms(), by)
            durable, resumed = self.resume_ahead(completion)
            self._resolved[inv_id, idx] = (durable, by)
            if len(self._resolved) > RECENT_OUTCOMES:
                self._resolved.popitem(last=False)
        except TerminalError as e:
            return False, e.message, e.status_code
        await durable
        if not resumed:
            await self.wake([(inv_id, idx, completion)])
        return True, "resolved" if failure is None else "rejected", 200

    async def _refuse_if_resolved(self, awakeable_id: str, inv_id: str, idx: int,
                                  by: str | None) -> bool:
        """A second resolution is refused, but only once the first one is durable: if this
        process dies first, the retry meets a new host and the journal decides. True: the
        first one was this same resolution (``by``), delivered again."""
        first = self._resolved.get((inv_id, idx))
        if first is None:
            return False
        await asyncio.shield(first[0])
        if by is not None and first[1] == by:
            return True
        raise AlreadyCompletedError(f"awakeable {awakeable_id} is already completed")

    async def _finished(self, awakeable_id: str, inv_id: str, idx: int,
                        by: str | None) -> bool:
        """The awakeable's invocation has finished: True if ``by`` completed it before."""
        if by is not None:
            done = await self.journal.completion(inv_id, idx)
            if done is not None and done.by == by:
                return True
        raise AlreadyCompletedError(f"the invocation of awakeable {awakeable_id} has finished")

    @staticmethod
    def _check_awakeable(awk_id: str, entries: list[Any], completions: dict[int, Completion],
                         idx: int, by: str | None) -> bool:
        """Refuse an unknown or completed awakeable; True if ``by`` completed it."""
        if idx >= len(entries) or entries[idx].entry_type != "awakeable":
            raise TerminalError(f"unknown awakeable {awk_id}: its invocation has no "
                                "awakeable there", 404)
        done = completions.get(idx)
        if done is not None:
            if by is not None and done.by == by:
                return True
            raise AlreadyCompletedError(f"awakeable {awk_id} is already completed")
        return False

    # -- workflow promises --------------------------------------------------------------------

    def promise_of(self, invocation: Invocation, name: str) -> str | None:
        assert invocation.accept.key is not None
        return self._slot(invocation.accept.key).promises.get(name)

    def claim_promise(self, invocation: Invocation, name: str, data: str) -> bool:
        assert invocation.accept.key is not None
        slot = self._slot(invocation.accept.key)
        if name in slot.promises:
            return False
        slot.promises[name] = data
        waiting = slot.watchers.pop(name, [])
        if waiting:
            self._spawn(self.wake([(i, idx, Completion(i, idx, data)) for i, idx in waiting]))
        return True

    def watch_promise(self, invocation: Invocation, idx: int, name: str) -> None:
        assert invocation.accept.key is not None
        slot = self._slot(invocation.accept.key)
        data = slot.promises.get(name)
        if data is not None:
            self._spawn(self.wake([(invocation.id, idx, Completion(invocation.id, idx, data))]))
        elif (invocation.id, idx) not in slot.watchers.get(name, []):
            slot.watchers.setdefault(name, []).append((invocation.id, idx))

    # -- cancel and kill ---------------------------------------------------------------------

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
        elif inv_id in self._parked:  # replay it: the replay meets the request at its wait
            await self.wake([(inv_id, CANCEL_INDEX, signal)])
        return "cancelled"

    def _interrupt(self, inv: Invocation, kill: bool) -> None:
        """Wake ``inv`` from the wait it is in, and pass the request on to its callee."""
        idx = inv.awaiting
        if idx is None:
            return
        entry = inv.entries[idx] if 0 <= idx < len(inv.entries) else None
        if kill and entry is not None and entry.entry_type == "call" and \
                entry.result is not None and idx not in inv.completions:
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
        delay = 0.02
        while True:
            try:
                await self.outbox.cancel(callee, kill)
                return
            except Exception as e:
                if isinstance(e, TerminalError) and e.status_code == 404 and \
                        callee in self._delivering:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 1.0)
                    continue
                # unknown (never delivered) or gone: the caller moves on anyway
                log.warning("could not %s callee %s", "kill" if kill else "cancel", callee,
                            exc_info=True)
                return

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

    def _apply_committed(self, records: list[Record]) -> None:
        """After a commit: state writes become visible to shared readers, and new timers are
        handed to the scheduler (which also reloads them from the journal when it restarts)."""
        timers: list[Timer] = []
        for r in records:
            if isinstance(r, StateWrite):
                self.loader.committed(r.key)
                slot = self._slots.get(r.key)
                if slot is not None and slot.committed is not None:
                    if r.value is None:
                        slot.committed.pop(r.name, None)
                    else:
                        slot.committed[r.name] = r.value
            elif isinstance(r, Timer):
                timers.append(r)
        if timers and self.scheduler is not None:
            self._spawn(self.scheduler.add(timers))

    # -- memory ------------------------------------------------------------------------------

    def evict_idle(self, idle_seconds: float) -> int:
        """Drop keys idle longer than ``idle_seconds`` from memory; return how many."""
        cutoff = time.monotonic() - idle_seconds
        stale = [k for k, s in self._slots.items() if s.idle and s.last_used < cutoff]
        for k in stale:
            del self._slots[k]
        return len(stale)

    def is_idle(self, idle_seconds: float) -> bool:
        return not self._active and not self._parked and not self._tasks and \
            time.monotonic() - self.last_activity > idle_seconds

    def stats(self) -> dict[str, int]:
        return {"active": len(self._active), "parked": len(self._parked),
                "keys": len(self._slots)}

    async def close(self) -> None:
        if self._local_timers is not None:
            self._local_timers.close()
        for t in list(self._tasks):
            t.cancel()
        for slot in self._slots.values():
            if slot.worker is not None:
                slot.worker.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)

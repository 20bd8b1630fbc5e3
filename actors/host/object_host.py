"""ObjectHost: runs the invocations of the keys (or service calls) routed to one host.

Exclusive invocations of a key queue in a FIFO inbox and run one at a time; shared handlers
and service handlers run beside them. Everything an invocation records goes through the host's
``Flusher``. An invocation waiting on a timer longer than ``suspend_after`` is *parked*: it
leaves memory (a small stub keeps its key's place in line) and is replayed from the journal
when the scheduler wakes it; a delayed send stays parked until its start timer fires. No Ray
import here: the actor wrapper (``actors.cluster.host_actor``) supplies the journal and
scheduler ports (``actors.host.ports``).

This module holds the path every invocation takes: accept, schedule, run, suspend and wake,
make durable. The host's state is ``actors.host.base.HostBase``; what only some invocations
need lives in parts mixed in over it: start and recovery (``recovery``), outbound sends and
calls (``outbound``), awakeables (``awakeables``), workflow promises (``promises``), cancel,
kill and idleness (``lifecycle``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from actors.engine.execute import execute
from actors.engine.invocation import (
    CANCELLED_CODE,
    KILLED,
    PROMISE_STATE,
    Invocation,
    Suspended,
)
from actors.host.awakeables import Awakeables
from actors.host.base import RECENT_OUTCOMES, RELOAD_BACKOFF
from actors.host.lifecycle import Lifecycle
from actors.host.outbound import Outbound
from actors.host.promises import Promises
from actors.host.recovery import Recovery
from actors.host.requests import InvokeRequest
from actors.host.slots import KeySlot, Parked
from journal import metrics
from journal.clock import now_ms
from journal.errors import StatusCode
from journal.kinds import InvocationStatus, InvokeMode, TimerKind
from journal.records import (
    Accept,
    Completion,
    Outcome,
    Output,
    Record,
    StateWrite,
    StatusChange,
    Timer,
)
from journal.retry import retry

log = logging.getLogger("raystate.host")

START_INDEX = -(2**31)  # the completion index a delayed start's timer wakes


class ObjectHost(Recovery, Lifecycle, Awakeables, Outbound, Promises):
    """Hosts one service's invocations: a partition of its keys, or one dedicated key. Its
    parts: ``HostBase`` (state), ``Recovery``, ``Outbound``, ``Awakeables``, ``Promises``,
    ``Lifecycle``."""

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
            return done if req.mode == InvokeMode.CALL else None
        if not known:
            spec = self.definition.handlers.get(req.handler)
            if spec is None:
                return Outcome(
                    False,
                    None,
                    f"unknown handler {req.service}/{req.handler}",
                    StatusCode.NOT_FOUND,
                )
            self._order = max(self._order + 1, time.time_ns())
            accept = Accept(
                req.id,
                req.service,
                req.handler,
                req.key,
                req.route_hash,
                req.input,
                req.idempotency_key,
                req.invoked_by,
                req.created_at_ms,
                self._order,
            )
            if req.delay_ms > 0:
                durable = self._accept_delayed(accept, req.delay_ms)
                if req.mode == InvokeMode.SEND:
                    await durable
                    return None
            else:
                inv = Invocation(accept, spec, fresh=True)
                self._active[inv.id] = inv
                if req.mode == InvokeMode.SEND:
                    self.submit(inv, [])
                self._schedule(inv)
        if req.mode == InvokeMode.SEND:
            running = self._active.get(req.id)
            if running is not None:
                await asyncio.shield(running.durable)
            return None
        return await asyncio.shield(self._outcome(req.id))

    def _accept_delayed(self, accept: Accept, delay_ms: int) -> asyncio.Future[None]:
        fire_at = now_ms() + delay_ms
        timer = Timer(
            f"{accept.id}:start", accept.id, START_INDEX, TimerKind.START, fire_at, self._name
        )
        self._parked[accept.id] = Parked(accept.id, accept.key, TimerKind.START)
        return self.flusher.submit(
            [accept, StatusChange(accept.id, InvocationStatus.SCHEDULED, 0, None, now_ms()), timer]
        )

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
        pending = await retry(
            lambda: self.journal.pending([self.definition.name], ids=[p.id for p in parked]),
            backoff=RELOAD_BACKOFF,
            on_retry=lambda _: log.exception(
                "cannot reload %d parked invocations; trying again", len(parked)
            ),
        )
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
        if (
            parked.reason == TimerKind.START
            or key is None
            or inv.spec is None
            or inv.spec.kind != "exclusive"
        ):
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
                slot.inbox[0] = Parked(head.id, key, InvocationStatus.SUSPENDED)
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
                run = (
                    execute(self, inv, state) if not inv.spec.limits else self._limited(inv, state)
                )
                inv.task = asyncio.ensure_future(run)
                out, durable = await inv.task
                break
            except asyncio.CancelledError:
                me = asyncio.current_task()
                if not inv.killed or (me is not None and me.cancelling()):
                    raise  # the host is closing
                # killed where ``execute`` could not answer (while it was suspending)
                out = Outcome(False, None, KILLED, CANCELLED_CODE)
                durable = self.submit(
                    inv, [Output(inv.id, False, None, KILLED, CANCELLED_CODE, now_ms())]
                )
                break
            except Suspended:
                if inv.awaiting is not None and (
                    inv.awaiting in inv.completions or inv.cancel_pending
                ):
                    continue  # woken while suspending: replay right away
                self._active.pop(inv.id, None)
                self._parked[inv.id] = Parked(inv.id, key, InvocationStatus.SUSPENDED)
                return False
            except Exception:  # state could not be loaded for long, or a bug: try again later
                log.exception("invocation %s could not make progress; retrying", inv.id)
                await asyncio.sleep(1.0)
        if exclusive:
            assert slot is not None
            slot.uncommitted += 1
        self._spawn(self._finish_when_durable(inv, out, durable, slot if exclusive else None))
        return True

    async def _limited(
        self, inv: Invocation, state: dict[str, str] | None
    ) -> tuple[Outcome, asyncio.Future[None]]:
        """``execute`` within ``inv``'s concurrency and rate limits (``actors.host.admission``)."""
        # cancelled before it started (or while it waited to): it ends at once, none of its
        # code runs, so it needs no slot (``Lifecycle.cancel`` stops its wait)
        if (inv.cancel_pending and not inv.entries) or not await self.admission.enter(inv):
            return await execute(self, inv, state)
        try:
            return await execute(self, inv, state)
        finally:
            self.admission.leave(inv)

    async def _finish_when_durable(
        self, inv: Invocation, out: Outcome, durable: asyncio.Future[None], slot: KeySlot | None
    ) -> None:
        await durable
        if slot is not None:
            slot.uncommitted -= 1
        self._finish(inv, out)

    async def _finish_unknown(self, inv: Invocation) -> None:
        msg = f"unknown handler {inv.accept.service}/{inv.accept.handler}"
        await self.submit(inv, [Output(inv.id, False, None, msg, StatusCode.NOT_FOUND)])
        self._finish(inv, Outcome(False, None, msg, StatusCode.NOT_FOUND))

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
                slot.promises = {
                    n[len(PROMISE_STATE) :]: v
                    for n, v in state.items()
                    if n.startswith(PROMISE_STATE)
                }

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

    async def await_completion(
        self, invocation: Invocation, idx: int, records: list[Record]
    ) -> Completion | None:
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
            limited = self.admission.holds(invocation.id)
            if limited:  # a waiting invocation holds no slot of its limits
                self.admission.leave(invocation)
            try:
                await asyncio.wait_for(asyncio.shield(waiter), self.suspend_after)
            except TimeoutError:
                raise Suspended from None
            finally:
                if invocation.resumed_ahead:  # running on now: the flusher may cut its batch
                    invocation.resumed_ahead = False
                    self.actions.end()
            if limited:
                await self.admission.enter(invocation)
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

    def stats(self) -> dict[str, int]:
        return {"active": len(self._active), "parked": len(self._parked), "keys": len(self._slots)}

    async def close(self) -> None:
        self.admission.close()
        if self._local_timers is not None:
            self._local_timers.close()
        for t in list(self._tasks):
            t.cancel()
        for slot in self._slots.values():
            if slot.worker is not None:
                slot.worker.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)

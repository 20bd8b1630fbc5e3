"""The replay engine: one invocation attempt against its journal.

An attempt walks the journal from index 0. While recorded entries remain, every operation must
match the entry at its index (kind and name, and the value for state writes) and takes its
result from there; past the end, operations run for real and are recorded into a buffer that
the host makes durable. Durability points: ``await ctx.run(...)`` returns once its result (with
everything recorded before it) is committed, so a finished action never runs again; before an
action executes, every state change it could have observed from an earlier invocation of the
key (and a completion it was resumed with) is committed, so no side effect runs ahead of what
it depends on; the output is queued with whatever is still buffered and reaches the caller once
committed. Pure
code and state access between steps run ahead; state writes commit atomically with the entries
around them. Every recorded entry is eventually committed (a failed attempt's records too), which
is why writes go straight into the key's working state.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import json
import logging
import time
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from actors.engine.awakeable_ids import AwakeableIds
from actors.engine.failures import (
    ReplayAwareLogger,
    UserBaseException,
    describe,
    report,
    stacktrace,
)
from actors.engine.statereads import StateReads
from actors.host.actions import SyncActions
from actors.sdk.contexts import Awakeable, DeterministicRandom, DurablePromise, WorkflowContext
from actors.sdk.definitions import HandlerSpec, Workflow
from actors.sdk.errors import AlreadyCompletedError, JournalMismatch, RetryPolicy, TerminalError
from actors.sdk.serde import ANY, Serde, check_size, check_text
from actors.steps import runner as steps
from actors.steps.codec import is_marked
from journal import metrics
from journal.records import (
    Accept,
    AttemptFailed,
    Completion,
    Entry,
    Outcome,
    Output,
    Record,
    StateWrite,
    StatusChange,
    Timer,
)


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(eq=False)
class Invocation:
    """An accepted invocation as its host holds it in memory."""

    accept: Accept
    spec: HandlerSpec
    entries: list[Entry] = field(default_factory=list)
    retry_count: int = 0
    accept_durable: bool = False
    durable: asyncio.Future[None] = field(default_factory=asyncio.Future)
    # entries completed later (sleeps ...; negative indexes are retry timers) and their waiters
    completions: dict[int, Completion] = field(default_factory=dict)
    waiters: dict[int, asyncio.Future[None]] = field(default_factory=dict)
    awaiting: int | None = None  # the completion index it waits for, if it waits
    cancel_delivered: bool = False  # a requested cancellation was raised in the handler
    killed: bool = False
    task: asyncio.Future[Any] | None = None  # the running attempt(s), cancelled by a kill
    fresh: bool = False  # accepted by this host just now (not recovered, parked or replayed)
    attempts: int = 0  # attempts started in this host
    ahead: int = 0  # completions it was resumed with whose commit is still under way
    resumed_ahead: bool = False  # resumed so (``SyncActions.begin``), not yet running on

    @property
    def first_run(self) -> bool:
        """In its very first attempt: no earlier attempt can have delivered a send or call of
        it, so the callee's host need not ask the journal whether it saw the request before."""
        return self.fresh and self.attempts == 1

    @property
    def id(self) -> str:
        return self.accept.id

    @property
    def cancel_pending(self) -> bool:
        """A cancellation was requested and not yet raised in the handler."""
        return CANCEL_INDEX in self.completions and not self.cancel_delivered


class Suspended(BaseException):
    """The invocation waits for a completion and leaves memory; its host replays it from the
    journal when the completion arrives. A ``BaseException``, so ``except Exception`` in a
    handler cannot swallow it."""


CANCEL_INDEX = -(2**31) + 1  # the completion index of a cancellation request
CANCELLED = "cancelled"
CANCELLED_CODE = 409
KILLED = "killed"


def cancelled() -> TerminalError:
    return TerminalError(CANCELLED, CANCELLED_CODE)


def callee_id(caller_id: str, idx: int) -> str:
    """The invocation id of the call or send at journal index ``idx``: a replaying caller
    derives the same id, so the callee's host recognises the request and runs it once. (A
    workflow's main replaces it by its run id, itself derived from workflow and key.)"""
    return "inv_" + hashlib.sha256(f"{caller_id}:{idx}".encode()).hexdigest()[:32]


PROMISE_STATE = "$promise:"  # workflow promises are kept as state entries with this prefix


def retry_index(retry_count: int) -> int:
    """The completion index a retry back-off timer wakes (negative: never an entry's)."""
    return -retry_count


class JournalCursor:
    """Walks recorded entries, then records new ones (pure: no I/O, unit-tested alone)."""

    def __init__(self, invocation_id: str, entries: list[Entry]) -> None:
        self.invocation_id = invocation_id
        self.entries = entries
        self.index = 0
        self.buffer: list[Record] = []
        self.unflushed_run = False
        # set once the attempt is leaving (suspended, killed): ``finally`` blocks and
        # ``except BaseException`` in handlers then get it again from every operation
        self.closed: type[BaseException] | None = None
        self.killed: Callable[[], bool] | None = None

    def _check_open(self) -> None:
        if self.closed is not None:
            raise self.closed
        if self.killed is not None and self.killed():
            self.closed = asyncio.CancelledError
            raise self.closed

    @property
    def replaying(self) -> bool:
        return self.index < len(self.entries)

    def replay_cancel(self) -> bool:
        """Consume a journaled cancellation at this position, if there is one."""
        if self.replaying and self.entries[self.index].entry_type == "cancel":
            self.index += 1
            return True
        return False

    def replay(self, entry_type: str, name: str | None) -> Entry | None:
        """The recorded entry for this operation, or None once past the journal's end."""
        self._check_open()
        if self.index >= len(self.entries):
            return None
        entry = self.entries[self.index]
        if entry.entry_type != entry_type or entry.name != name:
            raise JournalMismatch(
                self.invocation_id, self.index,
                _describe(entry.entry_type, entry.name), _describe(entry_type, name),
            )
        self.index += 1
        return entry

    def record(self, entry_type: str, name: str | None, *, result: str | None = None,
               failure: TerminalError | None = None, extra: tuple[Record, ...] = (),
               completed: bool = True) -> Entry:
        self._check_open()
        entry = Entry(
            self.invocation_id, self.index, entry_type, name, result,
            failure.message if failure else None, failure.status_code if failure else None,
            now_ms(), completed,
        )
        self.entries.append(entry)
        self.buffer.append(entry)
        self.buffer.extend(extra)
        self.index += 1
        self.unflushed_run |= entry_type == "run"
        return entry

    def take(self) -> list[Record]:
        """Hand over the buffered records (the caller makes them durable)."""
        out, self.buffer = self.buffer, []
        self.unflushed_run = False
        return out


def _describe(entry_type: str, name: str | None) -> str:
    return f"{entry_type}({name!r})" if name is not None else entry_type


class HostPort(Protocol):
    """What an invocation needs from its host."""

    def submit(self, invocation: Invocation, records: list[Record]) -> asyncio.Future[None]:
        """Queue records for commit (after everything queued before); the future resolves
        once they are durable."""
        ...

    def depends_on_uncommitted(self, invocation: Invocation) -> bool:
        """Whether state this invocation can read, or a completion it was resumed with, is
        not yet committed: then its next action waits for that commit."""
        ...

    @property
    def actions(self) -> SyncActions:
        """Runs ``ctx.run``'s sync functions on threads."""
        ...

    @property
    def name(self) -> str:
        """The host's actor name: timers carry it, so the scheduler knows whom to wake."""
        ...

    async def await_completion(self, invocation: Invocation, idx: int,
                               records: list[Record]) -> Completion | None:
        """Make ``records`` durable, then wait for the completion of entry ``idx``; raise
        ``Suspended`` when that takes longer than the host keeps invocations in memory.
        None: the wait was interrupted by a cancellation request."""
        ...

    def send(self, target: Any, key: str | None, arg: Any, delay: timedelta | float | None,
             invocation_id: str, sender: Invocation
             ) -> tuple[str, str, Callable[[], asyncio.Future[None]]]:
        """Validate a one-way request to another handler (``TerminalError`` on bad input);
        returns the target's name, the callee's invocation id and a function that starts
        delivering it (its future is done once the callee's invocation is durable). The id is
        ``invocation_id`` unless the target names its own (a workflow's main: its run id)."""
        ...

    def pass_on(self, callee: str, kill: bool) -> None:
        """Cancel (or kill) the callee of a call this invocation stops waiting for."""
        ...

    @property
    def awakeables(self) -> AwakeableIds:
        """Makes and checks awakeable ids (signed with the runtime's secret)."""
        ...

    def expect_awakeable(self, invocation: Invocation, idx: int, serde: Serde) -> None:
        """The invocation created an awakeable at ``idx``: resolutions are checked against
        ``serde`` while this host remembers it."""
        ...

    def complete_awakeable(self, invocation: Invocation, idx: int, awakeable_id: str,
                           result: str | None, failure: str | None,
                           after: asyncio.Future[None]) -> asyncio.Future[None]:
        """Deliver the resolution journaled at entry ``idx`` of ``invocation`` once ``after``
        is done (the entry is durable); the verdict (delivered, or refused: 409, 404 ...)
        becomes the entry's completion. Done once that completion is durable; one delivery
        per entry at a time."""
        ...

    def promise_of(self, invocation: Invocation, name: str) -> str | None:
        """The completion JSON of the workflow promise ``name`` if completed (or claimed)."""
        ...

    def claim_promise(self, invocation: Invocation, name: str, data: str) -> bool:
        """Complete the workflow promise ``name`` in memory; False if it was completed before.
        The caller queues the durable write at once."""
        ...

    def watch_promise(self, invocation: Invocation, idx: int, name: str) -> None:
        """Complete entry ``idx`` of ``invocation`` when the promise ``name`` is completed."""
        ...

    def call(self, target: Any, key: str | None, arg: Any, invocation_id: str,
             caller: Invocation) -> tuple[str, str, Serde, Callable[[int], None]]:
        """Validate a call to another handler (``TerminalError`` on bad input, or when it would
        wait for its own key); returns the target's name, the callee's invocation id (as for
        ``send``), its output serde and a function that starts the call for journal entry
        ``idx`` (once that entry is durable). The callee's outcome arrives as the entry's
        completion."""
        ...


class InvocationContext(WorkflowContext):
    """The one concrete context; operations a handler's kind does not allow are refused."""

    def __init__(
        self,
        host: HostPort,
        invocation: Invocation,
        state: dict[str, str] | None,
    ) -> None:
        """``state`` is the key's state this handler sees (name -> JSON): the working state for
        an exclusive handler (its writes go straight in), the committed state for a shared one,
        None for a service."""
        self._host = host
        self._inv = invocation
        self._spec = invocation.spec
        self._cursor = JournalCursor(invocation.id, invocation.entries)
        self._cursor.killed = lambda: invocation.killed
        self._state = state
        self._reads = StateReads()  # where this journal holds each state value already
        self._deliveries: list[asyncio.Future[None]] = []
        self._at: tuple[int, str, str | None] | None = None  # the action running: idx, type, name
        self._logger: logging.Logger | None = None
        self._journaled = len(invocation.entries)  # entries durable before this attempt
        seed = int.from_bytes(hashlib.sha256(invocation.id.encode()).digest()[:8], "big")
        self.rand = DeterministicRandom(seed)

    # -- identity ----------------------------------------------------------------------------

    def invocation_id(self) -> str:
        return self._inv.id

    def key(self) -> str:
        self._require_keyed("key")
        assert self._inv.accept.key is not None
        return self._inv.accept.key

    @property
    def logger(self) -> logging.Logger:  # type: ignore[override]
        """Silent while the handler replays (see ``Context.logger``); made on first use."""
        if self._logger is None:
            name = f"raystate.handler.{self._spec.definition.name}.{self._spec.name}"
            self._logger = ReplayAwareLogger(name, self._inv.id, lambda: self._cursor.replaying)
        return self._logger

    def take_records(self) -> list[Record]:
        return self._cursor.take()

    # -- journaled actions -------------------------------------------------------------------

    async def run(self, name: str, fn: Callable[..., Any], *args: Any,
                  retry_policy: RetryPolicy | None = None, durable_ref: bool = False,
                  **kwargs: Any) -> Any:
        if not isinstance(name, str):
            raise TypeError("ctx.run(name, fn, ...): name must be a string")
        remote = steps.is_remote(fn)  # a Ray task or actor method (actors.steps)
        serde = _return_serde(steps.annotated(fn) if remote else fn)
        self._cancel_point()
        entry = self._cursor.replay("run", name)
        config: steps.StepsConfig = getattr(self._host, "steps", steps.NO_STORE)
        if entry is not None:
            if entry.failure is not None:
                raise TerminalError(entry.failure, entry.failure_code or 500)
            if entry.result is not None and is_marked(entry.result):  # binary, blob or ref
                return await steps.replayed(entry.result, serde, config)
            return serde.load(entry.result) if entry.result is not None else None
        if self._cursor.unflushed_run or self._host.depends_on_uncommitted(self._inv):
            await self._host.submit(self._inv, self._cursor.take())
        failures = 0
        idx, inv = self._cursor.index, self._inv
        t0 = time.monotonic() if remote else 0.0
        self._at = (idx, "run", name)
        step = steps.RemoteStep.make(fn, config, self._spec.definition.name, self._spec.name,
                                     name, inv.id, idx, durable_ref, serde,
                                     adopt=not inv.first_run) if remote else None
        while True:
            try:
                result = await (step.run(args, kwargs) if step is not None
                                else self._action(fn, args, kwargs))
                break
            except TerminalError as e:
                self._cursor.record("run", name, failure=e)
                self._at = None
                await self._durable()
                raise
            except Exception as e:
                if retry_policy is None:
                    raise
                failures += 1
                if retry_policy.exhausted(failures):
                    err = TerminalError(
                        f"ctx.run({name!r}) failed {failures} times: {describe(e)}"
                    )
                    self._cursor.record("run", name, failure=err)
                    self._at = None
                    await self._durable()
                    raise err from e
                await asyncio.sleep(retry_policy.delay(failures))
        if remote:  # a local step's time is in its attempt's (Ray's record costs ~2 us)
            metrics.step_latency(self._spec.definition.name, self._spec.name,
                                 time.monotonic() - t0, remote=True)
        data, value = await steps.journal(result, serde, name, inv.id, idx, config,
                                          durable_ref, step)
        self._cursor.record("run", name, result=data)
        self._at = None
        await self._durable()
        return value

    async def _action(self, fn: Callable[..., Any], args: tuple[Any, ...],
                      kwargs: dict[str, Any]) -> Any:
        """Run a ``ctx.run`` action; a ``BaseException`` it raises that is not raystate's
        own signal comes out as ``UserBaseException`` (see ``actors.engine.failures``)."""
        try:
            if inspect.iscoroutinefunction(fn):
                return await fn(*args, **kwargs)
            result = await self._host.actions.run(fn, *args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            return result
        except (Exception, Suspended, JournalMismatch, asyncio.CancelledError):
            raise
        except BaseException as e:
            raise UserBaseException(e) from e

    def failure_event(self, e: BaseException, retry_count: int,
                      next_retry_at_ms: int | None) -> AttemptFailed:
        """The record of this failed attempt: the journal entry it was at is the action that
        raised, the entry a replay diverged at, else the last entry it reached."""
        at: tuple[int, str, str | None] | None = self._at
        if isinstance(e, JournalMismatch) and e.index < len(self._inv.entries):
            entry = self._inv.entries[e.index]
            at = (e.index, entry.entry_type, entry.name)
        elif at is None and self._cursor.index > 0:
            entry = self._inv.entries[self._cursor.index - 1]
            at = (entry.idx, entry.entry_type, entry.name)
        return AttemptFailed(self._inv.id, retry_count, describe(e), stacktrace(e),
                             at[0] if at else None, at[2] if at else None,
                             at[1] if at else None, next_retry_at_ms, now_ms())

    async def _durable(self) -> None:
        """Guarantee 1: a ``ctx.run`` returns (or raises its journaled ``TerminalError``) only
        once its entry, and everything recorded before it, is committed. Through the host's group
        commit: the flusher batches it with every other invocation's records."""
        await self._host.submit(self._inv, self._cursor.take())

    async def sleep(self, delay: timedelta | float) -> None:
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
        if seconds < 0:
            raise ValueError(f"ctx.sleep: negative delay {delay!r}")
        entry = self._cursor.replay("sleep", None)
        if entry is None:
            idx = self._cursor.index
            fire_at = now_ms() + round(seconds * 1000)
            timer = Timer(f"{self._inv.id}:{idx}", self._inv.id, idx, "sleep", fire_at,
                          self._host.name)
            entry = self._cursor.record("sleep", None, result=str(fire_at), completed=False,
                                        extra=(timer,))
        await self._await_entry(entry)

    def _cancel_point(self) -> None:
        """Where a requested cancellation surfaces (before an action, at a wait): raised once,
        and at the same place on every replay, since the journal records where it was raised."""
        self._cursor._check_open()  # no compensation after a kill
        if self._cursor.replay_cancel():
            self._inv.cancel_delivered = True
            raise cancelled()
        if not self._cursor.replaying and self._inv.cancel_pending:
            self._cursor.record("cancel", None, failure=cancelled())
            self._inv.cancel_delivered = True
            raise cancelled()

    async def _await_entry(self, entry: Entry,
                           start: Callable[[int], None] | None = None) -> Completion:
        """Wait for the completion of ``entry`` (a sleep, a call ...), made durable first;
        ``start`` (if given) is called once the entry is durable and its completion missing.
        A cancellation that surfaces while a call is pending is passed on to the callee."""
        inv = self._inv
        started = entry.idx < self._journaled  # durable before this attempt: maybe started
        try:
            self._cancel_point()
            done = inv.completions.get(entry.idx)
            if done is None:
                records = self._cursor.take()
                if records:
                    await self._host.submit(inv, records)
                if start is not None:
                    start(entry.idx)
                    started = True
                try:
                    done = await self._host.await_completion(inv, entry.idx, [])
                except (Suspended, asyncio.CancelledError) as e:
                    self._cursor.closed = type(e)
                    raise
                if done is None:  # interrupted by a cancellation request
                    self._cancel_point()
                    raise AssertionError("woken without a completion or a cancellation")
            return done
        except TerminalError:
            if entry.entry_type == "call" and started and entry.idx not in inv.completions:
                assert entry.result is not None
                self._host.pass_on(json.loads(entry.result), kill=False)
            raise

    def object_send(self, handler: Any, key: str, arg: Any = None, *,
                    delay: timedelta | float | None = None) -> str:
        """Send to a virtual-object handler without waiting for it; returns the callee's
        invocation id. Delivered exactly once: the id derives from this invocation and the
        journal index, so a replay re-sends the same invocation and the callee ignores it."""
        return self._send(handler, key, arg, delay)

    def service_send(self, handler: Any, arg: Any = None, *,
                     delay: timedelta | float | None = None) -> str:
        """Like ``object_send``, for a service handler."""
        return self._send(handler, None, arg, delay)

    def workflow_send(self, handler: Any, key: str, arg: Any = None, *,
                      delay: timedelta | float | None = None) -> str:
        """Like ``object_send``, for a workflow handler (``key``: the workflow id)."""
        return self._send(handler, key, arg, delay)

    def _send(self, handler: Any, key: str | None, arg: Any,
              delay: timedelta | float | None) -> str:
        target, callee, deliver = self._host.send(
            handler, key, arg, delay, callee_id(self._inv.id, self._cursor.index), self._inv)
        if self._cursor.replay("send", target) is None:
            self._cursor.record("send", target, result=json.dumps(callee))
        self._deliveries.append(deliver())
        return callee

    async def object_call(self, handler: Any, key: str, arg: Any = None) -> Any:
        """Call a virtual-object handler and wait for its result (its ``TerminalError`` is
        raised here). Journaled: a replay never starts a second callee invocation."""
        return await self._call(handler, key, arg)

    async def service_call(self, handler: Any, arg: Any = None) -> Any:
        """Call a service handler and wait for its result (see ``object_call``)."""
        return await self._call(handler, None, arg)

    async def workflow_call(self, handler: Any, key: str, arg: Any = None) -> Any:
        """Call a workflow handler (``key``: the workflow id) and wait for its result."""
        return await self._call(handler, key, arg)

    def object_client(self, obj: Any, key: str) -> CallProxy:
        """``await ctx.object_client(counter, "bob").add(1)``: a key's handlers as methods."""
        return CallProxy(self, _service_name(obj), key)

    def service_client(self, service: Any) -> CallProxy:
        """``await ctx.service_client(payments).charge(order)``."""
        return CallProxy(self, _service_name(service), None)

    def workflow_client(self, workflow: Any, key: str) -> CallProxy:
        return CallProxy(self, _service_name(workflow), key)

    async def _call(self, handler: Any, key: str | None, arg: Any) -> Any:
        self._cancel_point()
        target, callee, output, start = self._host.call(
            handler, key, arg, callee_id(self._inv.id, self._cursor.index), self._inv)
        entry = self._cursor.replay("call", target)
        if entry is None:
            entry = self._cursor.record("call", target, result=json.dumps(callee),
                                        completed=False)
        done = await self._await_entry(entry, start)
        if done.failure is not None:
            raise TerminalError(done.failure, done.failure_code or 500)
        return output.load(done.result) if done.result is not None else None

    # -- awakeables and workflow promises ----------------------------------------------------

    def awakeable(self, type_hint: Any = None) -> tuple[str, Awakeable]:
        serde = Serde(type_hint) if type_hint is not None else ANY
        entry = self._cursor.replay("awakeable", None)
        if entry is None:
            entry = self._cursor.record("awakeable", None, completed=False)
            self._cursor.unflushed_run = True  # durable before the next action hands it out
        self._host.expect_awakeable(self._inv, entry.idx, serde)
        return self._host.awakeables.make(self._inv.id, entry.idx), _Awakeable(self, entry, serde)

    async def _await_awakeable(self, entry: Entry, serde: Serde) -> Any:
        done = await self._await_entry(entry)
        if done.failure is not None:
            raise TerminalError(done.failure, done.failure_code or 500)
        return _decode(serde, done.result, "awakeable value")

    def resolve_awakeable(self, awakeable_id: str, value: Any = None) -> Awaitable[None]:
        return self._complete_awakeable(awakeable_id, _json(value, "awakeable value"), None)

    def reject_awakeable(self, awakeable_id: str, reason: str) -> Awaitable[None]:
        return self._complete_awakeable(awakeable_id, None, str(reason))

    def _complete_awakeable(self, awk_id: str, result: str | None,
                            failure: str | None) -> _Resolution:
        """Journal the resolution (an entry that completes later, like a call), deliver it
        once the entry is durable, and hand back the verdict to await. The handler's output
        waits for the delivery either way (``settle``)."""
        self._host.awakeables.parse(awk_id)
        data = json.dumps({"value": json.loads(result) if result is not None else None}
                          if failure is None else {"failure": failure})
        entry = self._cursor.replay("complete_awakeable", awk_id)
        if entry is None:
            entry = self._cursor.record("complete_awakeable", awk_id, result=data,
                                        completed=False)
        elif entry.result != data:
            raise JournalMismatch(self._inv.id, entry.idx,
                                  f"complete_awakeable({awk_id!r}, {entry.result})",
                                  f"complete_awakeable({awk_id!r}, {data})")
        # journaled as completed (before resolutions had a verdict), or delivered before
        if not entry.completed and entry.idx not in self._inv.completions:
            durable = self._host.submit(self._inv, self._cursor.take())
            self._deliveries.append(self._host.complete_awakeable(
                self._inv, entry.idx, awk_id, result, failure, durable))
        return _Resolution(self, entry)

    async def _await_resolution(self, entry: Entry) -> None:
        if entry.completed:
            return
        done = await self._await_entry(entry)
        if done.failure is not None:
            code = done.failure_code or 500
            raise (AlreadyCompletedError if code == 409 else TerminalError)(done.failure, code)

    def promise(self, name: str, type_hint: Any = None) -> DurablePromise:
        if not isinstance(self._spec.definition, Workflow):
            raise TerminalError(f"ctx.promise: {self._spec.target} is not a workflow handler")
        if not isinstance(name, str) or not name:
            raise TypeError("ctx.promise(name): name must be a non-empty string")
        return _Promise(self, name, Serde(type_hint) if type_hint is not None else ANY)

    async def _promise_value(self, name: str, serde: Serde) -> Any:
        self._cancel_point()
        entry = self._cursor.replay("promise", name)
        if entry is None:
            data = self._host.promise_of(self._inv, name)
            entry = self._cursor.record("promise", name, result=data, completed=data is not None)
        data = entry.result
        if not entry.completed:
            inv, idx = self._inv, entry.idx
            done = await self._await_entry(
                entry, lambda _: self._host.watch_promise(inv, idx, name))
            data = done.result
        return _promise_result(name, data, serde)

    async def _promise_peek(self, name: str, serde: Serde) -> Any:
        entry = self._cursor.replay("peek_promise", name)
        if entry is None:
            entry = self._cursor.record("peek_promise", name,
                                        result=self._host.promise_of(self._inv, name))
        return None if entry.result is None else _promise_result(name, entry.result, serde)

    def _complete_promise(self, name: str, data: str) -> None:
        entry = self._cursor.replay("complete_promise", name)
        if entry is not None:
            if entry.failure is not None:
                raise AlreadyCompletedError(entry.failure, entry.failure_code or 409)
            return
        if not self._host.claim_promise(self._inv, name, data):
            err = AlreadyCompletedError(
                f"promise {name!r} of workflow {self._inv.accept.key!r} is already completed")
            self._cursor.record("complete_promise", name, failure=err)
            raise err
        assert self._inv.accept.key is not None
        write = StateWrite(self._spec.definition.name, self._inv.accept.key,
                           PROMISE_STATE + name, data)
        self._cursor.record("complete_promise", name, result=data, extra=(write,))
        self._host.submit(self._inv, self._cursor.take())  # queued before anyone sees it

    async def settle(self) -> None:
        """Wait until every send of this attempt reached its callee durably. Without a pause
        when they all have (``gather`` would take a loop turn even then, and let the flusher cut
        its batch before the output joins it)."""
        waiting = [d for d in self._deliveries if not d.done()]
        if waiting:
            await asyncio.gather(*waiting)
        for d in self._deliveries:
            d.result()  # a failed delivery fails the attempt, as gather would

    async def time(self) -> float:
        entry = self._cursor.replay("time", None)
        if entry is None:
            entry = self._cursor.record("time", None, result=str(now_ms()))
        assert entry.result is not None
        return int(entry.result) / 1000

    # -- state -------------------------------------------------------------------------------

    def _require_keyed(self, op: str) -> None:
        if self._state is None:
            raise TerminalError(
                f"{op}: handler {self._spec.target} belongs to a Service, which has no key or "
                "state; use a VirtualObject"
            )

    def _require_exclusive(self, op: str) -> None:
        self._require_keyed(op)
        if self._spec.kind != "exclusive":
            raise TerminalError(
                f"ctx.{op}: handler {self._spec.target} is shared and may only read state"
            )

    def _current(self, name: str) -> str | None:
        assert self._state is not None
        return self._state.get(name)

    def _names(self) -> list[str]:
        assert self._state is not None
        return sorted(n for n in self._state if not n.startswith(PROMISE_STATE))

    def _apply(self, name: str, value: str | None) -> None:
        assert self._state is not None
        if value is None:
            self._state.pop(name, None)
        else:
            self._state[name] = value

    async def get(self, name: str, default: Any = None, *, type_hint: Any = None) -> Any:
        self._require_keyed("ctx.get")
        entry = self._cursor.replay("get_state", name)
        if entry is None:
            data = self._current(name)
            self._cursor.record("get_state", name,
                                result=self._reads.journal(name, self._cursor.index, data))
        else:
            data = self._reads.resolve(entry, self._inv.entries)
        if data is None:
            return default
        return (Serde(type_hint) if type_hint is not None else ANY).load(data)

    async def state_keys(self) -> list[str]:
        self._require_keyed("ctx.state_keys")
        entry = self._cursor.replay("get_state_keys", None)
        if entry is None:
            entry = self._cursor.record("get_state_keys", None, result=json.dumps(self._names()))
        assert entry.result is not None
        return list(json.loads(entry.result))

    def _write(self, entry_type: str, name: str, value: str | None) -> None:
        entry = self._cursor.replay(entry_type, name)
        if entry is not None:
            if entry.result != value:
                raise JournalMismatch(
                    self._inv.id, entry.idx, f"{entry_type}({name!r}, {entry.result})",
                    f"{entry_type}({name!r}, {value})",
                )
            self._reads.wrote(name, entry.idx, value)
            return  # already applied when it was first recorded
        assert self._inv.accept.key is not None
        write = StateWrite(self._spec.definition.name, self._inv.accept.key, name, value)
        self._reads.wrote(name, self._cursor.index, value)
        self._cursor.record(entry_type, name, result=value, extra=(write,))
        self._apply(name, value)

    def set(self, name: str, value: Any) -> None:
        self._require_exclusive("set")
        if not isinstance(name, str):
            raise TypeError("ctx.set(name, value): name must be a string")
        if name.startswith(PROMISE_STATE):
            raise TerminalError(f"ctx.set: state names starting with {PROMISE_STATE!r} are "
                                "reserved for workflow promises", 400)
        check_text(name, "ctx.set: state name")
        try:
            data = ANY.dump(value)
        except Exception as e:
            raise TerminalError(f"ctx.set({name!r}): value is not JSON-serializable: {e}") from None
        check_size(data, f"ctx.set({name!r}): the value")  # 413, as for every payload
        self._write("set_state", name, data)

    def clear(self, name: str) -> None:
        self._require_exclusive("clear")
        self._write("clear_state", name, None)

    def clear_all(self) -> None:
        self._require_exclusive("clear_all")
        self._reads.cleared_all()
        entry = self._cursor.replay("clear_all_state", None)
        if entry is not None:
            return
        assert self._inv.accept.key is not None
        service, key = self._spec.definition.name, self._inv.accept.key
        writes = tuple(StateWrite(service, key, n, None) for n in self._names())
        self._cursor.record("clear_all_state", None, extra=writes)
        for w in writes:
            self._apply(w.name, None)


class _Awakeable(Awakeable):
    def __init__(self, ctx: InvocationContext, entry: Entry, serde: Serde) -> None:
        self._ctx, self._entry, self._serde = ctx, entry, serde

    def __await__(self) -> Any:
        return self._ctx._await_awakeable(self._entry, self._serde).__await__()


class _Resolution:
    """What ``ctx.resolve_awakeable`` / ``ctx.reject_awakeable`` return: delivered without
    being awaited; awaiting it waits for the delivery and raises its refusal."""

    def __init__(self, ctx: InvocationContext, entry: Entry) -> None:
        self._ctx, self._entry = ctx, entry

    def __await__(self) -> Any:
        return self._ctx._await_resolution(self._entry).__await__()


class _Promise(DurablePromise):
    def __init__(self, ctx: InvocationContext, name: str, serde: Serde) -> None:
        self._ctx, self._name, self._serde = ctx, name, serde

    async def value(self) -> Any:
        return await self._ctx._promise_value(self._name, self._serde)

    async def peek(self) -> Any:
        return await self._ctx._promise_peek(self._name, self._serde)

    def resolve(self, value: Any = None) -> None:
        data = _json(value, f"value of promise {self._name!r}")
        self._ctx._complete_promise(self._name, json.dumps({"value": json.loads(data)}))

    def reject(self, message: str) -> None:
        self._ctx._complete_promise(self._name, json.dumps({"failure": str(message)}))


def _json(value: Any, what: str) -> str:
    try:
        data = ANY.dump(value)
    except Exception as e:
        raise TerminalError(f"{what} is not JSON-serializable: {e}", 400) from None
    return check_size(data, what)


def _decode(serde: Serde, data: str | None, what: str) -> Any:
    try:
        return serde.load(data) if data is not None else None
    except Exception as e:
        raise TerminalError(f"{what} does not validate: {e}", 400) from None


def _promise_result(name: str, data: str | None, serde: Serde) -> Any:
    """Decode a promise completion ({"value": v} or {"failure": message})."""
    completion = json.loads(data) if data is not None else {"value": None}
    if "failure" in completion:
        raise TerminalError(str(completion["failure"]))
    return _decode(serde, json.dumps(completion["value"]), f"value of promise {name!r}")


class CallProxy:
    """Handlers of one service (and key) as awaitable methods: ``await proxy.add(1)``."""

    def __init__(self, ctx: InvocationContext, service: str, key: str | None) -> None:
        self._ctx, self._service, self._key = ctx, service, key

    def __getattr__(self, handler: str) -> Callable[..., Any]:
        if handler.startswith("_"):
            raise AttributeError(handler)

        def call(arg: Any = None) -> Any:
            return self._ctx._call(f"{self._service}/{handler}", self._key, arg)

        return call


def _service_name(obj: Any) -> str:
    if isinstance(obj, str):
        return obj
    name = getattr(obj, "name", None)
    if not isinstance(name, str):
        raise TypeError(f"expected a service definition or its name, got {obj!r}")
    return name


@functools.lru_cache(maxsize=1024)
def _return_serde(fn: Callable[..., Any]) -> Serde:
    """Decode ``ctx.run`` results as the action's return annotation, so that a first run and a
    replay return the same type; plain JSON when there is none."""
    try:
        hint = typing.get_type_hints(fn).get("return")
    except Exception:
        return ANY
    if hint is None or hint is type(None):
        return ANY
    try:
        return Serde(hint)
    except Exception:
        return ANY


async def execute(
    host: HostPort, inv: Invocation, state: dict[str, str] | None
) -> tuple[Outcome, asyncio.Future[None]]:
    """Run ``inv`` to its outcome, retrying failed attempts from the journal per policy.

    Returns the outcome and the future of its commit: the outcome is queued behind every record
    of the invocation, and must not be shown to anyone before that future resolves. Raises
    ``Suspended`` when the invocation left memory to wait (for a sleep, or a retry back-off,
    which is a durable timer too: a restart neither loses a retry nor fires it early).
    """
    spec = inv.spec
    while True:
        inv.attempts += 1
        ctx = InvocationContext(host, inv, state)
        started = time.monotonic()
        out: Outcome | None
        failed: list[Record] = []
        try:
            try:
                args = (spec.input.load(inv.accept.input),) if spec.takes_arg else ()
            except Exception as e:
                raise TerminalError(f"input of {spec.target} does not validate: {e}", 400) from None
            if inv.killed:
                raise asyncio.CancelledError
            if inv.cancel_pending and not inv.entries:  # cancelled before it started
                raise cancelled()
            result = await spec.fn(ctx, *args)
            await ctx.settle()
            out = Outcome(True, spec.output.output_json(result, spec.target))
        except Suspended:
            await host.submit(inv, [*ctx.take_records(), StatusChange(
                inv.id, "suspended", inv.retry_count, None, now_ms())])
            raise
        except asyncio.CancelledError as e:
            me = asyncio.current_task()
            if inv.killed:
                out = Outcome(False, None, KILLED, CANCELLED_CODE)  # its records still commit
            elif me is None or me.cancelling():
                raise  # the host is closing
            else:  # raised by user code, not by a cancellation of this task: a failure
                out, failed = _attempt_failed(host, inv, ctx, e)
        except TerminalError as e:
            out = Outcome(False, None, e.message, e.status_code)
        except BaseException as e:  # Exception, JournalMismatch, SystemExit ... of user code
            out, failed = _attempt_failed(host, inv, ctx, e)
        metrics.attempt_latency(spec.definition.name, spec.name, time.monotonic() - started)
        if out is None:  # back off; a cancellation request ends that early: the next attempt
            # meets it
            await host.await_completion(inv, retry_index(inv.retry_count),
                                        [*ctx.take_records(), *failed])
            continue
        records = [*ctx.take_records(), *failed,
                   Output(inv.id, out.ok, out.output, out.failure, out.failure_code, now_ms())]
        return out, host.submit(inv, records)


def _attempt_failed(host: HostPort, inv: Invocation, ctx: InvocationContext,
                    e: BaseException) -> tuple[Outcome | None, list[Record]]:
    """Count a failed attempt, log it (once, with its traceback) and say what follows: the
    outcome if it ends the invocation, else None and the records of its retry back-off (a
    durable timer) to commit while waiting. Either way the attempt's ``AttemptFailed``."""
    policy = inv.spec.policy
    inv.retry_count += 1
    failure = describe(e)
    out = None
    if policy.exhausted(inv.retry_count):
        out = Outcome(False, None, f"gave up after {inv.retry_count} attempts: {failure}")
    elif inv.cancel_pending:  # it failed before it could see the cancellation
        out = Outcome(False, None, f"{CANCELLED} (its last attempt failed: {failure})",
                      CANCELLED_CODE)
    if out is not None:
        event = ctx.failure_event(e, inv.retry_count, None)
        report(event, inv.spec.target, e, None)
        return out, [event]
    delay = policy.delay(inv.retry_count)
    fire_at = now_ms() + round(delay * 1000)
    event = ctx.failure_event(e, inv.retry_count, fire_at)
    report(event, inv.spec.target, e, delay)
    timer = Timer(f"{inv.id}:retry:{inv.retry_count}", inv.id, retry_index(inv.retry_count),
                  "retry", fire_at, host.name)
    status = StatusChange(inv.id, "backing-off", inv.retry_count, failure, now_ms())
    return None, [event, status, timer]

"""The replay engine: one invocation attempt against its journal.

An attempt walks the journal from index 0. While recorded entries remain, every operation must
match the entry at its index (kind and name, and the value for state writes) and takes its
result from there; past the end, operations run for real and are recorded into a buffer that
the host makes durable. Durability points: ``await ctx.run(...)`` returns once its result (with
everything recorded before it) is committed, so a finished action never runs again; before an
action executes, every state change it could have observed from an earlier invocation of the
key (and a completion it was resumed with) is committed, so no side effect runs ahead of what
it depends on; the output is queued with whatever is still buffered and reaches the caller once
committed. Pure code and state access between steps run ahead; state writes commit atomically
with the entries around them. Every recorded entry is eventually committed (a failed attempt's
records too), which is why writes go straight into the key's working state.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from actors.engine.calls import CallProxy, return_serde, service_name
from actors.engine.cursor import JournalCursor
from actors.engine.failures import ReplayAwareLogger, UserBaseException, describe, stacktrace
from actors.engine.invocation import (
    PROMISE_STATE,
    Invocation,
    Suspended,
    callee_id,
    cancelled,
)
from actors.engine.ports import HostPort
from actors.engine.promises import AwakeablesAndPromises
from actors.engine.statereads import StateReads
from actors.sdk.contexts import DeterministicRandom, WorkflowContext
from actors.sdk.errors import JournalMismatch, RetryPolicy, TerminalError
from actors.sdk.serde import ANY, Serde, check_size, check_text
from actors.steps import runner as steps
from actors.steps.codec import is_marked
from journal import metrics
from journal.clock import now_ms
from journal.errors import StatusCode
from journal.kinds import EntryType, TimerKind
from journal.records import AttemptFailed, Completion, Entry, Record, StateWrite, Timer


class InvocationContext(AwakeablesAndPromises, WorkflowContext):
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
        self._rand: DeterministicRandom | None = None

    @property
    def rand(self) -> DeterministicRandom:
        """Seeded from the invocation id on first use (most handlers never draw a number, and
        seeding a Mersenne Twister per invocation showed in the hot key's host profile)."""
        if self._rand is None:
            seed = int.from_bytes(hashlib.sha256(self._inv.id.encode()).digest()[:8], "big")
            self._rand = DeterministicRandom(seed)
        return self._rand

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

    async def run(
        self,
        name: str,
        fn: Callable[..., Any],
        *args: Any,
        retry_policy: RetryPolicy | None = None,
        durable_ref: bool = False,
        **kwargs: Any,
    ) -> Any:
        if not isinstance(name, str):
            raise TypeError("ctx.run(name, fn, ...): name must be a string")
        remote = steps.is_remote(fn)  # a Ray task or actor method (actors.steps)
        serde = return_serde(steps.annotated(fn) if remote else fn)
        self._cancel_point()
        entry = self._cursor.replay(EntryType.RUN, name)
        config: steps.StepsConfig = getattr(self._host, "steps", steps.NO_STORE)
        if entry is not None:
            if entry.failure is not None:
                raise TerminalError(entry.failure, entry.failure_code or StatusCode.INTERNAL)
            if entry.result is not None and is_marked(entry.result):  # binary, blob or ref
                return await steps.replayed(entry.result, serde, config)
            return serde.load(entry.result) if entry.result is not None else None
        if self._cursor.unflushed_run or self._host.depends_on_uncommitted(self._inv):
            await self._host.submit(self._inv, self._cursor.take())
        failures = 0
        idx, inv = self._cursor.index, self._inv
        t0 = time.monotonic() if remote else 0.0
        self._at = (idx, EntryType.RUN, name)
        step = (
            steps.RemoteStep.make(
                fn,
                config,
                self._spec.definition.name,
                self._spec.name,
                name,
                inv.id,
                idx,
                durable_ref,
                serde,
                adopt=not inv.first_run,
            )
            if remote
            else None
        )
        while True:
            try:
                result = await (
                    step.run(args, kwargs) if step is not None else self._action(fn, args, kwargs)
                )
                break
            except TerminalError as e:
                self._cursor.record(EntryType.RUN, name, failure=e)
                self._at = None
                await self._durable()
                raise
            except Exception as e:
                if retry_policy is None:
                    raise
                failures += 1
                if retry_policy.exhausted(failures):
                    err = TerminalError(f"ctx.run({name!r}) failed {failures} times: {describe(e)}")
                    self._cursor.record(EntryType.RUN, name, failure=err)
                    self._at = None
                    await self._durable()
                    raise err from e
                await asyncio.sleep(retry_policy.delay(failures))
        if remote:  # a local step's time is in its attempt's (Ray's record costs ~2 us)
            metrics.step_latency(
                self._spec.definition.name, self._spec.name, time.monotonic() - t0, remote=True
            )
        data, value = await steps.journal(
            result, serde, name, inv.id, idx, config, durable_ref, step
        )
        self._cursor.record(EntryType.RUN, name, result=data)
        self._at = None
        await self._durable()
        return value

    async def _action(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Run a ``ctx.run`` action; a ``BaseException`` it raises that is not raystate's
        own signal comes out as ``UserBaseException`` (see ``actors.engine.failures``)."""
        try:
            if inspect.iscoroutinefunction(fn):
                return await fn(*args, **kwargs)
            result = await self._host.run_sync(fn, *args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            return result
        except (Exception, Suspended, JournalMismatch, asyncio.CancelledError):
            raise
        except BaseException as e:
            raise UserBaseException(e) from e

    def failure_event(
        self, e: BaseException, retry_count: int, next_retry_at_ms: int | None
    ) -> AttemptFailed:
        """The record of this failed attempt: the journal entry it was at is the action that
        raised, the entry a replay diverged at, else the last entry it reached."""
        at: tuple[int, str, str | None] | None = self._at
        if isinstance(e, JournalMismatch) and e.index < len(self._inv.entries):
            entry = self._inv.entries[e.index]
            at = (e.index, entry.entry_type, entry.name)
        elif at is None and self._cursor.index > 0:
            entry = self._inv.entries[self._cursor.index - 1]
            at = (entry.idx, entry.entry_type, entry.name)
        return AttemptFailed(
            self._inv.id,
            retry_count,
            describe(e),
            stacktrace(e),
            at[0] if at else None,
            at[2] if at else None,
            at[1] if at else None,
            next_retry_at_ms,
            now_ms(),
        )

    async def _durable(self) -> None:
        """Guarantee 1: a ``ctx.run`` returns (or raises its journaled ``TerminalError``) only
        once its entry, and everything recorded before it, is committed. Through the host's group
        commit: the flusher batches it with every other invocation's records."""
        await self._host.submit(self._inv, self._cursor.take())

    async def sleep(self, delay: timedelta | float) -> None:
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
        if seconds < 0:
            raise ValueError(f"ctx.sleep: negative delay {delay!r}")
        entry = self._cursor.replay(EntryType.SLEEP, None)
        if entry is None:
            idx = self._cursor.index
            fire_at = now_ms() + round(seconds * 1000)
            timer = Timer(
                f"{self._inv.id}:{idx}",
                self._inv.id,
                idx,
                TimerKind.SLEEP,
                fire_at,
                self._host.name,
            )
            entry = self._cursor.record(
                EntryType.SLEEP, None, result=str(fire_at), completed=False, extra=(timer,)
            )
        await self._await_entry(entry)

    def _cancel_point(self) -> None:
        """Where a requested cancellation surfaces (before an action, at a wait): raised once,
        and at the same place on every replay, since the journal records where it was raised."""
        self._cursor._check_open()  # no compensation after a kill
        if self._cursor.replay_cancel():
            self._inv.cancel_delivered = True
            raise cancelled()
        if not self._cursor.replaying and self._inv.cancel_pending:
            self._cursor.record(EntryType.CANCEL, None, failure=cancelled())
            self._inv.cancel_delivered = True
            raise cancelled()

    async def _await_entry(
        self, entry: Entry, start: Callable[[int], None] | None = None
    ) -> Completion:
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
            if entry.entry_type == EntryType.CALL and started and entry.idx not in inv.completions:
                assert entry.result is not None
                self._host.pass_on(json.loads(entry.result), kill=False)
            raise

    def object_send(
        self, handler: Any, key: str, arg: Any = None, *, delay: timedelta | float | None = None
    ) -> str:
        """Send to a virtual-object handler without waiting for it; returns the callee's
        invocation id. Delivered exactly once: the id derives from this invocation and the
        journal index, so a replay re-sends the same invocation and the callee ignores it."""
        return self._send(handler, key, arg, delay)

    def service_send(
        self, handler: Any, arg: Any = None, *, delay: timedelta | float | None = None
    ) -> str:
        """Like ``object_send``, for a service handler."""
        return self._send(handler, None, arg, delay)

    def workflow_send(
        self, handler: Any, key: str, arg: Any = None, *, delay: timedelta | float | None = None
    ) -> str:
        """Like ``object_send``, for a workflow handler (``key``: the workflow id)."""
        return self._send(handler, key, arg, delay)

    def _send(
        self, handler: Any, key: str | None, arg: Any, delay: timedelta | float | None
    ) -> str:
        target, callee, deliver = self._host.send(
            handler, key, arg, delay, callee_id(self._inv.id, self._cursor.index), self._inv
        )
        if self._cursor.replay(EntryType.SEND, target) is None:
            self._cursor.record(EntryType.SEND, target, result=json.dumps(callee))
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
        return CallProxy(self, service_name(obj), key)

    def service_client(self, service: Any) -> CallProxy:
        """``await ctx.service_client(payments).charge(order)``."""
        return CallProxy(self, service_name(service), None)

    def workflow_client(self, workflow: Any, key: str) -> CallProxy:
        return CallProxy(self, service_name(workflow), key)

    async def _call(self, handler: Any, key: str | None, arg: Any) -> Any:
        self._cancel_point()
        target, callee, output, start = self._host.call(
            handler, key, arg, callee_id(self._inv.id, self._cursor.index), self._inv
        )
        entry = self._cursor.replay(EntryType.CALL, target)
        if entry is None:
            entry = self._cursor.record(
                EntryType.CALL, target, result=json.dumps(callee), completed=False
            )
        done = await self._await_entry(entry, start)
        if done.failure is not None:
            raise TerminalError(done.failure, done.failure_code or StatusCode.INTERNAL)
        return output.load(done.result) if done.result is not None else None

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
        entry = self._cursor.replay(EntryType.TIME, None)
        if entry is None:
            entry = self._cursor.record(EntryType.TIME, None, result=str(now_ms()))
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
        entry = self._cursor.replay(EntryType.GET_STATE, name)
        if entry is None:
            data = self._current(name)
            self._cursor.record(
                EntryType.GET_STATE,
                name,
                result=self._reads.journal(name, self._cursor.index, data),
            )
        else:
            data = self._reads.resolve(entry, self._inv.entries)
        if data is None:
            return default
        return (Serde(type_hint) if type_hint is not None else ANY).load(data)

    async def state_keys(self) -> list[str]:
        self._require_keyed("ctx.state_keys")
        entry = self._cursor.replay(EntryType.GET_STATE_KEYS, None)
        if entry is None:
            entry = self._cursor.record(
                EntryType.GET_STATE_KEYS, None, result=json.dumps(self._names())
            )
        assert entry.result is not None
        return list(json.loads(entry.result))

    def _write(self, entry_type: EntryType, name: str, value: str | None) -> None:
        entry = self._cursor.replay(entry_type, name)
        if entry is not None:
            if entry.result != value:
                raise JournalMismatch(
                    self._inv.id,
                    entry.idx,
                    f"{entry_type}({name!r}, {entry.result})",
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
            raise TerminalError(
                f"ctx.set: state names starting with {PROMISE_STATE!r} are "
                "reserved for workflow promises",
                StatusCode.BAD_REQUEST,
            )
        check_text(name, "ctx.set: state name")
        try:
            data = ANY.dump(value)
        except Exception as e:
            raise TerminalError(f"ctx.set({name!r}): value is not JSON-serializable: {e}") from None
        check_size(data, f"ctx.set({name!r}): the value")  # 413, as for every payload
        self._write(EntryType.SET_STATE, name, data)

    def clear(self, name: str) -> None:
        self._require_exclusive("clear")
        self._write(EntryType.CLEAR_STATE, name, None)

    def clear_all(self) -> None:
        self._require_exclusive("clear_all")
        self._reads.cleared_all()
        entry = self._cursor.replay(EntryType.CLEAR_ALL_STATE, None)
        if entry is not None:
            return
        assert self._inv.accept.key is not None
        service, key = self._spec.definition.name, self._inv.accept.key
        writes = tuple(StateWrite(service, key, n, None) for n in self._names())
        self._cursor.record(EntryType.CLEAR_ALL_STATE, None, extra=writes)
        for w in writes:
            self._apply(w.name, None)

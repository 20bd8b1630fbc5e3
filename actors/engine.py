"""The replay engine: one invocation attempt against its journal.

An attempt walks the journal from index 0. While recorded entries remain, every operation must
match the entry at its index (kind and name, and the value for state writes) and takes its
result from there; past the end, operations run for real and are recorded into a buffer that
the host makes durable. Durability points: before a ``ctx.run`` action executes, every earlier
``run`` result -- and every state change this action could have observed from an earlier
invocation of the key -- is committed, so no side effect runs ahead of what it depends on; the
output is queued with whatever is still buffered and reaches the caller once committed. Pure
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
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from actors.contexts import DeterministicRandom, ObjectContext
from actors.definitions import HandlerSpec
from actors.errors import JournalMismatch, RetryPolicy, TerminalError
from actors.serde import ANY, Serde
from journal.records import (
    Accept,
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
    waiters: dict[int, asyncio.Future[Completion]] = field(default_factory=dict)
    awaiting: int | None = None  # the completion index it waits for, if it waits

    @property
    def id(self) -> str:
        return self.accept.id


class Suspended(BaseException):
    """The invocation waits for a completion and leaves memory; its host replays it from the
    journal when the completion arrives. A ``BaseException``, so ``except Exception`` in a
    handler cannot swallow it."""


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

    @property
    def replaying(self) -> bool:
        return self.index < len(self.entries)

    def replay(self, entry_type: str, name: str | None) -> Entry | None:
        """The recorded entry for this operation, or None once past the journal's end."""
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
        """Whether state this invocation can read includes changes not yet committed."""
        ...

    @property
    def name(self) -> str:
        """The host's actor name: timers carry it, so the scheduler knows whom to wake."""
        ...

    async def await_completion(self, invocation: Invocation, idx: int,
                               records: list[Record]) -> Completion:
        """Make ``records`` durable, then wait for the completion of entry ``idx``; raise
        ``Suspended`` when that takes longer than the host keeps invocations in memory."""
        ...

    def send(self, target: Any, key: str | None, arg: Any, delay: timedelta | float | None,
             invocation_id: str, invoked_by: str
             ) -> tuple[str, Callable[[], asyncio.Future[None]]]:
        """Validate a one-way request to another handler (``TerminalError`` on bad input);
        returns the target's name and a function that starts delivering it under
        ``invocation_id`` (its future is done once the callee's invocation is durable)."""
        ...


class InvocationContext(ObjectContext):
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
        self._state = state
        self._deliveries: list[asyncio.Future[None]] = []
        seed = int.from_bytes(hashlib.sha256(invocation.id.encode()).digest()[:8], "big")
        self.rand = DeterministicRandom(seed)

    # -- identity ----------------------------------------------------------------------------

    def invocation_id(self) -> str:
        return self._inv.id

    def key(self) -> str:
        self._require_keyed("key")
        assert self._inv.accept.key is not None
        return self._inv.accept.key

    def take_records(self) -> list[Record]:
        return self._cursor.take()

    # -- journaled actions -------------------------------------------------------------------

    async def run(self, name: str, fn: Callable[..., Any], *args: Any,
                  retry_policy: RetryPolicy | None = None, **kwargs: Any) -> Any:
        if not isinstance(name, str):
            raise TypeError("ctx.run(name, fn, ...): name must be a string")
        serde = _return_serde(fn)
        entry = self._cursor.replay("run", name)
        if entry is not None:
            if entry.failure is not None:
                raise TerminalError(entry.failure, entry.failure_code or 500)
            return serde.load(entry.result) if entry.result is not None else None
        if self._cursor.unflushed_run or self._host.depends_on_uncommitted(self._inv):
            await self._host.submit(self._inv, self._cursor.take())
        failures = 0
        while True:
            try:
                if inspect.iscoroutinefunction(fn):
                    result = await fn(*args, **kwargs)
                else:
                    result = await asyncio.to_thread(fn, *args, **kwargs)
                    if inspect.isawaitable(result):
                        result = await result
                break
            except TerminalError as e:
                self._cursor.record("run", name, failure=e)
                raise
            except Exception as e:
                if retry_policy is None:
                    raise
                failures += 1
                if retry_policy.exhausted(failures):
                    err = TerminalError(
                        f"ctx.run({name!r}) failed {failures} times: {type(e).__name__}: {e}"
                    )
                    self._cursor.record("run", name, failure=err)
                    raise err from e
                await asyncio.sleep(retry_policy.delay(failures))
        try:
            data = serde.dump(result)
        except Exception as e:
            raise TerminalError(
                f"ctx.run({name!r}) returned a value that is not JSON-serializable "
                f"({type(result).__name__}): {e}"
            ) from None
        self._cursor.record("run", name, result=data)
        return serde.load(data)

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
        await self._host.await_completion(self._inv, entry.idx, self._cursor.take())

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

    def _send(self, handler: Any, key: str | None, arg: Any,
              delay: timedelta | float | None) -> str:
        idx = self._cursor.index
        digest = hashlib.sha256(f"{self._inv.id}:{idx}".encode()).hexdigest()
        callee = "inv_" + digest[:32]
        target, deliver = self._host.send(handler, key, arg, delay, callee, self._inv.id)
        if self._cursor.replay("send", target) is None:
            self._cursor.record("send", target, result=json.dumps(callee))
        self._deliveries.append(deliver())
        return callee

    async def settle(self) -> None:
        """Wait until every send of this attempt reached its callee durably."""
        if self._deliveries:
            await asyncio.gather(*self._deliveries)

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
        return sorted(self._state)

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
            entry = self._cursor.record("get_state", name, result=self._current(name))
        if entry.result is None:
            return default
        return (Serde(type_hint) if type_hint is not None else ANY).load(entry.result)

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
            return  # already applied when it was first recorded
        assert self._inv.accept.key is not None
        write = StateWrite(self._spec.definition.name, self._inv.accept.key, name, value)
        self._cursor.record(entry_type, name, result=value, extra=(write,))
        self._apply(name, value)

    def set(self, name: str, value: Any) -> None:
        self._require_exclusive("set")
        if not isinstance(name, str):
            raise TypeError("ctx.set(name, value): name must be a string")
        try:
            data = ANY.dump(value)
        except Exception as e:
            raise TerminalError(f"ctx.set({name!r}): value is not JSON-serializable: {e}") from None
        self._write("set_state", name, data)

    def clear(self, name: str) -> None:
        self._require_exclusive("clear")
        self._write("clear_state", name, None)

    def clear_all(self) -> None:
        self._require_exclusive("clear_all")
        entry = self._cursor.replay("clear_all_state", None)
        if entry is not None:
            return
        assert self._inv.accept.key is not None
        service, key = self._spec.definition.name, self._inv.accept.key
        writes = tuple(StateWrite(service, key, n, None) for n in self._names())
        self._cursor.record("clear_all_state", None, extra=writes)
        for w in writes:
            self._apply(w.name, None)


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
    policy = spec.policy
    while True:
        ctx = InvocationContext(host, inv, state)
        try:
            try:
                args = (spec.input.load(inv.accept.input),) if spec.takes_arg else ()
            except Exception as e:
                raise TerminalError(f"input of {spec.target} does not validate: {e}", 400) from None
            result = await spec.fn(ctx, *args)
            await ctx.settle()
            try:
                out = Outcome(True, spec.output.dump(result))
            except Exception as e:
                raise TerminalError(f"output of {spec.target} is not JSON-serializable: {e}") \
                    from None
        except Suspended:
            await host.submit(inv, [*ctx.take_records(), StatusChange(
                inv.id, "suspended", inv.retry_count, None, now_ms())])
            raise
        except TerminalError as e:
            out = Outcome(False, None, e.message, e.status_code)
        except (Exception, JournalMismatch) as e:
            inv.retry_count += 1
            failure = f"{type(e).__name__}: {e}"
            if policy.exhausted(inv.retry_count):
                out = Outcome(False, None, f"gave up after {inv.retry_count} attempts: {failure}")
            else:
                idx = retry_index(inv.retry_count)
                fire_at = now_ms() + round(policy.delay(inv.retry_count) * 1000)
                timer = Timer(f"{inv.id}:retry:{inv.retry_count}", inv.id, idx, "retry",
                              fire_at, host.name)
                status = StatusChange(inv.id, "backing-off", inv.retry_count, failure, now_ms())
                await host.await_completion(inv, idx, [*ctx.take_records(), status, timer])
                continue
        records = ctx.take_records()
        records.append(Output(inv.id, out.ok, out.output, out.failure, out.failure_code, now_ms()))
        return out, host.submit(inv, records)

"""The awakeable and workflow-promise operations of the invocation context, and the handles
(``Awakeable``, ``DurablePromise``, the resolution to await) they hand to a handler."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from actors.engine.cursor import JournalCursor
from actors.engine.invocation import PROMISE_STATE, Invocation
from actors.engine.ports import HostPort
from actors.sdk.contexts import Awakeable, DurablePromise
from actors.sdk.definitions import HandlerSpec, Workflow
from actors.sdk.errors import AlreadyCompletedError, JournalMismatch, TerminalError
from actors.sdk.serde import ANY, Serde, check_size
from journal.errors import StatusCode
from journal.kinds import EntryType
from journal.records import Completion, Entry, StateWrite


class AwakeablesAndPromises:
    """Mixed into ``InvocationContext``: awakeables (made, awaited, resolved by a handler) and
    a workflow's durable promises."""

    _host: HostPort
    _inv: Invocation
    _spec: HandlerSpec
    _cursor: JournalCursor
    _deliveries: list[asyncio.Future[None]]

    if TYPE_CHECKING:

        def _cancel_point(self) -> None: ...

        async def _await_entry(
            self, entry: Entry, start: Callable[[int], None] | None = None
        ) -> Completion: ...

    def awakeable(self, type_hint: Any = None) -> tuple[str, Awakeable]:
        serde = Serde(type_hint) if type_hint is not None else ANY
        entry = self._cursor.replay(EntryType.AWAKEABLE, None)
        if entry is None:
            entry = self._cursor.record(EntryType.AWAKEABLE, None, completed=False)
            self._cursor.unflushed_run = True  # durable before the next action hands it out
        self._host.expect_awakeable(self._inv, entry.idx, serde)
        return self._host.awakeables.make(self._inv.id, entry.idx), _Awakeable(self, entry, serde)

    async def _await_awakeable(self, entry: Entry, serde: Serde) -> Any:
        done = await self._await_entry(entry)
        if done.failure is not None:
            raise TerminalError(done.failure, done.failure_code or StatusCode.INTERNAL)
        return _decode(serde, done.result, "awakeable value")

    def resolve_awakeable(self, awakeable_id: str, value: Any = None) -> Awaitable[None]:
        return self._complete_awakeable(awakeable_id, _json(value, "awakeable value"), None)

    def reject_awakeable(self, awakeable_id: str, reason: str) -> Awaitable[None]:
        return self._complete_awakeable(awakeable_id, None, str(reason))

    def _complete_awakeable(
        self, awk_id: str, result: str | None, failure: str | None
    ) -> _Resolution:
        """Journal the resolution (an entry that completes later, like a call), deliver it
        once the entry is durable, and hand back the verdict to await. The handler's output
        waits for the delivery either way (``settle``)."""
        self._host.awakeables.parse(awk_id)
        data = json.dumps(
            {"value": json.loads(result) if result is not None else None}
            if failure is None
            else {"failure": failure}
        )
        entry = self._cursor.replay(EntryType.COMPLETE_AWAKEABLE, awk_id)
        if entry is None:
            entry = self._cursor.record(
                EntryType.COMPLETE_AWAKEABLE, awk_id, result=data, completed=False
            )
        elif entry.result != data:
            raise JournalMismatch(
                self._inv.id,
                entry.idx,
                f"complete_awakeable({awk_id!r}, {entry.result})",
                f"complete_awakeable({awk_id!r}, {data})",
            )
        # journaled as completed (before resolutions had a verdict), or delivered before
        if not entry.completed and entry.idx not in self._inv.completions:
            durable = self._host.submit(self._inv, self._cursor.take())
            self._deliveries.append(
                self._host.complete_awakeable(
                    self._inv, entry.idx, awk_id, result, failure, durable
                )
            )
        return _Resolution(self, entry)

    async def _await_resolution(self, entry: Entry) -> None:
        if entry.completed:
            return
        done = await self._await_entry(entry)
        if done.failure is not None:
            code = done.failure_code or StatusCode.INTERNAL
            error = AlreadyCompletedError if code == StatusCode.CONFLICT else TerminalError
            raise error(done.failure, code)

    def promise(self, name: str, type_hint: Any = None) -> DurablePromise:
        if not isinstance(self._spec.definition, Workflow):
            raise TerminalError(f"ctx.promise: {self._spec.target} is not a workflow handler")
        if not isinstance(name, str) or not name:
            raise TypeError("ctx.promise(name): name must be a non-empty string")
        return _Promise(self, name, Serde(type_hint) if type_hint is not None else ANY)

    async def _promise_value(self, name: str, serde: Serde) -> Any:
        self._cancel_point()
        entry = self._cursor.replay(EntryType.PROMISE, name)
        if entry is None:
            data = self._host.promise_of(self._inv, name)
            entry = self._cursor.record(
                EntryType.PROMISE, name, result=data, completed=data is not None
            )
        data = entry.result
        if not entry.completed:
            inv, idx = self._inv, entry.idx
            done = await self._await_entry(
                entry, lambda _: self._host.watch_promise(inv, idx, name)
            )
            data = done.result
        return _promise_result(name, data, serde)

    async def _promise_peek(self, name: str, serde: Serde) -> Any:
        entry = self._cursor.replay(EntryType.PEEK_PROMISE, name)
        if entry is None:
            entry = self._cursor.record(
                EntryType.PEEK_PROMISE, name, result=self._host.promise_of(self._inv, name)
            )
        return None if entry.result is None else _promise_result(name, entry.result, serde)

    def _complete_promise(self, name: str, data: str) -> None:
        entry = self._cursor.replay(EntryType.COMPLETE_PROMISE, name)
        if entry is not None:
            if entry.failure is not None:
                raise AlreadyCompletedError(
                    entry.failure, entry.failure_code or StatusCode.CONFLICT
                )
            return
        if not self._host.claim_promise(self._inv, name, data):
            err = AlreadyCompletedError(
                f"promise {name!r} of workflow {self._inv.accept.key!r} is already completed"
            )
            self._cursor.record(EntryType.COMPLETE_PROMISE, name, failure=err)
            raise err
        assert self._inv.accept.key is not None
        write = StateWrite(
            self._spec.definition.name, self._inv.accept.key, PROMISE_STATE + name, data
        )
        self._cursor.record(EntryType.COMPLETE_PROMISE, name, result=data, extra=(write,))
        self._host.submit(self._inv, self._cursor.take())  # queued before anyone sees it


class _Awakeable(Awakeable):
    def __init__(self, ctx: AwakeablesAndPromises, entry: Entry, serde: Serde) -> None:
        self._ctx, self._entry, self._serde = ctx, entry, serde

    def __await__(self) -> Any:
        return self._ctx._await_awakeable(self._entry, self._serde).__await__()


class _Resolution:
    """What ``ctx.resolve_awakeable`` / ``ctx.reject_awakeable`` return: delivered without
    being awaited; awaiting it waits for the delivery and raises its refusal."""

    def __init__(self, ctx: AwakeablesAndPromises, entry: Entry) -> None:
        self._ctx, self._entry = ctx, entry

    def __await__(self) -> Any:
        return self._ctx._await_resolution(self._entry).__await__()


class _Promise(DurablePromise):
    def __init__(self, ctx: AwakeablesAndPromises, name: str, serde: Serde) -> None:
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
        raise TerminalError(
            f"{what} is not JSON-serializable: {e}", StatusCode.BAD_REQUEST
        ) from None
    return check_size(data, what)


def _decode(serde: Serde, data: str | None, what: str) -> Any:
    try:
        return serde.load(data) if data is not None else None
    except Exception as e:
        raise TerminalError(f"{what} does not validate: {e}", StatusCode.BAD_REQUEST) from None


def _promise_result(name: str, data: str | None, serde: Serde) -> Any:
    """Decode a promise completion ({"value": v} or {"failure": message})."""
    completion = json.loads(data) if data is not None else {"value": None}
    if "failure" in completion:
        raise TerminalError(str(completion["failure"]))
    return _decode(serde, json.dumps(completion["value"]), f"value of promise {name!r}")

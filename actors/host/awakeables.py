"""Awakeables on a host: their types, their resolutions (by a client or a handler), and the
rule that the first durable resolution wins."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from actors.engine.invocation import Invocation
from actors.host.base import RECENT_OUTCOMES, RELOAD_BACKOFF, HostBase
from actors.sdk.errors import AlreadyCompletedError, TerminalError
from actors.sdk.serde import Serde
from journal.clock import now_ms
from journal.errors import StatusCode
from journal.kinds import EntryType
from journal.records import Completion
from journal.retry import retry

log = logging.getLogger("raystate.host")
AWAKEABLE_TYPE_WAIT_S = 5.0  # see ``_awakeable_type``


class Awakeables(HostBase):
    """Awakeables of the invocations on this host."""

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

    def complete_awakeable(
        self,
        invocation: Invocation,
        idx: int,
        awakeable_id: str,
        result: str | None,
        failure: str | None,
        after: asyncio.Future[None],
    ) -> asyncio.Future[None]:
        if self.outbox is None:
            raise TerminalError("resolving awakeables needs a runtime (no outbox here)")
        at = (invocation.id, idx)
        delivery = self._resolving.get(at)
        if delivery is None:
            delivery = self._resolving[at] = asyncio.ensure_future(
                self._deliver_resolution(invocation.id, idx, awakeable_id, result, failure, after)
            )
            delivery.add_done_callback(lambda _: self._resolving.pop(at, None))
        return delivery

    async def _deliver_resolution(
        self,
        caller_id: str,
        idx: int,
        awakeable_id: str,
        result: str | None,
        failure: str | None,
        after: asyncio.Future[None],
    ) -> None:
        """Deliver a handler's resolution (entry ``idx`` of ``caller_id``) once that entry is
        durable; make the verdict durable as the entry's completion, then resume the caller.
        The delivery names its entry (``by``), so one repeated after a crash counts as the
        same resolution, not a second one: the verdict is the same on every replay."""
        assert self.outbox is not None
        await after
        outbox = self.outbox
        try:
            await retry(
                lambda: outbox.resolve_awakeable(
                    awakeable_id, result, failure, f"{caller_id}:{idx}"
                ),
                when=lambda e: not isinstance(e, TerminalError),
                backoff=RELOAD_BACKOFF,
                on_retry=lambda _: log.exception(
                    "resolving %s from %s failed; trying again", awakeable_id, caller_id
                ),
            )
            completion = Completion(caller_id, idx, None, None, None, now_ms())
        except TerminalError as e:  # refused: already completed (409), unknown (404) ...
            completion = Completion(caller_id, idx, None, e.message, e.status_code, now_ms())
        await self._complete(completion)

    async def resolve_awakeable(
        self, awakeable_id: str, result: str | None, failure: str | None, by: str | None = None
    ) -> tuple[bool, str, int]:
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
                mine = self._check_awakeable(awakeable_id, inv.entries, inv.completions, idx, by)
                if not mine and result is not None:
                    serde = await self._awakeable_type(inv, idx)
            elif inv_id in self._parked:
                found = await self.journal.pending([self.definition.name], ids=[inv_id])
                if not found:
                    mine = await self._finished(awakeable_id, inv_id, idx, by)
                else:
                    mine = self._check_awakeable(
                        awakeable_id, found[0].entries, found[0].completions, idx, by
                    )
            elif inv_id in self._recent or await self.journal.outcome(inv_id) is not None:
                mine = await self._finished(awakeable_id, inv_id, idx, by)
            else:
                raise TerminalError(f"unknown awakeable {awakeable_id}", StatusCode.NOT_FOUND)
            if mine or await self._refuse_if_resolved(awakeable_id, inv_id, idx, by):
                return True, "resolved before", 200  # (the second: someone else meanwhile)
            serde = serde or self._awakeables.get(inv_id, {}).get(idx)  # parked: if still known
            if serde is not None and result is not None:
                try:
                    serde.load(result)
                except Exception as e:
                    raise TerminalError(
                        f"value for awakeable {awakeable_id} does not validate: {e}",
                        StatusCode.BAD_REQUEST,
                    ) from None
            completion = Completion(
                inv_id,
                idx,
                result,
                failure,
                None if failure is None else StatusCode.INTERNAL,
                now_ms(),
                by,
            )
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

    async def _refuse_if_resolved(
        self, awakeable_id: str, inv_id: str, idx: int, by: str | None
    ) -> bool:
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

    async def _finished(self, awakeable_id: str, inv_id: str, idx: int, by: str | None) -> bool:
        """The awakeable's invocation has finished: True if ``by`` completed it before."""
        if by is not None:
            done = await self.journal.completion(inv_id, idx)
            if done is not None and done.by == by:
                return True
        raise AlreadyCompletedError(f"the invocation of awakeable {awakeable_id} has finished")

    @staticmethod
    def _check_awakeable(
        awk_id: str,
        entries: list[Any],
        completions: dict[int, Completion],
        idx: int,
        by: str | None,
    ) -> bool:
        """Refuse an unknown or completed awakeable; True if ``by`` completed it."""
        if idx >= len(entries) or entries[idx].entry_type != EntryType.AWAKEABLE:
            raise TerminalError(
                f"unknown awakeable {awk_id}: its invocation has no awakeable there",
                StatusCode.NOT_FOUND,
            )
        done = completions.get(idx)
        if done is not None:
            if by is not None and done.by == by:
                return True
            raise AlreadyCompletedError(f"awakeable {awk_id} is already completed")
        return False

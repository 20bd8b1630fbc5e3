"""Outbound: a handler's sends and calls to other handlers, through the host's outbox."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from actors.engine.invocation import Invocation
from actors.host.base import RELOAD_BACKOFF, HostBase
from actors.host.requests import InvokeRequest
from actors.sdk.errors import TerminalError
from journal.clock import now_ms
from journal.errors import StatusCode
from journal.kinds import InvokeMode
from journal.records import Completion
from journal.retry import retry

log = logging.getLogger("raystate.host")


class Outbound(HostBase):
    """Sends and calls (the engine's ``HostPort.send`` and ``call``)."""

    def send(
        self,
        target: Any,
        key: str | None,
        arg: Any,
        delay: Any,
        invocation_id: str,
        sender: Invocation,
    ) -> tuple[str, str, Callable[[], asyncio.Future[None]]]:
        if self.outbox is None:
            raise TerminalError("sending to other handlers needs a runtime (no outbox here)")
        spec, req = self.outbox.request(
            target,
            key,
            arg,
            InvokeMode.SEND,
            delay=delay,
            invocation_id=invocation_id,
            invoked_by=sender.id,
        )
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

    def call(
        self, target: Any, key: str | None, arg: Any, invocation_id: str, caller: Invocation
    ) -> tuple[str, str, Any, Callable[[int], None]]:
        if self.outbox is None:
            raise TerminalError("calling other handlers needs a runtime (no outbox here)")
        spec, req = self.outbox.request(
            target, key, arg, InvokeMode.CALL, invocation_id=invocation_id, invoked_by=caller.id
        )
        if (
            caller.spec.kind == "exclusive"
            and spec.kind == "exclusive"
            and caller.accept.key is not None
            and key == caller.accept.key
            and spec.definition.name == caller.accept.service
        ):
            raise TerminalError(
                f"{caller.spec.target} (exclusive) calls {spec.target} (exclusive) on its own "
                f"key {key!r}: that call would wait for the caller to finish, forever. Use "
                "object_send, a shared handler, or a plain function",
                StatusCode.CONFLICT,
            )
        req.resubmit = req.resubmit or not caller.first_run  # see ``send``

        def start(idx: int) -> None:
            if (caller.id, idx) not in self._calls:
                self._delivering[req.id] = self._delivering.get(req.id, 0) + 1
                self._calls[caller.id, idx] = asyncio.ensure_future(
                    self._deliver_call(caller.id, idx, spec, req)
                )

        return spec.target, req.id, spec.output, start

    async def _deliver_call(self, caller_id: str, idx: int, spec: Any, req: InvokeRequest) -> None:
        """Wait for the callee's outcome, make it durable as the call entry's completion in
        the caller's journal, then resume the caller (replayed if it left memory meanwhile)."""
        assert self.outbox is not None
        outbox = self.outbox

        def again(_: BaseException) -> None:
            log.exception("call %s from %s failed; trying again", req.id, caller_id)
            req.resubmit = True  # the first try may have got through

        try:
            out = await retry(
                lambda: outbox.submit(spec, req), backoff=RELOAD_BACKOFF, on_retry=again
            )
            assert out is not None
            completion = (
                Completion(caller_id, idx, out.output, None, None, now_ms())
                if out.ok
                else Completion(
                    caller_id,
                    idx,
                    None,
                    out.failure or "failed",
                    out.failure_code or StatusCode.INTERNAL,
                    now_ms(),
                )
            )
            await self._complete(completion)
        finally:
            self._calls.pop((caller_id, idx), None)
            left = self._delivering.pop(req.id, 1) - 1
            if left:
                self._delivering[req.id] = left

"""HostChannel: a caller's line to one host actor, for batched submission.

Requests queue while a ``submit_many`` call is in flight and go together in the next; one
long-polling ``poll`` call at a time brings back every result that arrived meanwhile (see
``actors.host.mailbox``). Under load one Ray call carries many invocations each way; alone, a
request costs two concurrent calls instead of one.

When the host dies, every request not answered yet is sent again to its successor, marked as
re-submitted: the host then asks the journal whether the first submission got through, so
nothing runs twice.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from actors.host.mailbox import request_tag
from actors.host.requests import InvokeRequest
from journal.errors import RaystateError, StatusCode
from journal.records import Outcome
from journal.transport.remote import UNAVAILABLE
from journal.transport.wire import WireClosed

POLL_TIMEOUT_S = 10.0


class RuntimeDown(RaystateError, ConnectionError):
    """No runtime runs in the namespace (its journal actor is gone: shut down, not started
    yet), so no host is made for a request; it is sent again once one runs."""

    code = StatusCode.UNAVAILABLE


HOST_DOWN = (*UNAVAILABLE, WireClosed, RuntimeDown)


class HostChannel:
    """``call(method, *args)`` calls the host (over Ray or its socket); it raises one of
    ``HOST_DOWN`` when the host died, which ``forget_host`` is then told."""

    def __init__(
        self,
        call: Callable[..., Awaitable[Any]],
        forget_host: Callable[[], None],
        on_idle: Callable[[HostChannel], None],
    ) -> None:
        self._call = call
        self._forget_host = forget_host
        self._on_idle = on_idle
        self.token = uuid.uuid4().hex
        self._pending: dict[str, tuple[InvokeRequest, asyncio.Future[Outcome | None]]] = {}
        self._unsent: dict[str, None] = {}
        self._sender: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self._delay = 0.05

    async def submit(self, req: InvokeRequest) -> Outcome | None:
        """The request's outcome (``None`` for a send, once it is durable)."""
        tag = request_tag(req)  # a call and a send of one invocation wait for different things
        entry = self._pending.get(tag)
        if entry is None:
            entry = self._pending[tag] = (req, asyncio.get_running_loop().create_future())
            self._unsent[tag] = None
            self._kick()
        return await asyncio.shield(entry[1])

    def _kick(self) -> None:
        if self._unsent and (self._sender is None or self._sender.done()):
            self._sender = asyncio.create_task(self._send())
        if self._pending and (self._poller is None or self._poller.done()):
            self._poller = asyncio.create_task(self._poll())

    async def _send(self) -> None:
        while self._unsent:
            reqs = [self._pending[i][0] for i in self._unsent if i in self._pending]
            self._unsent.clear()
            if not reqs:
                continue
            try:
                await self._call("submit_many", self.token, reqs)
            except HOST_DOWN:
                await self._host_failed()
            except Exception as e:  # not the host's death (say, a request Ray cannot send)
                for req in reqs:
                    self._fail(request_tag(req), e)

    async def _poll(self) -> None:
        try:
            while self._pending:
                try:
                    results = await self._call("poll", self.token, POLL_TIMEOUT_S)
                except HOST_DOWN:
                    await self._host_failed()
                    continue
                except Exception as e:  # a bug on the host's side: fail, do not hang
                    for tag in list(self._pending):
                        self._fail(tag, e)
                    break
                self._delay = 0.05
                for tag, (ok, value) in results.items():
                    if not ok:
                        self._fail(tag, value)
                        continue
                    entry = self._pending.pop(tag, None)
                    if entry is not None and not entry[1].done():
                        entry[1].set_result(value)
        finally:
            if not self._pending and not self._unsent:
                self._on_idle(self)

    def _fail(self, tag: str, e: BaseException) -> None:
        entry = self._pending.pop(tag, None)
        if entry is not None and not entry[1].done():
            entry[1].set_exception(e)

    async def _host_failed(self) -> None:
        """The host died: send everything unanswered again (to its successor), after a pause."""
        self._forget_host()
        for req, _ in self._pending.values():
            req.resubmit = True
        self._unsent.update(dict.fromkeys(self._pending))
        await asyncio.sleep(self._delay)
        self._delay = min(self._delay * 2, 1.0)
        self._kick()

    def idle(self) -> bool:
        return not self._pending and not self._unsent

"""Mailboxes: a host's side of batched submission (see ``actors.cluster.channel`` for the caller's).

A caller (a driver, or another host) hands a host many requests in one call and collects their
results in one long-polling call: a Ray call of many requests costs about as much CPU at each
end as a single request (see docs/performance.md), so batching decides throughput under load.
Each caller has a mailbox named by its token; a request's result (an ``Outcome``, ``None`` for
a durable send, or the exception its acceptance raised) lands there until the caller polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from journal.kinds import InvokeMode

Result = tuple[bool, Any]  # (True, Outcome | None) or (False, exception)
LINGER_TURNS = 3
EXPIRE_S = 120.0  # a mailbox nobody polled for this long belongs to a caller that is gone


def request_tag(req: Any) -> str:
    """What a request's result is filed under: its invocation id, and its mode for a send.
    A call and a send can name the same invocation (every submission of a workflow's main
    does): the call waits for the outcome, the send only until it is durable."""
    return req.id if req.mode == InvokeMode.CALL else f"send:{req.id}"


@dataclass
class Mailbox:
    results: dict[str, Result] = field(default_factory=dict)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: set[asyncio.Future[Any]] = field(default_factory=set)
    polled: float = field(default_factory=time.monotonic)


class Mailboxes:
    """Every caller's mailbox on one host."""

    def __init__(self) -> None:
        self._boxes: dict[str, Mailbox] = {}

    def _box(self, token: str) -> Mailbox:
        box = self._boxes.get(token)
        if box is None:
            box = self._boxes[token] = Mailbox()
        return box

    def submit(
        self, token: str, requests: list[Any], invoke: Callable[[Any], Awaitable[Any]]
    ) -> None:
        """Start ``invoke(request)`` for each; its result goes to the caller's mailbox."""
        box = self._box(token)
        for req in requests:
            task = asyncio.ensure_future(invoke(req))
            box.tasks.add(task)
            task.add_done_callback(partial(self._done, box, request_tag(req)))

    @staticmethod
    def _done(box: Mailbox, tag: str, task: asyncio.Future[Any]) -> None:
        box.tasks.discard(task)
        if task.cancelled():  # the host is closing: the caller asks the next one
            return
        e = task.exception()
        box.results[tag] = (True, task.result()) if e is None else (False, e)
        box.ready.set()

    async def poll(self, token: str, timeout: float) -> dict[str, Result]:
        """The results (by ``request_tag``) that arrived since the last poll; waits up to
        ``timeout`` for one."""
        box = self._box(token)
        box.polled = time.monotonic()
        if not box.results:
            box.ready.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(box.ready.wait(), timeout)
            for _ in range(LINGER_TURNS):  # results of the same commit arrive a turn apart
                await asyncio.sleep(0)
        out, box.results = box.results, {}
        box.polled = time.monotonic()
        return out

    def expire(self, idle_s: float = EXPIRE_S) -> int:
        """Forget mailboxes not polled for ``idle_s`` with nothing running for them."""
        now = time.monotonic()
        gone = [t for t, b in self._boxes.items() if now - b.polled > idle_s and not b.tasks]
        for token in gone:
            del self._boxes[token]
        return len(gone)

    def in_flight(self) -> int:
        """Requests accepted whose results are not yet in a mailbox (the ``queued`` metric)."""
        return sum(len(b.tasks) for b in self._boxes.values())

    def __len__(self) -> int:
        return len(self._boxes)

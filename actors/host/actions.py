"""SyncActions: a host's ``ctx.run`` actions that run on threads, and the flusher's wait for them.

A plain (sync) function given to ``ctx.run`` runs off the event loop (``asyncio.to_thread``). Its
result reaches the loop a thread hop later, so when many invocations on a host resume together
(their previous step committed) and each starts its next action, their next commits trickle in
one by one: the flusher would send the first on its own and the rest a whole commit later.
``settle`` lets the flusher wait, briefly, for actions that started moments ago (a short action
finishes well within that wait), so their steps share the commit (see docs/performance.md,
``python -m benchmarks --workloads three_step``). An invocation
resumed ahead of its completion's commit (``ObjectHost.resume_ahead``) counts as such an
action until it runs, so its next records share the completion's commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

SETTLE_S = 0.003  # wait at most this long, and only for actions younger than this


class SyncActions:
    """The sync actions running on threads for one host."""

    def __init__(self, settle_s: float = SETTLE_S) -> None:
        self.settle_s = settle_s
        self.running = 0
        self._last_start = -float("inf")
        self._quiet: asyncio.Future[None] | None = None

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` on a worker thread."""
        self.begin()
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        finally:
            self.end()

    def begin(self) -> None:
        """Work that will produce records moments from now has started."""
        self.running += 1
        self._last_start = time.monotonic()

    def end(self) -> None:
        """Called by the task that did the work: wakes ``settle`` only after this task's next
        steps (it runs on until it awaits), so the records they queue join the batch."""
        self.running -= 1
        if not self.running and self._quiet is not None and not self._quiet.done():
            self._quiet.set_result(None)

    async def settle(self) -> None:
        """Return once no action that started in the last ``settle_s`` is running (at most
        ``settle_s`` from now): a long action does not hold commits back."""
        if not self.running or time.monotonic() - self._last_start > self.settle_s:
            return
        self._quiet = asyncio.get_running_loop().create_future()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._quiet, self.settle_s)
        self._quiet = None

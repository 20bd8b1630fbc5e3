"""StateLoader: host-side coalescing of state loads.

Keys that become active while one load is in flight are loaded together by the next: one Ray
call and one journal query for many keys, instead of one each (what a burst of new keys, or a
workload over 100,000 keys, would otherwise pay per invocation).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

State = dict[str, str]
MAX_KEYS_PER_LOAD = 512


class StateLoader:
    """One load in flight; the keys asked for meanwhile wait for the next, together."""

    def __init__(self, load_many: Callable[[list[str]], Awaitable[dict[str, State]]]) -> None:
        self._load_many = load_many
        self._waiting: dict[str, asyncio.Future[State]] = {}
        self._task: asyncio.Task[None] | None = None

    def load(self, key: str) -> asyncio.Future[State]:
        """The committed state of ``key`` (a failed load fails the futures of its keys; the
        caller asks again)."""
        fut = self._waiting.get(key)
        if fut is None:
            fut = self._waiting[key] = asyncio.get_running_loop().create_future()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        return fut

    async def _run(self) -> None:
        while self._waiting:
            keys = list(self._waiting)[:MAX_KEYS_PER_LOAD]
            futs = [self._waiting.pop(k) for k in keys]
            try:
                states = await self._load_many(keys)
            except Exception as e:
                for fut in futs:
                    if not fut.done():
                        fut.set_exception(e)
                        fut.exception()  # retrieved: the waiting invocation retries
                continue
            for key, fut in zip(keys, futs, strict=True):
                if not fut.done():
                    fut.set_result(states.get(key, {}))

"""StateLoader: host-side coalescing of state loads, and no load at all for new keys.

Keys that become active while one load is in flight are loaded together by the next: one Ray
call and one journal query for many keys, instead of one each (what a burst of new keys, or a
workload over 100,000 keys, would otherwise pay per invocation).

A key that never had state (an order's first invocation, say) is not loaded at all: the
journal's ``KeyFilter`` of keys with state, plus the keys this host wrote since it fetched it,
says so for certain. The filter comes with the first load and again when it fills up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable

from journal.keyfilter import KeyFilter

State = dict[str, str]
MAX_KEYS_PER_LOAD = 512
FILTER_RETRY_S = 5.0
log = logging.getLogger("raystate.host")


class StateLoader:
    """One load in flight; the keys asked for meanwhile wait for the next, together."""

    def __init__(
        self,
        load_many: Callable[[list[str]], Awaitable[dict[str, State]]],
        fetch_filter: Callable[[], Awaitable[bytes]] | None = None,
    ) -> None:
        self._load_many = load_many
        self._waiting: dict[str, asyncio.Future[State]] = {}
        self._task: asyncio.Task[None] | None = None
        self._fetch_filter = fetch_filter
        self._filter: KeyFilter | None = None
        self._written_meanwhile: set[str] | None = None  # while a filter is being fetched
        self._uncommitted: Counter[str] = Counter()  # keys with state writes not yet durable
        self._next_fetch = 0.0
        self.skipped = 0  # loads the filter saved

    def load(self, key: str) -> asyncio.Future[State]:
        """The committed state of ``key`` (a failed load fails the futures of its keys; the
        caller asks again)."""
        fut = self._waiting.get(key)
        if fut is None:
            if self._filter is not None and key not in self._filter:
                self.skipped += 1
                fut = asyncio.get_running_loop().create_future()
                fut.set_result({})
                return fut
            self._refresh_filter()
            fut = self._waiting[key] = asyncio.get_running_loop().create_future()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        return fut

    def wrote(self, key: str) -> None:
        """This host queued a state write for ``key``: it is no longer new."""
        self._uncommitted[key] += 1
        if self._written_meanwhile is not None:
            self._written_meanwhile.add(key)
        if self._filter is not None:
            self._filter.add(key)
            if self._filter.full:
                self._refresh_filter()

    def committed(self, key: str) -> None:
        """A state write of ``key`` queued earlier is durable (a fetched filter will have it)."""
        left = self._uncommitted[key] - 1
        if left > 0:
            self._uncommitted[key] = left
        else:
            self._uncommitted.pop(key, None)

    def _refresh_filter(self) -> None:
        """Fetch a (fresh) filter unless one is on its way or the last attempt just failed."""
        if (
            self._fetch_filter is None
            or self._written_meanwhile is not None
            or (self._filter is not None and not self._filter.full)
            or time.monotonic() < self._next_fetch
        ):
            return
        # the journal reads what is durable when the fetch gets there: add what is not yet
        self._written_meanwhile = set(self._uncommitted)
        asyncio.get_running_loop().create_task(self._fetch(self._fetch_filter))

    async def _fetch(self, fetch: Callable[[], Awaitable[bytes]]) -> None:
        try:
            fresh = KeyFilter.from_bytes(await fetch())
        except Exception:
            log.warning("no key filter from the journal; loading every key", exc_info=True)
            self._next_fetch = time.monotonic() + FILTER_RETRY_S
        else:
            fresh.update(self._written_meanwhile or ())
            self._filter = fresh
        finally:
            self._written_meanwhile = None

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

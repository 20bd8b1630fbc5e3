"""The fenced side of the journal (``journal.fence``): how a journal that a newer writer of its
directory replaced stops for good, and how an idle one finds out. Mixed into
``GroupCommitJournal``; with ``fenced=False`` none of it runs. Also how a host or scheduler
process that a newer writer refused (``StaleHost``) ends (``end_stale_process``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from journal.errors import Fenced, StaleHost
from journal.fence import Fence
from journal.records import Batch, Outcome
from journal.store import JournalStore

# How often an idle fenced journal checks its fence, so that it releases the DuckDB file soon
# after a newer writer started (which cannot open the file before).
FENCE_WATCH_S = 1.0
log = logging.getLogger("raystate.journal")


def end_stale_process(stale: StaleHost) -> None:
    """End this actor's process: its node may have been declared lost while it ran on, so a
    newer process may hold its name and work; if not, Ray starts it again and it recovers from
    the journal's new writer. Not a ``ray.kill`` of its handle: that would end the newer one."""
    log.critical("%s; exiting", stale)
    logging.shutdown()
    os._exit(75)


class FencedWriter:
    """Stopping for good once fenced: the journal's state it needs, declared for the mixin."""

    fence: Fence | None
    store: JournalStore
    _fenced_out: Fenced | None
    _abandoned: asyncio.Future[Any] | None
    _drainer: asyncio.Task[None] | None
    _pruner: asyncio.Task[None] | None
    _watcher: asyncio.Task[None] | None
    _drain_thread: ThreadPoolExecutor
    _queue: list[tuple[Batch, asyncio.Future[None]]]
    _barriers: list[asyncio.Future[None]]
    _waiters: dict[str, list[asyncio.Future[Outcome]]]

    async def _check_fence(self) -> None:
        """Raise ``Fenced`` (and stop for good) if a newer writer took the directory."""
        if self._fenced_out is not None:
            raise self._refusal()
        if self.fence is not None:
            try:
                self.fence.check()
            except Fenced as e:
                await self._fence_lost(e)
                raise

    def _refusal(self) -> Fenced:
        e = self._fenced_out
        assert e is not None
        return Fenced(e.directory, e.held, e.current)

    async def _fence_lost(
        self, fenced: Fenced, refused: list[asyncio.Future[None]] | None = None
    ) -> None:
        """A newer writer took the directory: stop for good. Every call waiting here fails with
        ``Fenced`` (nothing more is acknowledged), and the store closes without a drain, so
        the DuckDB file is released; ``refused`` fail once it is."""
        if self._fenced_out is None:
            self._fenced_out = fenced
            log.error("%s: this journal stops", fenced)
            this = asyncio.current_task()
            for task in (self._drainer, self._pruner, self._watcher):
                if task is not None and task is not this:
                    task.cancel()
            self._on_fenced()
            # On the drainer's thread: after a drain that is under way, never beside it.
            self._abandoned = asyncio.get_running_loop().run_in_executor(
                self._drain_thread, self.store.abandon
            )
        assert self._abandoned is not None
        try:
            await asyncio.shield(self._abandoned)
        except Exception:
            log.exception("closing the fenced journal's store failed")
        waiting: list[asyncio.Future[None]] = [*(refused or []), *(f for _, f in self._queue)]
        waiting += self._barriers
        outputs = [w for ws in self._waiters.values() for w in ws]
        self._queue, self._barriers = [], []
        self._waiters.clear()
        for fut in waiting:
            if not fut.done():
                fut.set_exception(self._refusal())
        for output in outputs:
            if not output.done():
                output.set_exception(self._refusal())

    async def _watch_loop(self) -> None:
        """Check the fence while idle too: a journal nobody calls learns that a newer writer
        started, and releases the DuckDB file for it."""
        while self._fenced_out is None:
            await asyncio.sleep(FENCE_WATCH_S)
            with contextlib.suppress(Fenced):  # _check_fence stops the journal
                await self._check_fence()

    def _on_fenced(self) -> None:
        """Called once when the journal stops for being fenced (the actor closes its socket,
        so that callers on its node go through Ray, to the newer writer)."""

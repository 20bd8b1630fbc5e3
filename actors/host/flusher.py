"""Flusher: host-side group commit of journal records.

While one batch is being committed, the records of every invocation on the host accumulate for
the next, so one Ray call carries many entries and commits happen in submission order.

Each batch carries the epoch of the fenced journal writer the host recovered from (``epoch``,
set by ``Recovery.start``). A newer writer refuses it with ``StaleHost``: the host's node may
have been declared lost while it ran on, so a newer host may run the same keys. Then nothing
more is sent: every waiting submission fails, and ``on_stale`` ends the host (its actor
restarts it, to recover anew), rather than re-send what a newer host may have done.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections.abc import Awaitable, Callable

from journal.errors import StaleHost
from journal.records import Batch, Record
from journal.retry import Backoff, retry

RECOMMIT = Backoff(0.1, 2.0, 5.0)  # waits before a failed batch is sent again

log = logging.getLogger("raystate.host")


class Flusher:
    """Host-side group commit: one batch in flight, the next one filling meanwhile.

    A failed commit is sent again (same batch id, marked re-sent) until it succeeds: its
    records are already in the invocations' in-memory journals, so dropping them would let a
    retry replay entries that were never durable."""

    def __init__(
        self,
        commit: Callable[[Batch], Awaitable[None]],
        on_committed: Callable[[list[Record]], None],
        settle: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """``settle``: awaited before each batch is cut, to let records that are moments
        away join it (``SyncActions.settle``)."""
        self._commit = commit
        self._on_committed = on_committed
        self._settle = settle
        self._prefix = uuid.uuid4().hex[:12]
        self._ids = itertools.count()
        self._records: list[Record] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._task: asyncio.Task[None] | None = None
        self.epoch: int | None = None  # of the journal writer recovered from (None: unfenced)
        self.stale: StaleHost | None = None
        # called once a batch is refused as stale (default: the submissions just fail)
        self.on_stale: Callable[[StaleHost], None] | None = None

    def submit(self, records: list[Record]) -> asyncio.Future[None]:
        fut = asyncio.get_running_loop().create_future()
        if self.stale is not None:
            fut.set_exception(self.stale)
            return fut
        self._records.extend(records)
        self._waiters.append(fut)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        return fut

    async def _run(self) -> None:
        while self._waiters:
            if self._settle is not None:
                await self._settle()
            records, self._records = self._records, []
            waiters, self._waiters = self._waiters, []
            if records:
                batch = Batch(f"{self._prefix}:{next(self._ids)}", records, epoch=self.epoch)
                try:
                    await self._commit_until_done(batch)
                except StaleHost as e:
                    self._refuse_all(e, waiters)
                    return
                self._on_committed(records)
            for w in waiters:
                if not w.done():
                    w.set_result(None)

    async def _commit_until_done(self, batch: Batch) -> None:
        """Nothing may go on until the batch is durable, and its records are already part of
        invocations' in-memory journals: so send the same batch again until it commits."""

        def resend(_: BaseException) -> None:
            log.exception("commit of batch %s failed; sending it again", batch.batch_id)
            batch.resent = True

        await retry(
            lambda: self._commit(batch),
            when=lambda e: not isinstance(e, StaleHost),
            backoff=RECOMMIT,
            on_retry=resend,
        )

    def _refuse_all(self, stale: StaleHost, waiters: list[asyncio.Future[None]]) -> None:
        """A newer writer refused this host's batch: fail it and everything after it."""
        log.error("%s", stale)
        self.stale = stale
        waiters, self._waiters, self._records = waiters + self._waiters, [], []
        for w in waiters:
            if not w.done():
                w.set_exception(stale)
        if self.on_stale is not None:
            self.on_stale(stale)

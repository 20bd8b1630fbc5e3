"""``Runtime.sql`` and the CLI's live reads over every partition's journal
(``journal.federated`` decides where a query runs; this module reaches the journals).

With one partition a query goes to the journal actor as it always did. With more, a query
runs on one partition's journal actor (``journal:<p>``) or over all of them
(``journal.federated``). Cancelling a call (Ctrl-C, a task cancelled) stops its queries in
every journal.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from journal.config import RuntimeConfig
from journal.federated import run, run_async
from journal.partitions import Partitions
from journal.sqlguard import SqlRefused

if TYPE_CHECKING:  # (Ray is imported only where a runtime is reached: `raystate --db` needs none)
    from journal.transport.remote import RemoteActor

_background: set[asyncio.Future[Any]] = set()  # fire-and-forget calls, kept until done


def answer(result: Any) -> pa.Table:
    """A journal's ``sql_or_error`` reply as a table, or its refusal raised."""
    if isinstance(result, SqlRefused):
        raise result
    if isinstance(result, str):
        raise SqlRefused(result)
    return result  # type: ignore[no-any-return]


async def journal_sql(journal: RemoteActor, query: str) -> pa.Table:
    """One journal's answer to a user's query (under its time limit and result cap); if
    this call is cancelled, the query is stopped in the journal."""
    query_id = uuid.uuid4().hex
    try:
        result = await journal.call("sql_or_error", query, query_id)
    except asyncio.CancelledError:  # the caller gave up: stop the query in the journal
        stop = asyncio.ensure_future(journal.call("cancel_sql", query_id))
        _background.add(stop)
        stop.add_done_callback(_background.discard)
        raise
    return answer(result)


class PartitionedSql:
    """A driver's way to its runtime's journals for users' queries."""

    def __init__(
        self, journal: Callable[[int], RemoteActor], layout: Partitions, config: RuntimeConfig
    ) -> None:
        """``journal(p)``: the client's handle on partition ``p``'s journal."""
        self.layout = layout
        self.timeout_s = config.sql_timeout_s
        self._journal = journal

    async def run(self, query: str) -> pa.Table:
        if self.layout.count == 1:
            return await journal_sql(self._journal(0), query)
        return await run_async(query, self.layout, self._read, timeout_s=self.timeout_s)

    async def _read(self, p: int, query: str) -> pa.Table:
        return await journal_sql(self._journal(p), query)


class LiveJournals:
    """The journal actors of a running runtime, for the CLI's reads: Ray calls from this
    thread, one per partition a query reads, all at once."""

    def __init__(self, handles: Sequence[Any], config: RuntimeConfig) -> None:
        self.layout = Partitions(len(handles))
        self.timeout_s = config.sql_timeout_s
        self._handles = list(handles)

    def sql(self, query: str) -> pa.Table:
        if self.layout.count == 1:
            return self._read([(0, query)])[0]
        return run(query, self.layout, self._read, timeout_s=self.timeout_s)

    def _read(self, requests: Sequence[tuple[int, str]]) -> list[pa.Table]:
        import ray

        refs = [self._handles[p].sql_or_error.remote(q) for p, q in requests]
        try:
            results = ray.get(refs)
        except BaseException:  # Ctrl-C, or a journal down: the journals stop the others
            for ref in refs:
                ray.cancel(ref)
            raise
        return [answer(r) for r in results]

"""Users' SQL in the journal: checked, read-only, time-limited, size-capped, and out of the way.

A user's query (``Runtime.sql``, ``raystate sql``) passes ``journal.sqlguard``, then runs on a
cursor of its own inside a READ ONLY transaction that is always rolled back, on a small pool
of threads of its own (``SQL_WORKERS``): the journal's commits, its reads for hosts (outcomes,
recovery) and ``result()`` calls never wait behind it. At most ``SQL_WORKERS`` run at once and
``SQL_WAITING`` more wait; beyond that a query is refused at once (``SqlBusy``).

Limits, like PostgreSQL's ``statement_timeout``: a query still running ``timeout_s`` after it
arrived is interrupted (``SqlTimeout``, naming the limit; ``Runtime.start(...,
sql_timeout=...)`` sets it), and so is one whose caller gives up (its call cancelled, its
socket closed, or ``cancel`` with its query id). Rows stream out of DuckDB in Arrow batches and
a result larger than ``max_bytes`` stops there (``SqlResultTooLarge``) instead of growing the
journal's memory and the reply without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import duckdb
import pyarrow as pa

from journal.config import DEFAULT_SQL_TIMEOUT_S
from journal.errors import (  # noqa: F401 (SqlRefused: re-exported where it was)
    SqlBusy,
    SqlCancelled,
    SqlRefused,
    SqlResultTooLarge,
    SqlTimeout,
)
from journal.sqlguard import check_read_only

MAX_RESULT_BYTES = 64 << 20  # of Arrow data
SQL_WORKERS = 2
SQL_WAITING = 8
BATCH_ROWS = 4_096  # rows per Arrow batch: how finely the cap is checked
INTERRUPT_EVERY_S = 0.05  # how often an interrupt is repeated until the query has stopped


class _Job:
    """One query's cursor, so that another thread can interrupt it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cursor: duckdb.DuckDBPyConnection | None = None
        self.stopped = False

    def stop(self) -> None:
        with self.lock:
            self.stopped = True
            if self.cursor is not None:
                with contextlib.suppress(duckdb.Error):
                    self.cursor.interrupt()


def run_read_only(
    cur: duckdb.DuckDBPyConnection,
    query: str,
    max_bytes: int = MAX_RESULT_BYTES,
    job: _Job | None = None,
) -> pa.Table:
    """Check ``query`` and run it on ``cur`` in a READ ONLY transaction that is rolled back,
    streaming its rows up to ``max_bytes``."""
    check_read_only(query)
    cur.execute("BEGIN TRANSACTION READ ONLY")
    try:
        if job is not None and job.stopped:
            raise SqlCancelled("the query was interrupted: its caller gave up")
        reader = cur.sql(query).to_arrow_reader(BATCH_ROWS)
        try:
            batches, size = [], 0
            for batch in reader:
                size += batch.nbytes
                if size > max_bytes:
                    raise SqlResultTooLarge(
                        f"the result is larger than the cap of {max_bytes / 2**20:g} MiB of Arrow "
                        "data; select fewer rows or columns (LIMIT, aggregates)"
                    )
                if job is not None and job.stopped:
                    raise SqlCancelled("the query was interrupted: its caller gave up")
                batches.append(batch)
            return pa.Table.from_batches(batches, schema=reader.schema)
        finally:
            reader.close()
    finally:
        with contextlib.suppress(duckdb.Error):
            cur.execute("ROLLBACK")


class UserQueries:
    """The journal's runner of users' queries (see the module docstring)."""

    def __init__(
        self,
        cursor: Callable[[], duckdb.DuckDBPyConnection],
        *,
        workers: int = SQL_WORKERS,
        waiting: int = SQL_WAITING,
    ) -> None:
        """``cursor``: a fresh cursor that sees every acknowledged row."""
        self._cursor = cursor
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="journal-user-sql")
        self._admit = workers + waiting
        self._jobs: dict[str, tuple[_Job, asyncio.Future[pa.Table]]] = {}
        self._stopping: set[asyncio.Task[None]] = set()
        self.admitted = 0

    def _execute(self, job: _Job, query: str, max_bytes: int) -> pa.Table:
        with job.lock:
            if job.stopped:
                raise SqlCancelled("the query was stopped before it started")
            job.cursor = self._cursor()
        try:
            return run_read_only(job.cursor, query, max_bytes, job)
        finally:
            with job.lock:
                job.cursor.close()
                job.cursor = None

    async def run(
        self,
        query: str,
        *,
        timeout_s: float | None = DEFAULT_SQL_TIMEOUT_S,
        max_bytes: int = MAX_RESULT_BYTES,
        query_id: str | None = None,
    ) -> pa.Table:
        """The query's result; ``SqlTimeout`` past ``timeout_s`` (None: no limit)."""
        if self.admitted >= self._admit:
            raise SqlBusy(
                f"{self.admitted} queries run or wait already (at most "
                f"{self._admit}); try again later"
            )
        job = _Job()
        key = query_id if query_id is not None else f"_{id(job)}"
        self.admitted += 1
        fut = asyncio.get_running_loop().run_in_executor(
            self._pool, self._execute, job, query, max_bytes
        )
        self._jobs[key] = (job, fut)

        def done(_: object) -> None:
            self.admitted -= 1
            if self._jobs.get(key, (None,))[0] is job:
                del self._jobs[key]

        fut.add_done_callback(done)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout_s)
        except TimeoutError:
            await self._stop(job, fut)
            raise SqlTimeout(
                f"the query ran past its time limit of {timeout_s:g} s and was "
                "interrupted (Runtime.start(..., sql_timeout=...) sets it)"
            ) from None
        except asyncio.CancelledError:
            await self._stop(job, fut)
            raise
        except duckdb.InterruptException:
            raise SqlCancelled("the query was interrupted: its caller gave up") from None

    def cancel(self, query_id: str) -> bool:
        """Interrupt the query run under ``query_id``; False if none runs."""
        found = self._jobs.get(query_id)
        if found is None:
            return False
        stopping = asyncio.ensure_future(self._stop(*found))
        self._stopping.add(stopping)
        stopping.add_done_callback(self._stopping.discard)
        return True

    @staticmethod
    async def _stop(job: _Job, fut: asyncio.Future[pa.Table]) -> None:
        """Interrupt until the query's thread is done (an interrupt that lands between two
        statements of it is lost, so it is repeated)."""
        while not fut.done():
            job.stop()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(fut), INTERRUPT_EVERY_S)
        with contextlib.suppress(BaseException):
            fut.result()

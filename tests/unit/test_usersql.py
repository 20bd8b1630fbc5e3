"""Users' queries in the journal (``journal.usersql``, no Ray): a time limit, interruption when
the caller gives up, a bound on how many run, and never in the way of commits and reads."""

from __future__ import annotations

import asyncio

import pytest

from journal.actor import GroupCommitJournal
from journal.records import Accept, Batch, Output
from journal.usersql import SqlBusy, SqlCancelled, SqlTimeout
from tests.unit import test_journal_actor

journal = test_journal_actor.journal  # the fixture: a GroupCommitJournal on a fresh data dir
run = test_journal_actor.run

SLOW = "SELECT count(*) FROM range(10000000000000)"  # runs for hours unless interrupted


async def running(journal: GroupCommitJournal, count: int) -> None:
    """Wait until ``count`` user queries have their cursors (they run in DuckDB)."""
    jobs = journal.user_queries._jobs.values()
    while sum(job.cursor is not None for job, _ in jobs) < count:
        await asyncio.sleep(0.01)


async def idle(journal: GroupCommitJournal) -> None:
    while journal.user_queries.admitted:
        await asyncio.sleep(0.01)


def test_a_query_is_cut_at_its_time_limit(journal: GroupCommitJournal) -> None:
    journal._config["sql_timeout_s"] = 0.5

    async def body() -> None:
        with pytest.raises(SqlTimeout, match=r"time limit of 0\.5 s"):
            await journal.sql(SLOW)
        await idle(journal)  # its thread stopped: the slot is free again
        assert (await journal.sql("SELECT 42")).column(0).to_pylist() == [42]

    run(body())


def test_commits_and_reads_go_on_while_queries_run(journal: GroupCommitJournal) -> None:
    async def body() -> None:
        # as many as are admitted (more than the default executor's threads, which the
        # journal's own reads use): two run, the others wait for a user-query thread
        slow = [asyncio.ensure_future(journal.sql(SLOW, f"q{n}")) for n in range(10)]
        await running(journal, 2)  # every user-query thread is busy
        await journal.commit(
            Batch("b1", [Accept("inv_1", "Svc", "h", None, 0, "1"), Output("inv_1", True, "2")])
        )
        out = await journal.await_output("inv_1")
        assert out.ok and out.output == "2"
        assert await journal.pending(["Svc"]) == []
        assert await journal.load_states("Obj", ["k"]) == {"k": {}}
        assert not any(q.done() for q in slow)  # all that while, the queries still ran
        for n in range(10):
            assert await journal.cancel_sql(f"q{n}")
        for q in slow:
            with pytest.raises(SqlCancelled):
                await q

    run(body())


def test_beyond_the_queue_a_query_is_refused_as_busy(journal: GroupCommitJournal) -> None:
    limit = 2 + 8  # SQL_WORKERS + SQL_WAITING

    async def body() -> None:
        slow = [asyncio.ensure_future(journal.sql(SLOW, f"q{n}")) for n in range(limit)]
        await running(journal, 2)
        with pytest.raises(SqlBusy, match="try again later"):
            await journal.sql("SELECT 1")
        for n in range(limit):
            await journal.cancel_sql(f"q{n}")
        await asyncio.gather(*slow, return_exceptions=True)
        await idle(journal)
        assert (await journal.sql("SELECT 1")).num_rows == 1

    run(body())


def test_a_caller_that_gives_up_stops_its_query(journal: GroupCommitJournal) -> None:
    async def body() -> None:
        task = asyncio.ensure_future(journal.sql(SLOW))
        await running(journal, 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await idle(journal)  # the query's thread was interrupted, not left running

    run(body())


def test_errors_come_back_as_refusals(journal: GroupCommitJournal) -> None:
    async def body() -> None:
        refused = await journal.sql_or_error("WITH d AS (DELETE FROM log RETURNING *) FROM d")
        assert isinstance(refused, ValueError) and "write" in str(refused)
        failed = await journal.sql_or_error("SELECT * FROM no_such_table")
        assert isinstance(failed, ValueError) and "no_such_table" in str(failed)

    run(body())

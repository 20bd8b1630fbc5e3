"""``Runtime.sql`` against a running runtime: refusals that change nothing, a time limit, a
result cap, and queries that never hold up invocations or ``result()``."""

from __future__ import annotations

import asyncio

import pytest
import ray

from actors import Runtime, SqlRefused, SqlResultTooLarge, SqlTimeout
from tests.conftest import assert_eventually
from tests.integration.apps import add, counter
from tests.integration.helpers import journal_of

SLOW = "SELECT count(*) FROM range(10000000000000)"  # runs for hours unless interrupted


def _rows(rt: Runtime) -> tuple[int, int]:
    log = rt.sql("SELECT count(*) FROM log").column(0)[0].as_py()
    inv = rt.sql("SELECT count(*) FROM sys_invocation").column(0)[0].as_py()
    return log, inv


def _user_queries(rt: Runtime) -> int:
    return ray.get(journal_of(rt).info.remote())["user_queries"]


@pytest.mark.parametrize(
    "query",
    [
        "WITH d AS (DELETE FROM log RETURNING *) SELECT count(*) FROM d",
        "WITH d AS (UPDATE log SET data = 'x' RETURNING *) SELECT count(*) FROM d",
        "WITH d AS (INSERT INTO log (seq, kind, id) VALUES (0, 'batch', 'evil') RETURNING *)"
        " SELECT count(*) FROM d",
        "EXPLAIN/**/ANALYZE DELETE FROM log",
        "EXPLAIN /* a comment */ ANALYZE -- another\n DELETE FROM log",
        "SELECT * FROM checkpoint()",
        "UPDATE EXTENSIONS",
    ],
)
def test_writes_anywhere_are_refused_and_change_nothing(shared_rt: Runtime, query: str) -> None:
    shared_rt.call(add, key="sql-refusals", arg=1)
    before = _rows(shared_rt)
    with pytest.raises(SqlRefused):
        shared_rt.sql(query)
    assert _rows(shared_rt) == before


def test_pivot_is_accepted(shared_rt: Runtime) -> None:
    shared_rt.call(add, key="sql-pivot", arg=1)
    table = shared_rt.sql("PIVOT (SELECT status FROM sys_invocation) ON status USING count(*)")
    assert "completed" in table.column_names


def test_a_too_big_result_gets_the_cap_error(shared_rt: Runtime) -> None:
    with pytest.raises(SqlResultTooLarge, match="larger than the cap of 64 MiB"):
        shared_rt.sql("SELECT repeat('x', 1000) AS s FROM range(100000)")
    assert shared_rt.sql("SELECT 1 AS one").column(0).to_pylist() == [1]


def test_a_slow_query_is_cut_at_its_limit(start_runtime) -> None:
    rt = start_runtime([counter], sql_timeout=1)
    with pytest.raises(SqlTimeout, match="time limit of 1 s"):
        rt.sql(SLOW)
    assert_eventually(lambda: _user_queries(rt) == 0, message="the query's thread stopped")


def test_invocations_and_results_go_on_while_slow_queries_run(shared_rt: Runtime) -> None:
    rt = shared_rt
    done = rt.send(add, key="sql-busy", arg=1)
    assert done.result() == 1
    # as many slow queries as the journal admits (two run, eight wait): more than the
    # threads the journal's own reads run on
    slow = [asyncio.run_coroutine_threadsafe(rt.sql_async(SLOW), rt._loop.loop) for _ in range(10)]
    assert_eventually(lambda: _user_queries(rt) == 10, message="the slow queries run")
    assert done.result() == 1  # a finished invocation's result
    assert rt.call(add, key="sql-busy", arg=1) == 2  # a new invocation, end to end
    h = rt.send(add, key="sql-busy-2", arg=5)
    assert h.result() == 5
    assert not any(f.done() for f in slow)  # all of that while the slow queries still ran
    for f in slow:  # the callers give up: the journal interrupts their queries
        f.cancel()
    assert_eventually(lambda: _user_queries(rt) == 0, message="the given-up queries stopped")


def test_a_cancelled_ray_call_stops_its_query(shared_rt: Runtime) -> None:
    journal = journal_of(shared_rt)
    ref = journal.sql.remote(SLOW)
    assert_eventually(lambda: _user_queries(shared_rt) == 1, message="the query runs")
    ray.cancel(ref)
    assert_eventually(lambda: _user_queries(shared_rt) == 0, message="the query stopped")

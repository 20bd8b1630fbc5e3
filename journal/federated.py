"""Users' SQL over a partitioned journal: one set of views over every partition, with the
columns and answers one journal holding every row would give.

Each partition's journal is a DuckDB file its writer holds locked, so no one process can
ATTACH them all. A query is planned instead (``journal.sqlplan``, from DuckDB's own parse)
and runs in one of three ways (no Ray here: the caller passes the reads):

1. With one partition nothing of this runs: the query goes to the one journal, unchanged.
2. On one partition, unchanged, when it provably reads nothing of any other: every reference
   to a partitioned view is restricted, by an equality in the WHERE of the SELECT that reads
   it, to one invocation id (``id = 'inv_2_...'``, ``invocation_id = ...``) or to one key
   (``service_name = 'S' AND service_key = 'K'``), and all of them name the same partition.
   A query that reads no partitioned view (``sys_service``, ``SELECT 1``, ``DESCRIBE``, the
   catalog functions), and ``EXPLAIN``, run on partition 0, whose schema is every partition's.
3. Otherwise federated: each relation it references is fetched from the partitions that can
   hold its rows (through each partition's guarded path: time limit, result cap): only the
   columns the query names (all of them where it could see them all: ``*``, a row as a
   struct, ``DESCRIBE``, a table function, positional column aliases, ``NATURAL``, ``PIVOT``),
   only the rows its equalities keep, or only a count when it names none. The tables are
   concatenated per relation and registered under the relation's own name, columns and types
   in a private in-memory DuckDB (external access off), where the query runs unchanged, under
   the same time limit and result cap.

Why the union of the partitions' views is the view over all rows: every row of a partitioned
view is computed from the rows of one invocation or one key (its accept, entries, status,
output, events, timers; a key's state and queue), and an invocation and a key live wholly in
the partition their id or key names. ``sys_service``, ``service_registry`` and
``schema_version`` are the same in every partition: they come from partition 0. ``log`` (the
raw rows) is the union too, but its ``seq`` numbers are per partition.

Why a WHERE equality may cut what a fetch reads, and pick the partition: ``journal.sqlplan``,
which makes the plan. What was tried and lost: ATTACHing the partitions' files (each is
locked by its writer), and fetching the raw ``log`` rows to build the views locally (every row
of every kind crosses, where the views' rows are fewer and can be cut to the columns and rows
the query names).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import duckdb
import pyarrow as pa

from journal.errors import SqlRefused, SqlTimeout
from journal.partitions import Partitions
from journal.sqlplan import CATALOG, Fetch, Plan, ident, plan
from journal.usersql import MAX_RESULT_BYTES, UserQueries, run_read_only


def database(the_plan: Plan, results: Sequence[pa.Table]) -> duckdb.DuckDBPyConnection:
    """A private in-memory DuckDB connection holding the fetched relations under their own
    names and types (``results`` in the order of ``the_plan.requests``), external access
    off: a cursor of this process's in-memory database, the relations its own temporary
    views (a new database costs ten times more), or for a query that spells out the
    journal's catalog name (``journal.sys_invocation``), a new database of that name."""
    if the_plan.named_catalog:
        con = duckdb.connect(":memory:")
        temporary = ""
    else:
        con = _scratch().cursor()
        temporary = "TEMPORARY"
    try:
        if the_plan.named_catalog:
            con.execute(f"ATTACH ':memory:' AS {CATALOG}")
            con.execute(f"USE {CATALOG}")
        at = 0
        for f in the_plan.fetches:
            tables = list(results[at : at + len(f.partitions)])
            at += len(f.partitions)
            _register(con, f, tables, temporary)
        if the_plan.named_catalog:
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con


_scratch_lock = threading.Lock()
_scratch_db: list[duckdb.DuckDBPyConnection] = []


def _scratch() -> duckdb.DuckDBPyConnection:
    """This process's in-memory database for federations (each query on a cursor of its own,
    whose temporary views and registered tables no other cursor sees)."""
    with _scratch_lock:
        if not _scratch_db:
            _scratch_db.append(
                duckdb.connect(
                    ":memory:",
                    config={"enable_external_access": False, "lock_configuration": True},
                )
            )
        return _scratch_db[0]


def _register(
    con: duckdb.DuckDBPyConnection, fetch: Fetch, tables: list[pa.Table], temporary: str
) -> None:
    name = ident(fetch.relation.name)
    if fetch.columns is None:  # the query names none of its columns: only its rows count
        rows = sum(int(t.column(0)[0].as_py() or 0) for t in tables if t.num_rows)
        con.execute(
            f"CREATE {temporary} VIEW {name} AS SELECT NULL::BOOLEAN AS __row FROM range({rows})"
        )
        return
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="default")
    arrow = f"_partitions_{fetch.relation.name}"
    con.register(arrow, table)
    # Arrow has no JSON type: JSON columns come back as text and are typed again here
    columns = ", ".join(
        f"{ident(c)}::JSON AS {ident(c)}" if kind == "JSON" else ident(c)
        for c, kind in fetch.columns
    )
    con.execute(f"CREATE {temporary} VIEW {name} AS SELECT {columns} FROM {ident(arrow)}")


# -- running -----------------------------------------------------------------------------------


def run(
    query: str,
    layout: Partitions,
    read: Callable[[Sequence[tuple[int, str]]], Sequence[pa.Table]],
    *,
    timeout_s: float | None,
    max_bytes: int = MAX_RESULT_BYTES,
) -> pa.Table:
    """``query`` over every partition, in this thread. ``read`` runs (partition, query)
    requests, each through that partition's guarded path, and returns their tables in order."""
    started = time.monotonic()
    the_plan = plan(query, layout)
    if the_plan.partition is not None:
        return read([(the_plan.partition, query)])[0]
    con = database(the_plan, read(the_plan.requests))
    try:
        return run_guarded(con, query, _left(timeout_s, started), max_bytes)
    except SqlTimeout:
        raise _timeout(timeout_s) from None
    finally:
        con.close()


async def run_async(
    query: str,
    layout: Partitions,
    read: Callable[[int, str], Coroutine[Any, Any, pa.Table]],
    *,
    timeout_s: float | None,
    max_bytes: int = MAX_RESULT_BYTES,
) -> pa.Table:
    """``query`` over every partition: ``read(p, query)`` runs one request on partition
    ``p``'s journal (the reads run at once; a failed one cancels the others); the whole runs
    under ``timeout_s``."""
    started = time.monotonic()
    the_plan = plan(query, layout)
    if the_plan.partition is not None:
        return await read(the_plan.partition, query)
    try:
        async with asyncio.timeout(timeout_s), asyncio.TaskGroup() as group:
            tasks: list[asyncio.Task[pa.Table]] = [
                group.create_task(read(p, q)) for p, q in the_plan.requests
            ]
    except TimeoutError:
        raise _timeout(timeout_s) from None
    except BaseExceptionGroup as failed:  # the first read that failed (the others stopped)
        raise failed.exceptions[0] from None
    con = database(the_plan, [t.result() for t in tasks])
    local = UserQueries(lambda: con, workers=1, waiting=0)
    try:
        return await local.run(query, timeout_s=_left(timeout_s, started), max_bytes=max_bytes)
    except (SqlTimeout, duckdb.InterruptException):
        raise _timeout(timeout_s) from None
    except duckdb.Error as e:
        raise SqlRefused(str(e)) from None


def run_guarded(
    con: duckdb.DuckDBPyConnection, query: str, timeout_s: float | None, max_bytes: int
) -> pa.Table:
    """Run a user's query on ``con`` here and now, as the journal runs one: checked,
    read-only, capped, interrupted past ``timeout_s``."""
    timer = None if timeout_s is None else threading.Timer(timeout_s, con.interrupt)
    if timer is not None:
        timer.start()
    try:
        return run_read_only(con, query, max_bytes)
    except duckdb.InterruptException:
        raise _timeout(timeout_s) from None
    finally:
        if timer is not None:
            timer.cancel()


def _left(timeout_s: float | None, started: float) -> float | None:
    """What is left of the time limit (a little, not nothing, once it is used up)."""
    if timeout_s is None:
        return None
    return max(timeout_s - (time.monotonic() - started), 0.001)


def _timeout(timeout_s: float | None) -> SqlTimeout:
    return SqlTimeout(
        f"the query ran past its time limit of {timeout_s:g} s and was interrupted "
        "(Runtime.start(..., sql_timeout=...) sets it)"
    )

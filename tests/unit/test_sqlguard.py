"""The SQL entry point: one read-only statement, no files, no network."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from journal.records import Accept, Batch, Entry
from journal.sqlguard import SqlRefused, check_read_only
from journal.store import JournalStore


@pytest.mark.parametrize(
    "query",
    [
        "SELECT 1",
        "select status, count(*) from sys_invocation group by 1",
        "WITH x AS (SELECT 1 AS a) SELECT a FROM x",
        "FROM sys_journal",
        "EXPLAIN SELECT * FROM state",
        "DESCRIBE sys_invocation",
        "DESCRIBE SELECT 1",
        "SHOW TABLES",
        "SUMMARIZE sys_journal",
        "SELECT 1;",
        "  SELECT 1  -- trailing comment",
        "PIVOT log ON kind",
        "PIVOT log ON kind USING count(*)",
        "SELECT * FROM (PIVOT log ON kind)",
        "PIVOT log ON kind IN ('entry', 'accept')",
        "UNPIVOT (SELECT 1 AS a, 2 AS b) ON a, b INTO NAME k VALUE v",
        "EXPLAIN PIVOT log ON kind",
        "EXPLAIN (FORMAT json) SELECT 1",
        "SELECT * FROM range(3)",
        "SELECT * FROM duckdb_tables()",
        "SELECT sleep_ms(1)",
        "WITH RECURSIVE r AS (SELECT 1 AS x UNION ALL SELECT x + 1 FROM r WHERE x < 3) FROM r",
    ],
)
def test_read_only_statements_are_accepted(query: str) -> None:
    assert check_read_only(query) == query


@pytest.mark.parametrize(
    "query",
    [
        "INSERT INTO log VALUES (0, 'entry', 'x', 'a', NULL, NULL)",
        "UPDATE log SET data = '1'",
        "DELETE FROM log",
        "CREATE TABLE t(x INTEGER)",
        "CREATE VIEW v AS SELECT 1",
        "DROP VIEW state",
        "DROP TABLE log",
        "ALTER TABLE log ADD COLUMN y INTEGER",
        "COPY log TO '/tmp/out.csv'",
        "COPY log FROM '/etc/passwd'",
        "ATTACH '/tmp/other.duckdb' AS other",
        "DETACH other",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET enable_external_access = true",
        "RESET enable_external_access",
        "PRAGMA enable_profiling",
        "CALL pragma_version()",
        "CHECKPOINT",
        "EXPORT DATABASE '/tmp/dump'",
        "VACUUM",
        "BEGIN TRANSACTION",
        "SELECT 1; SELECT 2",
        "SELECT 1; DROP TABLE log",
        "SELEC 1",
        "SELECT * FROM",
        "",
        "-- only a comment",
        # a write anywhere in the statement
        "WITH d AS (DELETE FROM log RETURNING *) SELECT * FROM d",
        "WITH d AS (UPDATE log SET data = '1' RETURNING *) SELECT count(*) FROM d",
        "WITH d AS (INSERT INTO log (seq, kind, id) VALUES (0, 'x', 'y') RETURNING *) FROM d",
        "SELECT * FROM (WITH d AS (DELETE FROM log RETURNING *) SELECT * FROM d)",
        "SELECT (WITH d AS (DELETE FROM log RETURNING seq) SELECT max(seq) FROM d)",
        "EXPLAIN ANALYZE SELECT 1",
        "EXPLAIN/**/ANALYZE DELETE FROM log",
        "EXPLAIN /* x */ ANALYZE /* y */ SELECT 1",
        "EXPLAIN (ANALYZE) SELECT 1",
        "EXPLAIN (FORMAT json, ANALYZE) SELECT 1",
        "explain analyse select 1",
        "EXPLAIN DELETE FROM log",
        "EXPLAIN WITH d AS (DELETE FROM log RETURNING *) SELECT 1",
        # table functions with side effects (or outside the allow-list)
        "SELECT * FROM checkpoint()",
        "SELECT * FROM main.checkpoint()",
        'SELECT * FROM "checkpoint"()',
        "FROM force_checkpoint()",
        "SELECT * FROM query('SELECT * FROM checkpoint()')",
        "SELECT * FROM query_table('log')",
        "SELECT * FROM enable_profiling()",
        "SELECT * FROM truncate_duckdb_logs()",
        "SELECT * FROM json_execute_serialized_sql('{}')",
        "SELECT * FROM log, LATERAL (FROM checkpoint())",
        "SELECT nextval('s')",
        "SELECT setseed(0.5)",
        "PIVOT (FROM checkpoint()) ON x",
        "PIVOT (SELECT * FROM query('SELECT 1')) ON x",
        "PIVOT (SELECT nextval('s') AS x) ON x",
        "UPDATE EXTENSIONS",
        "UPDATE EXTENSIONS (httpfs)",
    ],
)
def test_everything_else_is_refused(query: str) -> None:
    with pytest.raises(SqlRefused):
        check_read_only(query)


def test_refusal_messages_are_clear() -> None:
    with pytest.raises(SqlRefused, match="not INSERT"):
        check_read_only("INSERT INTO t VALUES (1)")
    with pytest.raises(SqlRefused, match="exactly one statement, got 2"):
        check_read_only("SELECT 1; SELECT 2")
    with pytest.raises(SqlRefused, match="cannot parse SQL"):
        check_read_only("SELEC 1")
    with pytest.raises(SqlRefused, match=r"contains a write \(DELETE\)"):
        check_read_only("WITH d AS (DELETE FROM log RETURNING *) SELECT * FROM d")
    with pytest.raises(SqlRefused, match="EXPLAIN ANALYZE executes"):
        check_read_only("EXPLAIN/**/ANALYZE DELETE FROM log")
    with pytest.raises(SqlRefused, match=r"table function checkpoint\(\) is not allowed"):
        check_read_only("SELECT * FROM checkpoint()")
    with pytest.raises(SqlRefused, match="not UPDATE EXTENSIONS"):
        check_read_only("UPDATE EXTENSIONS")


# -- the store's SQL entry point ----------------------------------------------------------------


def _open(data_dir: Path) -> JournalStore:
    s = JournalStore(data_dir)
    s.write(
        [
            Batch(
                "b1",
                [
                    Accept("inv_1", "Svc", "h", None, 7, '{"x": 1}'),
                    Entry("inv_1", 0, "run", "a", '"r"'),
                ],
            )
        ]
    )
    return s


@pytest.fixture(scope="module")
def shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sqlguard")


@pytest.fixture(scope="module")
def shared_store(shared_dir: Path) -> Iterator[JournalStore]:
    """One store for the tests that must not change anything (each one checks it did not)."""
    s = _open(shared_dir / "data")
    yield s
    s.close()


@pytest.fixture
def store(data_dir: Path) -> Iterator[JournalStore]:
    """A store of its own, for tests that may damage it."""
    s = _open(data_dir)
    yield s
    s.close()


def _snapshot(store: JournalStore, tmp_path: Path) -> tuple[object, ...]:
    tables = store.sql("SELECT table_name FROM duckdb_tables() ORDER BY 1").column(0).to_pylist()
    counts = {t: store.sql(f"SELECT count(*) FROM {t}").column(0)[0].as_py() for t in tables}
    views = store.sql("SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1")
    files = sorted(
        str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if not p.name.endswith(".wal")
    )
    return tuple(tables), counts, views.column(0).to_pylist(), files


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_csv_auto('/etc/hostname')",
        "SELECT * FROM glob('/*')",
        "SELECT * FROM read_text('/etc/passwd')",
        "SELECT * FROM read_blob('/etc/passwd')",
        "SELECT * FROM read_json('/etc/passwd')",
        "SELECT * FROM read_parquet('/tmp/anything.parquet')",
        "WITH x AS (SELECT * FROM read_text('/etc/passwd')) SELECT count(*) FROM x",
        "SELECT (SELECT count(*) FROM glob('/tmp/*')) AS n FROM sys_invocation",
        "SELECT * FROM read_csv('https://example.com/data.csv')",
    ],
)
def test_file_and_network_access_fails(
    shared_store: JournalStore, shared_dir: Path, query: str
) -> None:
    before = _snapshot(shared_store, shared_dir)
    with pytest.raises(SqlRefused, match="not allowed"):  # the guard refuses the function
        shared_store.sql(query)
    # and the database itself refuses the access, should a query slip past the guard
    with (
        shared_store.user_cursor() as cur,
        pytest.raises(duckdb.Error, match=r"(?i)permission|external access|disabled"),
    ):
        cur.sql(query).fetchall()
    assert _snapshot(shared_store, shared_dir) == before


def test_replacement_scan_of_a_file_path_fails(shared_store: JournalStore) -> None:
    # DuckDB's replacement scan (a quoted path as a table name) is external access too: with it
    # switched off the path is just an unknown table name.
    with pytest.raises(duckdb.Error) as info:
        shared_store.sql("SELECT * FROM '/etc/passwd'")
    assert "root" not in str(info.value)


@pytest.mark.parametrize(
    "query",
    [
        "WITH d AS (DELETE FROM log RETURNING *) SELECT * FROM d",
        "WITH d AS (UPDATE log SET data = 'x' RETURNING *) SELECT count(*) FROM d",
        "WITH d AS (INSERT INTO log (seq, kind, id) VALUES (0, 'batch', 'evil') RETURNING *)"
        " SELECT * FROM d",
        "EXPLAIN/**/ANALYZE DELETE FROM log",
        "EXPLAIN /* c */ ANALYZE -- c\n DELETE FROM log",
        "SELECT * FROM checkpoint()",
        "DROP VIEW state",
        "DELETE FROM log",
        "COPY log TO '{tmp}/out.csv'",
        "ATTACH '{tmp}/other.duckdb' AS other",
        "SET enable_external_access = true",
        "CREATE TABLE pwn AS SELECT 1",
    ],
)
def test_refused_statements_do_nothing(
    shared_store: JournalStore, shared_dir: Path, query: str
) -> None:
    before = _snapshot(shared_store, shared_dir)
    with pytest.raises(SqlRefused):
        shared_store.sql(query.format(tmp=shared_dir))
    assert _snapshot(shared_store, shared_dir) == before


def test_external_access_cannot_be_switched_back_on(shared_store: JournalStore) -> None:
    row = shared_store.sql(
        "SELECT value FROM duckdb_settings() WHERE name = 'enable_external_access'"
    )
    assert row.column(0).to_pylist() == ["false"]
    with pytest.raises(duckdb.Error):
        shared_store._con.execute("SET enable_external_access = true")


@pytest.mark.parametrize(
    "query",
    [
        "EXPLAIN ANALYZE INSERT INTO log (kind, id) VALUES ('batch', 'evil')",
        "EXPLAIN ANALYZE DELETE FROM log",
        "EXPLAIN ANALYZE CREATE TABLE pwn AS SELECT 1 AS x",
    ],
)
def test_explain_analyze_cannot_write(store: JournalStore, data_dir: Path, query: str) -> None:
    before = _snapshot(store, data_dir)
    with contextlib.suppress(SqlRefused):
        store.sql(query)
    assert _snapshot(store, data_dir) == before


def test_pivot_runs(shared_store: JournalStore) -> None:
    table = shared_store.sql("PIVOT (SELECT kind FROM log) ON kind USING count(*)")
    assert set(table.column_names) >= {"accept", "batch", "entry"}


def test_checkpoint_is_not_forced(store: JournalStore) -> None:
    # a checkpoint moves DuckDB's own WAL into the file: refused, the WAL stays
    store.drain()
    wal = store.data_dir / "journal.duckdb.wal"
    size = wal.stat().st_size if wal.exists() else 0
    for query in ("SELECT * FROM checkpoint()", "SELECT * FROM force_checkpoint()"):
        with pytest.raises(SqlRefused, match="not allowed"):
            store.sql(query)
    assert (wal.stat().st_size if wal.exists() else 0) == size


def test_a_write_past_the_check_still_changes_nothing(store: JournalStore, data_dir: Path) -> None:
    # the second line of defence: the query runs in a READ ONLY transaction
    import journal.usersql as usersql
    from journal.usersql import run_read_only

    before = _snapshot(store, data_dir)
    original = usersql.check_read_only
    usersql.check_read_only = lambda q: q  # type: ignore[assignment]
    try:
        with store.user_cursor() as cur, pytest.raises(duckdb.Error, match="read-only"):
            run_read_only(cur, "WITH d AS (DELETE FROM log RETURNING *) SELECT * FROM d")
    finally:
        usersql.check_read_only = original
    assert _snapshot(store, data_dir) == before


def test_a_result_over_the_cap_is_refused(shared_store: JournalStore) -> None:
    from journal.usersql import SqlResultTooLarge

    with pytest.raises(SqlResultTooLarge, match="larger than the cap of 1 MiB"):
        shared_store.sql("SELECT repeat('x', 1000) AS s FROM range(10000)", max_bytes=1 << 20)
    assert (
        shared_store.sql(
            "SELECT repeat('x', 1000) AS s FROM range(100)", max_bytes=1 << 20
        ).num_rows
        == 100
    )

"""SQL over a partitioned journal (``journal.federated``): where a query runs, and that its
answer over four real journals is the answer of one journal holding all their rows."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import pyarrow as pa
import pytest

from journal.errors import SqlRefused, SqlResultTooLarge, SqlTimeout
from journal.federated import run, run_async
from journal.partitions import Partitions, claim
from journal.sqlplan import Plan, Spread, catalog, plan
from journal.store import JournalStore
from tests.unit.federation_data import LAYOUT, SERVICES, invocations


def reader(
    parts: list[JournalStore], seen: list[tuple[int, str]] | None = None
) -> Callable[[Sequence[tuple[int, str]]], list[pa.Table]]:
    def read(requests: Sequence[tuple[int, str]]) -> list[pa.Table]:
        if seen is not None:
            seen.extend(requests)
        return [parts[p].sql(q) for p, q in requests]

    return read


def federated(parts: list[JournalStore], query: str, **kw) -> pa.Table:
    return run(query, LAYOUT, reader(parts), timeout_s=kw.pop("timeout_s", 30), **kw)


# -- answers: the federation against one journal holding every row ----------------------------

SAME_ANSWERS = [
    "SELECT count(*) AS n FROM sys_invocation",
    "SELECT status, count(*) AS n FROM sys_invocation GROUP BY ALL ORDER BY ALL",
    "SELECT * FROM sys_invocation ORDER BY id",
    "SELECT * EXCLUDE (input) FROM sys_invocation WHERE status = 'backing-off' ORDER BY id",
    "SELECT i FROM sys_invocation i ORDER BY i.id",
    "SELECT id, typeof(output) AS t, output->>'y' AS y FROM sys_invocation ORDER BY id",
    "SELECT i.id, count(j.index) AS entries FROM sys_invocation i"
    " LEFT JOIN sys_journal j ON j.invocation_id = i.id GROUP BY i.id ORDER BY i.id",
    "SELECT id, (SELECT count(*) FROM sys_journal j WHERE j.invocation_id = i.id) AS n"
    " FROM sys_invocation i ORDER BY id",
    "SELECT target_service_name, sum(retry_count) AS r FROM sys_invocation GROUP BY 1 ORDER BY 1",
    "SELECT * FROM state ORDER BY ALL",
    "SELECT * FROM sys_promise ORDER BY ALL",
    "SELECT * FROM sys_journal ORDER BY invocation_id, index",
    "SELECT * FROM sys_service ORDER BY ALL",
    "SELECT s.ty, count(*) AS n FROM sys_invocation i JOIN sys_service s"
    " ON s.name = i.target_service_name AND s.handler = i.target_handler_name"
    " GROUP BY ALL ORDER BY ALL",
    "SELECT DISTINCT target_service_name AS name FROM sys_invocation"
    " UNION SELECT DISTINCT service_name FROM state ORDER BY name",
    "WITH done AS (SELECT id FROM sys_invocation WHERE status = 'completed')"
    " SELECT count(*) AS n FROM done JOIN sys_journal j ON j.invocation_id = done.id",
    "SELECT * FROM sys_keyed_service_status ORDER BY ALL",
    "SELECT * FROM sys_inbox ORDER BY ALL",
    "SELECT count(*) AS n, count(DISTINCT kind) AS kinds FROM log WHERE kind <> 'mark'",
    "PIVOT (SELECT status, target_service_name FROM sys_invocation) ON status"
    " USING count(*) ORDER BY target_service_name",
    "DESCRIBE sys_invocation",
    # (SUMMARIZE's quantiles and distinct counts are approximate: the exact columns)
    "SELECT column_name, min, max, count, null_percentage"
    " FROM (SUMMARIZE SELECT retry_count, status FROM sys_invocation)",
    "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'sys_journal'"
    " ORDER BY column_index",
    "SELECT 1 AS one",
    "SELECT count(*) AS n FROM main.sys_invocation",
    "SELECT count(*) AS n FROM journal.sys_invocation",
    "SELECT count(*) AS n FROM journal.main.sys_invocation i JOIN main.sys_journal j"
    " ON j.invocation_id = i.id",
]


@pytest.mark.parametrize("query", SAME_ANSWERS)
def test_the_federation_answers_as_one_journal_would(journals, query: str) -> None:
    parts, whole = journals
    got, want = federated(parts, query), whole.sql(query)
    assert got.schema == want.schema
    assert got.to_pylist() == want.to_pylist()


def test_count_is_the_sum_of_the_partitions_counts(journals) -> None:
    parts, whole = journals
    query = "SELECT count(*) AS n FROM sys_invocation"
    each = [p.sql(query).column(0)[0].as_py() for p in parts]
    assert all(each), "every partition holds some"
    assert federated(parts, query).column(0)[0].as_py() == sum(each) == 80
    assert whole.sql(query).column(0)[0].as_py() == 80


def test_queries_naming_one_invocation_or_key_answer_the_same(journals) -> None:
    parts, whole = journals
    ids = [r["id"] for r in whole.sql("SELECT id FROM sys_invocation ORDER BY id").to_pylist()]
    for inv in ids[::7]:
        for query in (
            f"SELECT * FROM sys_invocation WHERE id = '{inv}'",
            f"SELECT * FROM sys_journal WHERE invocation_id = '{inv}' ORDER BY index",
            "SELECT \"index\", date_diff('millisecond', i.created_at, j.created_at) AS at_ms,"
            " j.entry_type, j.name, j.completed, j.result, j.created_at FROM sys_journal j,"
            f" (SELECT created_at FROM sys_invocation WHERE id = '{inv}') i"
            f" WHERE j.invocation_id = '{inv}' ORDER BY \"index\"",
        ):
            assert plan(query, LAYOUT).partition == LAYOUT.of_id(inv)
            assert federated(parts, query).to_pylist() == whole.sql(query).to_pylist()
    for key in ("k0", "k5", "k12"):
        query = (
            "SELECT key, value FROM state"
            f" WHERE service_name = 'Obj' AND service_key = '{key}' ORDER BY key"
        )
        assert plan(query, LAYOUT).partition == LAYOUT.of_key("Obj", key)
        assert federated(parts, query).to_pylist() == whole.sql(query).to_pylist()


# -- where a query runs ------------------------------------------------------------------------

ONE_PARTITION = [
    ("SELECT * FROM sys_invocation WHERE id = 'inv_2_ab'", 2),
    ("SELECT * FROM sys_invocation WHERE 'inv_3_ab' = id AND status = 'running'", 3),
    ("SELECT count(*) FROM sys_journal j WHERE j.invocation_id = 'inv_1_ab'", 1),
    ("SELECT * FROM sys_timer WHERE invocation_id = 'inv_0_ab' ORDER BY index", 0),
    ("SELECT * FROM sys_journal_events WHERE invocation_id = 'inv_3_x'", 3),
    ("SELECT * FROM SYS_INVOCATION WHERE ID = 'inv_2_ab'", 2),
    ("SELECT * FROM main.sys_invocation WHERE id = 'inv_2_ab'", 2),
    ("SELECT * FROM journal.sys_invocation t WHERE t.id = 'inv_2_ab'", 2),
    (
        "SELECT * FROM sys_invocation i LEFT JOIN sys_journal j ON j.invocation_id = i.id"
        " WHERE i.id = 'inv_1_a' AND j.invocation_id = 'inv_1_a'",
        1,
    ),
    (
        "SELECT * FROM sys_invocation WHERE id = 'inv_2_a' AND EXISTS"
        " (SELECT 1 FROM sys_journal WHERE invocation_id = 'inv_2_a')",
        2,
    ),
    (
        "SELECT * FROM sys_invocation WHERE id = 'inv_2_a'"
        " UNION ALL SELECT * FROM sys_invocation WHERE id = 'inv_2_b'",
        2,
    ),
    (
        "SELECT * FROM sys_invocation WHERE id = 'inv_2_a' AND target_service_name IN"
        " (SELECT name FROM sys_service)",
        2,
    ),
    (
        "SELECT * FROM state WHERE service_name = 'Obj' AND service_key = 'k1'",
        LAYOUT.of_key("Obj", "k1"),
    ),
    (
        "SELECT * FROM sys_invocation WHERE target_service_key = 'k4'"
        " AND target_service_name = 'Obj'",
        LAYOUT.of_key("Obj", "k4"),
    ),
    (
        "SELECT * FROM sys_promise WHERE service_name = 'W' AND service_key = 'k1'",
        LAYOUT.of_key("W", "k1"),
    ),
    ("SELECT * FROM sys_service", 0),
    ("SELECT version FROM schema_version", 0),
    ("SELECT 1", 0),
    ("SELECT * FROM duckdb_views()", 0),
    ("SELECT * FROM information_schema.columns", 0),
    ("DESCRIBE sys_journal", 0),
    ("EXPLAIN SELECT count(*) FROM sys_invocation", 0),
]


@pytest.mark.parametrize(("query", "partition"), ONE_PARTITION)
def test_queries_that_provably_read_one_partition_run_there(query: str, partition: int) -> None:
    assert plan(query, LAYOUT) == Plan(partition=partition)


EVERY_PARTITION = [
    "SELECT * FROM sys_invocation",
    "SELECT * FROM sys_invocation WHERE id = 'inv_2_ab' OR id = 'inv_3_x'",
    "SELECT * FROM sys_invocation WHERE NOT id <> 'inv_2_ab'",
    "SELECT * FROM sys_invocation WHERE id LIKE 'inv_2_ab'",
    "SELECT * FROM sys_invocation WHERE id IN ('inv_2_ab')",
    "SELECT * FROM sys_invocation WHERE id = 'inv_2_ab'::VARCHAR COLLATE nocase",
    "SELECT * FROM sys_invocation WHERE id = 'inv_ab'",  # names no partition
    "SELECT * FROM sys_invocation WHERE id = 'inv_7_ab'",  # names one of 8, not of 4
    "SELECT * FROM sys_invocation WHERE target_service_key = 'k1'",  # a key without service
    "SELECT * FROM sys_invocation i, sys_journal j WHERE i.id = 'inv_2_ab'",
    "SELECT * FROM sys_invocation i JOIN sys_journal j ON j.invocation_id = 'inv_2_ab'"
    " WHERE i.id = 'inv_2_ab'",
    "SELECT * FROM sys_invocation WHERE id = 'inv_2_ab' AND EXISTS (SELECT 1 FROM sys_journal)",
    "SELECT *, (SELECT count(*) FROM sys_journal) FROM sys_invocation WHERE id = 'inv_2_ab'",
    "SELECT * FROM sys_invocation WHERE id = 'inv_2_a'"
    " UNION ALL SELECT * FROM sys_invocation WHERE id = 'inv_1_b'",
    "WITH sys_invocation AS (SELECT * FROM sys_invocation)"
    " SELECT * FROM sys_invocation WHERE id = 'inv_2_ab'",
    "SELECT * FROM (SELECT * FROM sys_invocation) WHERE id = 'inv_2_ab'",
    "SELECT * FROM sys_invocation WHERE id = 'inv_2_ab' USING SAMPLE 50%",
    "SELECT * FROM sys_invocation TABLESAMPLE 50% WHERE id = 'inv_2_ab'",
    "SELECT * FROM sys_invocation t(target) WHERE t.target = 'inv_2_ab'",
    "SELECT * FROM sys_invocation i ASOF JOIN sys_journal j ON i.created_at >= j.created_at"
    " WHERE i.id = 'inv_2_a' AND j.invocation_id = 'inv_2_a'",
    "SELECT * FROM sys_invocation i POSITIONAL JOIN sys_journal j"
    " WHERE i.id = 'inv_2_a' AND j.invocation_id = 'inv_2_a'",
    "SELECT * FROM log WHERE id = 'inv_2_ab'",  # raw rows: not placed by id
    "SELECT * FROM other.sys_invocation i, sys_invocation WHERE i.id = 'inv_2_ab'",
    "SELECT * FROM state WHERE service_name = 'Obj' OR service_key = 'k1'",
    "PIVOT sys_invocation ON status USING count(*)",
]


@pytest.mark.parametrize("query", EVERY_PARTITION)
def test_queries_that_may_read_several_partitions_are_federated(query: str) -> None:
    decided = plan(query, LAYOUT)
    assert decided.partition is None
    assert len({p for f in decided.fetches for p in f.partitions}) > 1


def test_one_partition_plans_nothing() -> None:
    assert plan("SELECT * FROM sys_invocation", Partitions(1)) == Plan(partition=0)


def test_writes_are_refused_before_anything_is_planned() -> None:
    with pytest.raises(SqlRefused):
        plan("DELETE FROM log", LAYOUT)
    with pytest.raises(SqlRefused, match="glob"):
        plan("SELECT * FROM sys_invocation, glob('/*')", LAYOUT)


def test_every_relation_of_the_schema_is_spread_on_purpose() -> None:
    shared = {name for name, r in catalog().items() if r.spread is Spread.SHARED}
    assert shared == {"sys_service", "service_registry", "schema_version"}
    assert {"sys_invocation", "sys_journal", "state", "log", "sys_schedule"} <= set(catalog())


# -- what crosses: columns, rows, counts -----------------------------------------------------


def fetch_of(query: str, relation: str):
    [found] = [f for f in plan(query, LAYOUT).fetches if f.relation.name == relation]
    return found


def test_a_count_fetches_counts_only() -> None:
    fetch = fetch_of("SELECT count(*) FROM sys_invocation", "sys_invocation")
    assert fetch.columns is None and fetch.partitions == (0, 1, 2, 3)
    assert fetch.query == 'SELECT count(*) AS n FROM "sys_invocation"'


def test_only_the_named_columns_cross() -> None:
    fetch = fetch_of("SELECT status, count(*) FROM sys_invocation GROUP BY 1", "sys_invocation")
    assert [c for c, _ in fetch.columns] == ["status"]
    fetch = fetch_of(
        "WITH s AS (SELECT status FROM sys_invocation) SELECT count(s) FROM s", "sys_invocation"
    )
    assert [c for c, _ in fetch.columns] == ["status"]  # s: the CTE's row, not the view's
    for whole_rows in (
        "SELECT * FROM sys_invocation",
        "SELECT i FROM sys_invocation i",
        "SELECT to_json(sys_invocation) FROM sys_invocation",
        "SELECT COLUMNS('status') FROM sys_invocation",
        "SELECT count(*) FROM sys_invocation NATURAL JOIN sys_waiting",
        "SELECT count(*) FROM sys_invocation t(a, b) WHERE a = 'x'",
        "SELECT count(*) FROM sys_invocation, pragma_table_info('sys_invocation')",
    ):
        fetch = fetch_of(whole_rows, "sys_invocation")
        assert fetch.columns == fetch.relation.columns, whole_rows


def test_equalities_cut_the_rows_that_cross() -> None:
    fetch = fetch_of(
        "SELECT count(*) FROM sys_invocation i JOIN sys_journal j ON j.invocation_id = i.id"
        " WHERE i.status = 'running' AND j.entry_type = 'run'",
        "sys_journal",
    )
    assert fetch.where == "(\"entry_type\" = 'run')"
    both = fetch_of(
        "SELECT * FROM sys_invocation WHERE id = 'inv_1_a'"
        " UNION ALL SELECT * FROM sys_invocation WHERE id = 'inv_3_b' AND status = 'x'",
        "sys_invocation",
    )
    assert both.partitions == (1, 3)
    assert both.where == "(\"id\" = 'inv_1_a') OR (\"id\" = 'inv_3_b' AND \"status\" = 'x')"
    assert (
        fetch_of(
            "SELECT * FROM sys_invocation WHERE id = 'inv_1_a'"
            " UNION ALL SELECT * FROM sys_invocation",
            "sys_invocation",
        ).where
        is None
    )


def test_the_partitions_read_are_the_ones_planned(journals) -> None:
    parts, whole = journals
    seen: list[tuple[int, str]] = []
    query = (
        "SELECT s.ty, count(*) AS n FROM sys_invocation i JOIN sys_service s"
        " ON s.name = i.target_service_name WHERE i.status = 'completed' GROUP BY ALL ORDER BY 1"
    )
    got = run(query, LAYOUT, reader(parts, seen), timeout_s=30)
    assert got.to_pylist() == whole.sql(query).to_pylist()
    assert sorted(p for p, q in seen if "sys_service" in q) == [0]
    assert sorted(p for p, q in seen if "sys_invocation" in q) == [0, 1, 2, 3]


# -- limits ------------------------------------------------------------------------------------


def test_the_federated_query_has_the_time_limit(journals) -> None:
    parts, _ = journals
    with pytest.raises(SqlTimeout, match=r"time limit of 0\.5 s"):
        federated(
            parts,
            "SELECT count(*) FROM sys_invocation a, sys_invocation b, range(100000000) r"
            " WHERE a.id || r.range::VARCHAR <> b.id",
            timeout_s=0.5,
        )


def test_the_federated_result_has_the_cap(journals) -> None:
    parts, _ = journals
    with pytest.raises(SqlResultTooLarge):
        federated(parts, "SELECT * FROM sys_invocation, range(100)", max_bytes=64 << 10)


def test_a_partition_s_refusal_is_the_answer() -> None:
    def read(requests: Sequence[tuple[int, str]]) -> list[pa.Table]:
        raise SqlTimeout("partition 2 ran past its time limit")

    with pytest.raises(SqlTimeout, match="partition 2"):
        run("SELECT count(*) FROM sys_invocation", LAYOUT, read, timeout_s=30)


def test_the_async_federation_answers_alike_and_stops_the_other_reads(journals) -> None:
    parts, whole = journals
    stopped: list[int] = []

    async def read(p: int, query: str) -> pa.Table:
        return await asyncio.to_thread(parts[p].sql, query)

    async def failing(p: int, query: str) -> pa.Table:
        if p == 1:
            raise SqlRefused("partition 1 refused")
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            stopped.append(p)
            raise
        raise AssertionError("not stopped")

    async def main() -> None:
        query = "SELECT status, count(*) AS n FROM sys_invocation GROUP BY 1 ORDER BY 1"
        got = await run_async(query, LAYOUT, read, timeout_s=30)
        assert got.to_pylist() == whole.sql(query).to_pylist()
        at_once = [  # each federation sees its own relations, not another's of the same name
            "SELECT count(*) AS n FROM sys_invocation WHERE status = 'completed'",
            "SELECT count(*) AS n FROM sys_invocation WHERE status = 'backing-off'",
            "SELECT count(*) AS n FROM sys_invocation",
        ] * 3
        answers = await asyncio.gather(*(run_async(q, LAYOUT, read, timeout_s=30) for q in at_once))
        assert [a.to_pylist() for a in answers] == [whole.sql(q).to_pylist() for q in at_once]
        with pytest.raises(SqlRefused, match="partition 1 refused"):
            await run_async(query, LAYOUT, failing, timeout_s=30)
        assert sorted(stopped) == [0, 2, 3]
        with pytest.raises(SqlTimeout, match=r"time limit of 0\.2 s"):
            await run_async(query, LAYOUT, failing_slowly, timeout_s=0.2)

    async def failing_slowly(p: int, query: str) -> pa.Table:
        await asyncio.sleep(60)
        raise AssertionError("not stopped")

    asyncio.run(main())


# -- a stopped multi-partition data dir, read with --db ---------------------------------------


def write_data_dir(root: Path) -> JournalStore:
    """A stopped runtime's data dir of four partitions, and one journal with all their rows."""
    claim(root, LAYOUT)
    whole = JournalStore(root.parent / f"{root.name}-whole")
    for p, batches in invocations().items():
        store = JournalStore(LAYOUT.directory(root, p))
        store.write(batches)
        store.set_services(SERVICES)
        store.close()
        whole.write(batches)
    whole.set_services(SERVICES)
    return whole


def test_offline_journal_reads_every_partition(tmp_path: Path) -> None:
    from actors.client.sources import OfflineJournal

    whole = write_data_dir(tmp_path / "data")
    try:
        source = OfflineJournal(tmp_path / "data")
        try:
            for query in SAME_ANSWERS[:12]:
                assert source.sql(query).to_pylist() == whole.sql(query).to_pylist(), query
        finally:
            source.close()
    finally:
        whole.close()


def test_cli_db_reads_a_stopped_multi_partition_data_dir(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from actors.client.cli import app

    whole = write_data_dir(tmp_path / "data")
    [inv] = whole.sql(
        "SELECT id, (SELECT count(*) FROM sys_journal WHERE invocation_id = id) AS entries"
        " FROM sys_invocation WHERE status = 'backing-off' ORDER BY id DESC LIMIT 1"
    ).to_pylist()
    whole.close()
    runner = CliRunner()
    db = ["--db", str(tmp_path / "data")]

    def cli(*args: str) -> str:
        result = runner.invoke(app, [*args, "-f", "json", *db])
        assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
        return result.stdout

    def rows(out: str) -> list[dict]:
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    assert rows(cli("sql", "SELECT count(*) AS n FROM sys_invocation")) == [{"n": 80}]
    assert len(rows(cli("invocations", "--all"))) == 80
    assert len(rows(cli("invocations", "--service", "Obj", "--key", "k3", "--all"))) == len(
        [i for i in range(80) if i % 3 != 2 and i % 13 == 3]
    )
    described = json.loads(cli("describe", inv["id"]))
    assert described["invocation"]["id"] == inv["id"]
    assert described["invocation"]["status"] == "backing-off"
    assert len(described["journal"]) == inv["entries"] > 0
    assert rows(cli("state", "Obj", "k3")) == [{"key": "count", "value": 55}]


@pytest.mark.parametrize("relation", sorted(catalog()))
def test_every_relation_keeps_its_column_types(journals, relation: str) -> None:
    """Arrow has no JSON type: a federated relation is typed again as the journal types it."""
    parts, whole = journals
    query = f"SELECT typeof(COLUMNS(*)) FROM (SELECT 1) LEFT JOIN {relation} ON true LIMIT 1"
    assert federated(parts, query).to_pylist() == whole.sql(query).to_pylist()


def test_offline_journal_recovers_each_partition_s_write_ahead_log(tmp_path: Path) -> None:
    from actors.client.sources import OfflineJournal
    from tests.unit.test_wal import run_and_die

    root = tmp_path / "data"
    claim(root, LAYOUT)
    for p in LAYOUT:
        JournalStore(LAYOUT.directory(root, p)).close()
    run_and_die(Path(LAYOUT.directory(root, 2)), "store.write([invocation(1), invocation(2)])")
    source = OfflineJournal(root)
    try:
        assert source.sql("SELECT count(*) AS n FROM sys_invocation").to_pylist() == [{"n": 2}]
        assert source.sql("SELECT count(*) AS n FROM sys_journal").to_pylist() == [{"n": 2}]
    finally:
        source.close()

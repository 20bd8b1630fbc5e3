"""Top-N over partitions (``journal.sqltopn``): a query keeping at most its LIMIT of one view
reads at most that many rows of each partition, and still answers as one journal would."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pytest

from journal.federated import run
from journal.sqlplan import plan
from journal.store import JournalStore
from tests.unit.federation_data import LAYOUT
from tests.unit.test_federated import federated

TOP_N = [
    ("SELECT id, status FROM sys_invocation ORDER BY id LIMIT 5", 5),
    (
        "SELECT * FROM sys_invocation i WHERE i.status <> 'completed'"
        " ORDER BY created_at DESC, id LIMIT 7 OFFSET 3",
        10,
    ),
    # ``raystate invocations``: unfinished first, the latest first
    (
        "SELECT id, status, modified_at FROM sys_invocation"
        " ORDER BY status = 'completed', modified_at DESC, id LIMIT 10",
        10,
    ),
    ("SELECT key, value FROM state ORDER BY service_key, key LIMIT 4", 4),
    (
        'SELECT invocation_id, "index" FROM sys_journal'
        " ORDER BY invocation_id || '' DESC, \"index\" LIMIT 6 OFFSET 1",
        7,
    ),
    ("SELECT id, output->>'y' AS y FROM sys_invocation ORDER BY id DESC LIMIT 3", 3),
    ("SELECT id FROM journal.sys_invocation ORDER BY id LIMIT 2", 2),
    ("SELECT id FROM sys_invocation ORDER BY id LIMIT 0", 0),
]


def counting(parts: list[JournalStore], rows: list[int]):
    def read(requests: Sequence[tuple[int, str]]) -> list[pa.Table]:
        tables = [parts[p].sql(q) for p, q in requests]
        rows.extend(t.num_rows for t in tables)
        return tables

    return read


@pytest.mark.parametrize(("query", "cut"), TOP_N)
def test_a_top_n_query_reads_its_limit_of_each_partition(journals, query: str, cut: int) -> None:
    parts, whole = journals
    (fetch,) = plan(query, LAYOUT).fetches
    assert fetch.sql is not None and f"LIMIT {cut})" in fetch.sql
    rows: list[int] = []
    got = run(query, LAYOUT, counting(parts, rows), timeout_s=30)
    assert got.schema == whole.sql(query).schema
    assert got.to_pylist() == whole.sql(query).to_pylist()
    assert len(rows) == LAYOUT.count and max(rows) <= cut


def test_a_bare_limit_reads_its_limit_of_each_partition(journals) -> None:
    parts, whole = journals
    rows: list[int] = []
    query = "SELECT id FROM sys_invocation WHERE status = 'completed' LIMIT 6"
    got = run(query, LAYOUT, counting(parts, rows), timeout_s=30)
    completed = {r["id"] for r in whole.sql(query.replace(" LIMIT 6", "")).to_pylist()}
    assert got.num_rows == 6 and {r["id"] for r in got.to_pylist()} <= completed
    assert max(rows) <= 6


NOT_TOP_N = [
    "SELECT count(*) AS n FROM sys_invocation ORDER BY 1 LIMIT 3",  # an aggregate
    "SELECT status, count(*) AS n FROM sys_invocation GROUP BY 1 ORDER BY 1 LIMIT 2",
    "SELECT DISTINCT status FROM sys_invocation ORDER BY status LIMIT 2",
    "SELECT id, row_number() OVER (ORDER BY id) AS r FROM sys_invocation ORDER BY id LIMIT 3",
    "SELECT id AS k FROM sys_invocation ORDER BY k LIMIT 3",  # a select-list alias
    "SELECT id FROM sys_invocation ORDER BY 1 LIMIT 3",  # a position
    "SELECT id FROM sys_invocation WHERE id IN (SELECT invocation_id FROM sys_journal)"
    " ORDER BY id LIMIT 3",
    "SELECT id FROM sys_invocation ORDER BY id LIMIT 3 OFFSET (SELECT 1)",
    "SELECT i.id FROM sys_invocation i, sys_journal j WHERE j.invocation_id = i.id"
    " ORDER BY i.id LIMIT 3",
    "WITH x AS (SELECT * FROM sys_invocation) SELECT id FROM x ORDER BY id LIMIT 3",
    "SELECT id FROM sys_invocation QUALIFY row_number() OVER (ORDER BY id) <= 5"
    " ORDER BY id LIMIT 3",
    "SELECT a FROM sys_invocation i(a) ORDER BY a LIMIT 3",  # columns renamed
]
RANDOM = [
    "SELECT id FROM sys_invocation ORDER BY random() LIMIT 3",  # drawn once only
    "SELECT id FROM sys_invocation WHERE random() < 2 ORDER BY id LIMIT 3",
    "SELECT id FROM sys_invocation USING SAMPLE 50% ORDER BY id LIMIT 3",
    "SELECT id FROM sys_invocation LIMIT 10%",
]


@pytest.mark.parametrize("query", NOT_TOP_N)
def test_other_queries_read_every_row_and_answer_as_one_journal(journals, query: str) -> None:
    parts, whole = journals
    assert all(f.sql is None for f in plan(query, LAYOUT).fetches)
    assert federated(parts, query).to_pylist() == whole.sql(query).to_pylist()


@pytest.mark.parametrize("query", RANDOM)
def test_a_random_draw_is_not_pushed_down(query: str) -> None:
    assert all(f.sql is None for f in plan(query, LAYOUT).fetches)

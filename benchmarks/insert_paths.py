"""``python -m benchmarks.journal_write --paths``: ways a drain could insert one group commit
into DuckDB, compared.

Each way (the appender with and without a transaction, an index, JSON-typed columns or one column
per field; Arrow; multi-row VALUES; unnest) writes the same batches to a table of its own in a
file of its own; the ways take turns in a random order, so machine noise hits all alike.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.journal_write import Batches, _stats

WIDE_DDL = (
    "seq BIGINT, kind VARCHAR, id VARCHAR, service VARCHAR, key VARCHAR, name VARCHAR,"
    " entry_type VARCHAR, idx INTEGER, data VARCHAR, failure VARCHAR, code INTEGER,"
    " at_ms BIGINT, flag BOOLEAN, route_hash UBIGINT, host_order BIGINT,"
    " idempotency_key VARCHAR, invoked_by VARCHAR"
)


def _wide_rows(batch: Any, seq: int) -> list[tuple[Any, ...]]:
    """One column per record field (17 columns), for comparison with the log's 6."""
    from journal.kinds import LogKind
    from journal.records import Accept, Entry, Output, StateWrite, StatusChange

    rows: list[tuple[Any, ...]] = [(seq, LogKind.BATCH, batch.batch_id) + (None,) * 14]
    for r in batch.records:
        seq += 1
        if isinstance(r, Accept):
            rows.append(
                (
                    seq,
                    LogKind.ACCEPT,
                    r.id,
                    r.service,
                    r.key,
                    r.handler,
                    None,
                    None,
                    r.input,
                    None,
                    None,
                    r.created_at_ms,
                    None,
                    r.route_hash,
                    r.host_order,
                    r.idempotency_key,
                    r.invoked_by,
                )
            )
        elif isinstance(r, Entry):
            rows.append(
                (
                    seq,
                    LogKind.ENTRY,
                    r.invocation_id,
                    None,
                    None,
                    r.name,
                    r.entry_type,
                    r.idx,
                    r.result,
                    r.failure,
                    r.failure_code,
                    r.created_at_ms,
                    r.completed,
                    None,
                    None,
                    None,
                    None,
                )
            )
        elif isinstance(r, StateWrite):
            rows.append(
                (
                    seq,
                    LogKind.STATE,
                    f"{r.service}/{r.key}",
                    r.service,
                    r.key,
                    r.name,
                    None,
                    None,
                    r.value,
                )
                + (None,) * 8
            )
        elif isinstance(r, StatusChange):
            rows.append(
                (
                    seq,
                    LogKind.STATUS,
                    r.invocation_id,
                    None,
                    None,
                    r.status,
                    None,
                    r.retry_count,
                    None,
                    r.failure,
                    None,
                    r.at_ms,
                )
                + (None,) * 5
            )
        elif isinstance(r, Output):
            rows.append(
                (
                    seq,
                    LogKind.OUTPUT,
                    r.invocation_id,
                    None,
                    None,
                    None,
                    None,
                    None,
                    r.output,
                    r.failure,
                    r.failure_code,
                    r.completed_at_ms,
                    r.ok,
                    None,
                    None,
                    None,
                    None,
                )
            )
    return rows


class _Path:
    """One way of inserting a group commit's rows, on a table of its own in a file of its own."""

    def __init__(
        self, root: Path, name: str, ddl: str, how: str, *, index: bool = True, wide: bool = False
    ) -> None:
        import duckdb

        self.how, self.wide = how, wide
        self.con = duckdb.connect(str(root / f"{len(list(root.iterdir()))}.duckdb"))
        self.con.execute(f"CREATE TABLE log({ddl})")
        if index:
            self.con.execute("CREATE INDEX log_id ON log(id)")
        self.con.execute("SET enable_external_access = false")
        self.columns = [c[0] for c in self.con.execute("DESCRIBE log").fetchall()]
        self.types = [c[1] for c in self.con.execute("DESCRIBE log").fetchall()]
        self.appender = self.con.appender("log")
        self.seq = 0
        self.name = name

    def write(self, batches: list[Any]) -> None:
        from journal.rows import log_rows

        encode = _wide_rows if self.wide else log_rows
        rows: list[tuple[Any, ...]] = []
        for b in batches:
            rows += encode(b, self.seq)
            self.seq += len(b.records) + 1
        if self.how == "appender":
            self.appender.append_rows(rows)
            self.appender.flush()
        elif self.how == "appender+txn":
            self.con.execute("BEGIN")
            self.appender.append_rows(rows)
            self.appender.flush()
            self.con.execute("COMMIT")
        elif self.how in ("arrow", "from_arrow"):
            import pyarrow as pa

            columns = zip(*rows, strict=True)
            table = pa.table(
                [
                    pa.array(c, type=_arrow_type(t))
                    for c, t in zip(columns, self.types, strict=True)
                ],
                names=self.columns,
            )
            if self.how == "arrow":
                self.con.register("group_rows", table)
                self.con.execute("INSERT INTO log SELECT * FROM group_rows")
                self.con.unregister("group_rows")
            else:
                self.con.from_arrow(table).insert_into("log")
        elif self.how == "values":
            row = "(" + ", ".join("?" * len(self.columns)) + ")"
            self.con.execute(
                "INSERT INTO log VALUES " + ", ".join([row] * len(rows)),
                [v for r in rows for v in r],
            )
        elif self.how == "unnest":
            select = ", ".join(f"unnest(${i + 1}::{t}[])" for i, t in enumerate(self.types))
            self.con.execute(
                f"INSERT INTO log SELECT {select}", [list(c) for c in zip(*rows, strict=True)]
            )


def _arrow_type(sql_type: str) -> Any:
    import pyarrow as pa

    return {
        "BIGINT": pa.int64(),
        "INTEGER": pa.int32(),
        "UBIGINT": pa.uint64(),
        "BOOLEAN": pa.bool_(),
    }.get(sql_type, pa.string())


def insert_paths(quick: bool) -> dict[str, dict[str, Any]]:
    """Median/p99 ms per group commit for each way of writing it, by batches per group."""
    import random

    from journal.store import JournalStore

    root = Path(tempfile.mkdtemp(prefix="journal-paths-"))
    try:
        store = JournalStore(root / "schema")  # the real DDL of the log table
        [ddl] = store._con.execute(
            "SELECT sql FROM duckdb_tables() WHERE table_name = 'log'"
        ).fetchall()[0]
        store.close()
        log_ddl = ddl[ddl.index("(") + 1 : ddl.rindex(")")]
        as_json = log_ddl.replace("data VARCHAR", "data JSON").replace("meta VARCHAR", "meta JSON")
        files = root / "paths"
        files.mkdir()
        variants = [
            ("appender, auto-commit (the log)", log_ddl, "appender", {}),
            ("appender in BEGIN/COMMIT", log_ddl, "appender+txn", {}),
            ("appender, no index on id", log_ddl, "appender", {"index": False}),
            ("appender, data/meta typed JSON", as_json, "appender", {}),
            ("appender, 17 columns (one a field)", WIDE_DDL, "appender", {"wide": True}),
            ("Arrow, register + INSERT SELECT", log_ddl, "arrow", {}),
            ("Arrow, from_arrow().insert_into()", log_ddl, "from_arrow", {}),
            ("INSERT VALUES (?, ...), ...", log_ddl, "values", {}),
            ("INSERT SELECT unnest($n) a column", log_ddl, "unnest", {}),
        ]
        out: dict[str, dict[str, Any]] = {}
        for per_call, iterations in [(1, 200), (20, 60), (100, 25)]:
            if quick:
                iterations = max(10, iterations // 5)
            paths = [_Path(files, name, ddl, how, **kw) for name, ddl, how, kw in variants]
            samples: dict[str, list[float]] = {p.name: [] for p in paths}
            factory = Batches()
            for i in range(iterations + 3):
                for p in random.sample(paths, len(paths)):
                    batches = factory.make(per_call)
                    t0 = time.perf_counter()
                    p.write(batches)
                    if i >= 3:
                        samples[p.name].append((time.perf_counter() - t0) * 1000)
            for p in paths:
                out.setdefault(p.name, {})[f"{per_call} batch{'es' if per_call > 1 else ''}"] = (
                    _stats(samples[p.name])
                )
                p.con.close()
        return out
    finally:
        shutil.rmtree(root, ignore_errors=True)


def paths_table(results: dict[str, dict[str, Any]]) -> str:
    """The comparison as text: a row per way, median / p99 ms per batches in a group."""
    cols = list(next(iter(results.values())))
    width = max(len(n) for n in results) + 2
    lines = [
        "".ljust(width) + "".join(f"{c:>20s}" for c in cols),
        "".ljust(width) + "".join(f"{'median / p99 ms':>20s}" for _ in cols),
    ]
    for name, by in results.items():
        lines.append(
            name.ljust(width)
            + "".join(f"{by[c]['median']:>11.2f} / {by[c]['p99']:<6.2f}" for c in cols)
        )
    return "\n".join(lines)

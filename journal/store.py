"""JournalStore: the one writer of ``journal.duckdb`` (no Ray in here, so it unit-tests alone).

``write`` puts many hosts' batches into one transaction through DuckDB's appender (100 rows
commit in about the time of one); re-sent batches are recognised by id and skipped, so a host
that lost the reply to a commit may safely send again.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict, defaultdict
from pathlib import Path

import duckdb
import pyarrow as pa

from journal.records import (
    Accept,
    Batch,
    Entry,
    Outcome,
    Output,
    PendingInvocation,
    StateWrite,
    StatusChange,
)
from journal.schema import migrate
from journal.sqlguard import check_read_only

DB_FILE = "journal.duckdb"
RECENT_BATCHES = 100_000


class DataDirError(RuntimeError):
    """The data dir cannot be used: not writable, or its journal is open in another process."""


def now_ms() -> int:
    return int(time.time() * 1000)


def open_database(data_dir: str | os.PathLike[str]) -> duckdb.DuckDBPyConnection:
    """Open (creating if needed) the journal database with a clear error when that fails."""
    path = Path(data_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataDirError(f"cannot create data dir {path}: {e}") from None
    if not os.access(path, os.W_OK):
        raise DataDirError(f"data dir {path} is not writable")
    try:
        return duckdb.connect(str(path / DB_FILE))
    except duckdb.IOException as e:
        raise DataDirError(f"data dir {path} is in use by another process: {e}") from None
    except duckdb.Error as e:  # e.g. already open in this process with other settings
        raise DataDirError(f"cannot open the journal in {path}: {e}") from None


_ORDERED_COLUMNS = {
    "invocations": 11,
    "invocation_events": 6,
    "outputs": 6,
    "journal": 9,
    "state_log": 5,
    "batches": 1,
}


class JournalStore:
    """Durable facts of one runtime in one DuckDB file."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.data_dir = Path(data_dir)
        self._con = open_database(self.data_dir)
        try:
            migrate(self._con)
            self._con.execute("SET enable_external_access = false")
            self._con.execute("SET lock_configuration = true")
        except duckdb.InvalidInputException:  # the configuration was locked by an open store
            self._con.close()
            raise DataDirError(f"data dir {self.data_dir} is in use by this process") from None
        self._appenders = {t: self._con.appender(t) for t in _ORDERED_COLUMNS}
        self._seq = self._max_seq() + 1
        self._recent_batches: OrderedDict[str, None] = OrderedDict()

    def close(self) -> None:
        self._con.close()

    def _max_seq(self) -> int:
        rows = self._con.execute(
            "SELECT greatest((SELECT max(seq) FROM invocations), (SELECT max(seq) FROM state_log),"
            " (SELECT max(seq) FROM invocation_events))"
        ).fetchall()
        return rows[0][0] or 0

    # -- writing ---------------------------------------------------------------------------

    def write(self, batches: list[Batch]) -> list[Output]:
        """Write every batch in one transaction; return the outputs that became durable."""
        rows: dict[str, list[tuple]] = defaultdict(list)
        outputs: list[Output] = []
        first_seq = self._seq
        seen = self._already_written([b.batch_id for b in batches if b.resent])
        fresh: list[str] = []
        for batch in batches:
            if batch.batch_id in seen or batch.batch_id in self._recent_batches:
                continue
            seen.add(batch.batch_id)
            fresh.append(batch.batch_id)
            rows["batches"].append((batch.batch_id,))
            for r in batch.records:
                seq = self._seq
                self._seq += 1
                if isinstance(r, Entry):
                    rows["journal"].append((r.invocation_id, r.idx, r.entry_type, r.name,
                                            r.result, r.failure, r.failure_code, r.created_at_ms,
                                            r.completed))
                elif isinstance(r, StateWrite):
                    rows["state_log"].append((r.service, r.key, r.name, r.value, seq))
                elif isinstance(r, Accept):
                    rows["invocations"].append((r.id, r.service, r.handler, r.key, r.route_hash,
                                                r.input, r.idempotency_key, r.invoked_by,
                                                r.created_at_ms, r.host_order, seq))
                elif isinstance(r, StatusChange):
                    rows["invocation_events"].append(
                        (r.invocation_id, r.status, r.retry_count, r.failure, r.at_ms, seq))
                elif isinstance(r, Output):
                    rows["outputs"].append((r.invocation_id, r.ok, r.output, r.failure,
                                            r.failure_code, r.completed_at_ms))
                    outputs.append(r)
                else:  # pragma: no cover - a programming error, not user input
                    raise TypeError(f"unknown journal record {r!r}")
        self._con.execute("BEGIN")
        try:
            for table, table_rows in rows.items():
                appender = self._appenders[table]
                appender.append_rows(table_rows)
                appender.flush()
            self._con.execute("COMMIT")
        except BaseException:
            self._seq = first_seq
            self._con.execute("ROLLBACK")
            for appender in self._appenders.values():
                appender.clear()
            raise
        for batch_id in fresh:  # a late original after its re-sent copy is skipped too
            self._recent_batches[batch_id] = None
        while len(self._recent_batches) > RECENT_BATCHES:
            self._recent_batches.popitem(last=False)
        return outputs

    def _already_written(self, batch_ids: list[str]) -> set[str]:
        if not batch_ids:
            return set()
        rows = self._con.execute(
            "SELECT batch_id FROM batches WHERE batch_id IN (SELECT unnest(?))", [batch_ids]
        ).fetchall()
        return {r[0] for r in rows}

    # -- reading ---------------------------------------------------------------------------

    def _reader(self) -> duckdb.DuckDBPyConnection:
        """A separate connection, so reads run beside the writer's transaction."""
        return self._con.cursor()

    def outcome(self, invocation_id: str) -> Outcome | None:
        with self._reader() as cur:
            rows = cur.execute(
                "SELECT ok, output, failure, failure_code FROM outputs WHERE id = ?",
                [invocation_id],
            ).fetchall()
        return Outcome(*rows[0]) if rows else None

    def accepted(self, invocation_id: str) -> Accept | None:
        with self._reader() as cur:
            rows = cur.execute(
                "SELECT id, service, handler, key, route_hash, input, idempotency_key, invoked_by,"
                " created_at_ms, host_order FROM invocations WHERE id = ?",
                [invocation_id],
            ).fetchall()
        return Accept(*rows[0]) if rows else None

    def pending(
        self,
        services: list[str],
        *,
        partition: tuple[int, int] | None = None,
        key: str | None = None,
    ) -> list[PendingInvocation]:
        """Accepted invocations without output, in acceptance order, with their journals.

        ``partition=(index, count)`` selects the pooled host ``index`` of ``count``;
        ``key`` selects one key (a dedicated host).
        """
        where = ["i.service IN (SELECT unnest($services))",
                 "NOT EXISTS (SELECT 1 FROM outputs o WHERE o.id = i.id)"]
        params: dict[str, object] = {"services": services}
        if partition is not None:
            where.append("i.route_hash % $count = $index")
            params |= {"index": partition[0], "count": partition[1]}
        if key is not None:
            where.append("i.key = $key")
            params["key"] = key
        with self._reader() as cur:
            accepts = cur.execute(
                "SELECT id, service, handler, key, route_hash, input, idempotency_key, invoked_by,"
                f" created_at_ms, host_order FROM invocations i WHERE {' AND '.join(where)}"
                " ORDER BY host_order, seq",
                params,
            ).fetchall()
            if not accepts:
                return []
            ids = [a[0] for a in accepts]
            entries: dict[str, list[Entry]] = defaultdict(list)
            for row in cur.execute(
                "SELECT invocation_id, idx, entry_type, name, result, failure, failure_code,"
                " created_at_ms, completed FROM journal WHERE invocation_id IN (SELECT unnest(?))"
                " ORDER BY invocation_id, idx",
                [ids],
            ).fetchall():
                entries[row[0]].append(Entry(*row))
            retries = dict(cur.execute(
                "SELECT id, max(retry_count) FROM invocation_events"
                " WHERE id IN (SELECT unnest(?)) GROUP BY id",
                [ids],
            ).fetchall())
        return [
            PendingInvocation(Accept(*a), _dedup(entries.get(a[0], [])), retries.get(a[0]) or 0)
            for a in accepts
        ]

    def pending_keys(self, service: str) -> list[str]:
        """Keys of ``service`` with accepted, unfinished invocations."""
        with self._reader() as cur:
            rows = cur.execute(
                "SELECT DISTINCT key FROM invocations i WHERE service = ? AND key IS NOT NULL"
                " AND NOT EXISTS (SELECT 1 FROM outputs o WHERE o.id = i.id)",
                [service],
            ).fetchall()
        return [r[0] for r in rows]

    def load_state(self, service: str, key: str) -> dict[str, str]:
        """The committed state of one object key: name -> JSON value."""
        with self._reader() as cur:
            rows = cur.execute(
                "SELECT name, arg_max_null(value, seq)::VARCHAR FROM state_log"
                " WHERE service = ? AND key = ? GROUP BY name",
                [service, key],
            ).fetchall()
        return {name: value for name, value in rows if value is not None}

    def sql(self, query: str) -> pa.Table:
        """Run one read-only query (see ``journal.sqlguard``) and return an Arrow table."""
        check_read_only(query)
        with self._reader() as cur:
            cur.execute("BEGIN TRANSACTION")
            try:
                return cur.sql(query).to_arrow_table()
            finally:
                cur.execute("ROLLBACK")


def _dedup(entries: list[Entry]) -> list[Entry]:
    """Keep the first entry per index (a re-sent batch can never add a second, but be safe)."""
    out: list[Entry] = []
    for e in entries:
        if e.idx == len(out):
            out.append(e)
    return out

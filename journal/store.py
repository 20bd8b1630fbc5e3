"""JournalStore: the one writer of ``journal.duckdb`` (no Ray in here, so it unit-tests alone).

``write`` makes many hosts' batches durable together; re-sent batches are recognised by id and
skipped, so a host that lost the reply to a commit may safely send again.

Write path (the table is described in ``journal.schema``, its rows in ``journal.rows``).
``write`` makes a group commit's rows durable in the write-ahead log (``journal.wal``: one
frame, one ``fdatasync``) and returns; ``drain`` moves every row written since the last drain
into DuckDB as below, in one transaction, and every read drains first. So DuckDB's fixed cost
per transaction is paid once per drain, not once per group commit, and is off the path a caller
waits on.

Every record of a group commit, plus one row per batch id (and at most once a second a clock
mark, which retention counts time by: ``journal.retention``), is one row of the append-only
``log`` table, and a drain goes in with ONE appender flush and no BEGIN/COMMIT: in auto-commit
mode a flush is one statement, so one transaction and one WAL fsync. (A drain of more than
``ONE_STATEMENT_MAX_ROWS`` rows gets an explicit transaction around the flush, should the
appender ever flush in parts.)

Why this shape: what costs is fixed CPU per statement and per column (the appender plans an
INSERT at every flush), then per value; the fsync is small beside it. Hence one statement, six
columns (the fields no look-up filters on travel as one small JSON object, ``meta``, formatted
in ``journal.rows``, which also type-checks the integers), and no JSON validation on the way
in: a JSON-typed column parses every value, so payloads are stored as text and the views cast
them. Arrow tables and multi-row INSERTs lost on the small groups that are the common case. The
index on ``id`` turns a scan of the log into a look-up for ``outcome``, ``accepted``,
``load_state`` and re-sent batch ids; a second index (on the object of accept rows, for a
dedicated host's ``pending(key=...)``) costs every write and was left out: that look-up scans
two columns instead, rarely, while a dedicated host's actor starts anyway. The candidates are
compared by ``python -m benchmarks.journal_write --paths`` (figures: docs/performance.md).

Reads are mixed in by aggregate: invocations and timers (``journal.invocations``), object state
(``journal.states``); users' SQL runs through ``journal.usersql``.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import duckdb
import pyarrow as pa

from journal import retention
from journal.clock import now_ms
from journal.errors import DataDirError, DataDirInUse, Fenced
from journal.fence import Fence
from journal.invocations import InvocationReads
from journal.kinds import LogKind
from journal.private import private_data_dir, tighten
from journal.records import (
    Batch,
    Output,
)
from journal.retention import PruneStats
from journal.rows import log_rows, rows_of
from journal.schedules import ScheduleStore
from journal.schema import migrate
from journal.secret import SECRET_FILE
from journal.states import StateReads
from journal.usersql import MAX_RESULT_BYTES, run_read_only
from journal.wal import WAL_DIR, Row, WriteAheadLog

DB_FILE = "journal.duckdb"
# The runtime's files in a data dir, and the start of their names: DuckDB's .wal beside the
# journal, and ``journal.actor.CONFIG_FILE`` (runtime-config.pickle) with its .tmp.
DATA_FILES = [DB_FILE, SECRET_FILE, "runtime-config"]
RECENT_BATCHES = 100_000
ONE_STATEMENT_MAX_ROWS = 10_000  # larger writes get an explicit transaction around the flush


def open_database(data_dir: str | os.PathLike[str]) -> duckdb.DuckDBPyConnection:
    """Open (creating if needed) the journal database with a clear error when that fails. The
    data dir and the runtime's files in it are made owner-only (``journal.private``)."""
    path = Path(data_dir)
    try:
        private_data_dir(path)
    except OSError as e:
        raise DataDirError(f"cannot create data dir {path}: {e}") from None
    if not os.access(path, os.W_OK):
        raise DataDirError(f"data dir {path} is not writable")
    try:
        con = duckdb.connect(str(path / DB_FILE))
    except duckdb.IOException as e:
        error = DataDirInUse if "lock" in str(e) else DataDirError  # DuckDB's file lock
        raise error(f"data dir {path} is in use by another process: {e}") from None
    except duckdb.Error as e:  # e.g. already open in this process with other settings
        raise DataDirError(f"cannot open the journal in {path}: {e}") from None
    tighten(path, DATA_FILES, [WAL_DIR])
    return con


class JournalStore(InvocationReads, StateReads, ScheduleStore):
    """Durable facts of one runtime in one DuckDB file.

    ``clock`` (epoch ms) stamps the marks retention counts time by (see ``prune``); tests
    inject their own. ``fence``: this writer's hold on the directory (``journal.fence``),
    checked before anything goes into DuckDB or the log's old segments are deleted; taken
    before the store opens, so the recovery reads every frame earlier writers acknowledged."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        clock: Callable[[], int] = now_ms,
        fence: Fence | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self._clock = clock
        self._fence = fence
        self._con = open_database(self.data_dir)
        try:
            migrate(self._con)
            self._con.execute("SET enable_external_access = false")
            self._con.execute("SET lock_configuration = true")
        except duckdb.InvalidInputException:  # the configuration was locked by an open store
            self._con.close()
            raise DataDirError(f"data dir {self.data_dir} is in use by this process") from None
        self._appender = self._con.appender("log")
        self._wal = WriteAheadLog(self.data_dir, fence=fence)
        try:
            self._recover()
        except BaseException:  # e.g. fenced while recovering: leave the file to the newer one
            self._con.close()
            raise
        self._seq = self._max_seq() + 1
        self._undrained: list[Row] = []  # durable in the write-ahead log, not yet in DuckDB
        self.reads = 0  # journal reads so far (each drains first: a cost the benchmarks show)
        self._drain_lock = threading.Lock()
        self._recent_batches: OrderedDict[str, None] = OrderedDict()
        self._write_lock = threading.Lock()  # write() and mark() may come from two threads
        self._prune_lock = threading.Lock()
        self._last_mark_ms = -retention.MARK_INTERVAL_MS
        self._unmarked = True  # rows may have been written since the last mark
        self._state_seen = 0  # state entries up to this seq were compacted (see prune)
        self._checkpointed_at = -retention.CHECKPOINT_INTERVAL_S  # time.monotonic()

    def close(self) -> None:
        """Move what the write-ahead log holds into DuckDB (so the file alone has it all)."""
        try:
            self.drain()
            if self._fence is not None:  # the segments are the directory's owner's to delete
                self._fence.check()
        except Fenced:
            self.abandon()
            raise
        with self._write_lock:
            self._wal.reset()
        self._con.close()

    def abandon(self) -> None:
        """Close without moving anything into DuckDB and without deleting any log segment:
        a newer writer owns the directory (``journal.fence``) and its recovery replays what
        this one left in the log."""
        with self._prune_lock, self._drain_lock, self._write_lock:
            self._undrained = []
            self._wal.close()
            self._con.close()

    def _recover(self) -> None:
        """Put the rows the write-ahead log holds beyond DuckDB's into DuckDB, then start a new
        log: a journal that died before its last drain loses nothing it acknowledged."""
        top = self._max_seq()
        rows = [r for r in self._wal.replay() if r[0] > top]
        if rows:
            self._append(rows)
        if self._fence is not None:  # deleting the segments is for the directory's owner only
            self._fence.check()
        self._wal.reset()

    def _max_seq(self) -> int:
        return self._con.execute("SELECT max(seq) FROM log").fetchall()[0][0] or 0

    # -- writing ---------------------------------------------------------------------------

    def write(self, batches: list[Batch]) -> list[Output]:
        """Make every batch durable in one write-ahead log frame (one ``fdatasync``); return
        the outputs that became durable. DuckDB gets the rows at the next ``drain``."""
        with self._write_lock:
            return self._write(batches)

    @property
    def undrained(self) -> int:
        """Rows durable in the write-ahead log that DuckDB does not hold yet."""
        return len(self._undrained)

    def drain(self) -> int:
        """Move the rows written since the last drain into DuckDB, in one transaction, and
        drop the log segments that held them; return how many. Every read does this first."""
        with self._drain_lock:
            with self._write_lock:
                rows, self._undrained = self._undrained, []
            if not rows:
                return 0
            try:
                if self._fence is not None:
                    self._fence.check()
                self._append(rows)
            except BaseException:
                with self._write_lock:
                    self._undrained[:0] = rows
                raise
            with self._write_lock:
                self._wal.release(rows[-1][0])
            return len(rows)

    def _log(self, rows: list[Row]) -> None:
        """Durable now (the write-ahead log), in DuckDB at the next drain. Under the write lock."""
        self._wal.append(rows)
        self._undrained += rows

    def _write(self, batches: list[Batch]) -> list[Output]:
        seen = self._already_written([b.batch_id for b in batches if b.resent])
        recent = self._recent_batches
        rows: list[Row] = []
        outputs: list[Output] = []
        fresh: list[str] = []
        seq = self._seq
        for batch in batches:
            batch_id = batch.batch_id
            if batch_id in seen or batch_id in recent:
                continue
            seen.add(batch_id)
            fresh.append(batch_id)
            batch_rows = log_rows(batch, seq)
            rows += batch_rows
            seq += len(batch_rows)
            outputs += [r for r in batch.records if type(r) is Output]
        if rows:
            at = self._clock()
            marked = at - self._last_mark_ms >= retention.MARK_INTERVAL_MS
            if marked:  # a clock mark after the rows: they were written by ``at``
                rows.append((seq, LogKind.MARK, str(at), None, None, None))
                seq += 1
            self._log(rows)
            self._unmarked = not marked
            if marked:
                self._last_mark_ms = at
        self._seq = seq
        for batch_id in fresh:  # a late original after its re-sent copy is skipped too
            recent[batch_id] = None
        while len(recent) > RECENT_BATCHES:
            recent.popitem(last=False)
        return outputs

    def _append(self, rows: list[Row]) -> None:
        """One appender flush: in auto-commit mode one statement, so one transaction."""
        explicit = len(rows) > ONE_STATEMENT_MAX_ROWS
        if explicit:
            self._con.execute("BEGIN")
        try:
            self._appender.append_rows(rows)
            self._appender.flush()
            if explicit:
                self._con.execute("COMMIT")
        except BaseException:
            self._appender.clear()
            if explicit:
                self._con.execute("ROLLBACK")
            raise

    def mark(self) -> None:
        """Write a clock mark if rows were written since the last one, so that rows of a quiet
        spell get a time too (``prune`` calls this first)."""
        with self._write_lock:
            at = self._clock()
            if not self._unmarked or at < self._last_mark_ms:
                return
            self._log([(self._seq, LogKind.MARK, str(at), None, None, None)])
            self._seq += 1
            self._last_mark_ms = at
            self._unmarked = False

    # -- retention -------------------------------------------------------------------------

    def prune(
        self,
        retention_ms: int,
        now_ms: int | None = None,
        *,
        batch_retention_ms: int | None = None,
        compact_state: bool = True,
        chunk_rows: int = retention.CHUNK_ROWS,
        pause_s: float = retention.CHUNK_PAUSE_S,
        checkpoint: bool | None = None,
    ) -> PruneStats:
        """Delete what invocations that finished more than ``retention_ms`` ago left in the
        log, superseded versions of state entries, and batch ids and marks older than
        ``batch_retention_ms`` (default ``max(retention_ms, 1 h)``); never an unfinished
        invocation or a state entry's current value. See ``journal.retention``.

        "Finished at" is when the output was written, by this store's clock (``now_ms``
        defaults to it). Runs on a connection of its own beside ``write``: only the DELETEs'
        commits make a concurrent write wait, a chunk (~``chunk_rows`` rows) at a time.
        ``checkpoint`` (default: if the last was ``CHECKPOINT_INTERVAL_S`` ago) checkpoints
        after deleting, which vacuums the deleted rows so their space is reused."""
        if retention_ms < 0:
            raise ValueError(f"retention_ms must not be negative, not {retention_ms}")
        with self._prune_lock:
            self.mark()
            self.drain()
            if self._fence is not None:
                self._fence.check()
            now = self._clock() if now_ms is None else now_ms
            if batch_retention_ms is None:
                batch_retention_ms = max(retention_ms, retention.BATCH_ID_RETENTION_MS)
            if checkpoint is None:
                checkpoint = (
                    time.monotonic() - self._checkpointed_at >= retention.CHECKPOINT_INTERVAL_S
                )
            with self._con.cursor() as cur:
                stats, self._state_seen = retention.prune(
                    cur,
                    now - retention_ms,
                    now - batch_retention_ms,
                    state_since=self._state_seen,
                    compact_state=compact_state,
                    chunk_rows=chunk_rows,
                    pause_s=pause_s,
                    checkpoint=checkpoint,
                )
            if stats.checkpointed:
                self._checkpointed_at = time.monotonic()
            return stats

    def _already_written(self, batch_ids: list[str]) -> set[str]:
        """Which of these batches DuckDB holds (under the write lock, so no drain: the batches
        written since the last drain are in ``_recent_batches``)."""
        if not batch_ids:
            return set()
        with self._con.cursor() as cur:
            return {r[1] for r in rows_of(cur, ["id"], batch_ids, (LogKind.BATCH,))}

    # -- reading ---------------------------------------------------------------------------

    def _reader(self) -> duckdb.DuckDBPyConnection:
        """A separate connection, so reads run beside the writer's transaction, after a drain,
        so they see everything acknowledged."""
        self.reads += 1
        self.drain()
        return self._con.cursor()

    def set_services(self, rows: Sequence[Sequence[str | None]]) -> None:
        """Replace the registry ``sys_service`` shows: (name, ty, handler, kind, options JSON)
        per handler (kind None for a service's). A table of its own, replaced in one
        transaction beside the log's writes."""
        with self._con.cursor() as cur:
            cur.execute("BEGIN TRANSACTION")
            try:
                cur.execute("DELETE FROM service_registry")
                if rows:
                    cur.executemany(
                        "INSERT INTO service_registry VALUES (?, ?, ?, ?, ?)",
                        [list(r) for r in rows],
                    )
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise

    def user_cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor of its own for a user's query (``journal.usersql``), seeing every
        acknowledged row."""
        return self._reader()

    def sql(self, query: str, max_bytes: int = MAX_RESULT_BYTES) -> pa.Table:
        """Run one read-only query (see ``journal.sqlguard``) and return an Arrow table, here
        and now (the journal actor runs users' queries through ``journal.usersql`` instead)."""
        with self._reader() as cur:
            return run_read_only(cur, query, max_bytes)

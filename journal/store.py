"""JournalStore: the one writer of ``journal.duckdb`` (no Ray in here, so it unit-tests alone).

``write`` makes many hosts' batches durable together; re-sent batches are recognised by id and
skipped, so a host that lost the reply to a commit may safely send again.

Write path (the table is described in ``journal.schema``). ``write`` makes a group commit's rows
durable in the write-ahead log (``journal.wal``: one frame, one ``fdatasync``) and
returns; ``drain`` moves every row written since the last drain into DuckDB as below, in one
transaction, and every read drains first. So DuckDB's fixed cost per transaction is paid once
per drain, not once per group commit, and is off the path a caller waits on.

Every record of a group commit, plus one row per batch id (and at most once a second a clock
mark, which retention counts time by: ``journal.retention``), is one row of the append-only
``log`` table, and a drain goes in with ONE appender flush and no BEGIN/COMMIT: in auto-commit
mode a flush is one statement, so one transaction and one WAL fsync. (A drain of more than
``ONE_STATEMENT_MAX_ROWS`` rows gets an explicit transaction around the flush, should the
appender ever flush in parts.)

Why this shape (the figures are in docs/performance.md, reproduced with
``python -m benchmarks.journal_write --paths``): what costs is fixed CPU per statement and per
column (the appender plans an INSERT at every flush), then per value. Hence one statement, six
columns (the fields no look-up filters on travel as one small JSON object, ``meta``, formatted
here, which also type-checks the integers), and no JSON validation on the way in: a JSON-typed
column parses every value, so payloads are stored as text and the views cast them. Arrow lost
on small groups (registering the table and planning the INSERT) and ``executemany`` costs per
row. The index on ``id`` costs little per write and turns a scan of the log into a look-up for
``outcome``, ``accepted``, ``load_state`` and re-sent batch ids. A second index (on the object
of accept rows, for a dedicated host's ``pending(key=...)``) was left out: that look-up scans
two columns instead, small next to starting a dedicated host's actor.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Collection, Sequence
from json.encoder import encode_basestring as _q  # type: ignore[attr-defined]
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from journal import retention
from journal.clock import now_ms
from journal.errors import DataDirError
from journal.keyfilter import KeyFilter
from journal.kinds import LogKind, TimerKind
from journal.private import private_data_dir, tighten
from journal.records import (
    Accept,
    AttemptFailed,
    Batch,
    Completion,
    Entry,
    Outcome,
    Output,
    PendingInvocation,
    StateWrite,
    StatusChange,
    Timer,
    TimerFired,
)
from journal.retention import PruneStats
from journal.schema import migrate
from journal.secret import SECRET_FILE
from journal.usersql import MAX_RESULT_BYTES, run_read_only
from journal.wal import WAL_DIR, Row, WriteAheadLog

DB_FILE = "journal.duckdb"
# The runtime's files in a data dir, and the start of their names: DuckDB's .wal beside the
# journal, and ``journal.actor.CONFIG_FILE`` (runtime-config.pickle) with its .tmp.
DATA_FILES = [DB_FILE, SECRET_FILE, "runtime-config"]
EVENT_TRANSIENT_ERROR = "TransientError"  # sys_journal_events.event_type of a failed attempt
RECENT_BATCHES = 100_000
INDEX_LOOKUP_MAX_IDS = 128  # up to this many ids, look them up in the index; else scan + join
FOLD_IN_SQL_ROWS = 1_000  # load_state folds a key's history in Python up to this many rows
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
        raise DataDirError(f"data dir {path} is in use by another process: {e}") from None
    except duckdb.Error as e:  # e.g. already open in this process with other settings
        raise DataDirError(f"cannot open the journal in {path}: {e}") from None
    tighten(path, DATA_FILES, [WAL_DIR])
    return con


# -- encoding records as log rows (seq, kind, id, name, data, meta) -----------------------------
# ``meta`` is built by string formatting: ``:d`` refuses anything but an int (or bool) and ``_q``
# (the C JSON string encoder) anything but a str, so a malformed record fails the write up front.

_BOOL = {True: "true", False: "false", None: "null"}
_ROUTE = "CASE WHEN kind = 'accept' THEN (meta->>'route_hash')::UBIGINT END"


def _object(service: str, key: str | None) -> str:
    """'service/key' ('service' without a key): the object an accept or state row belongs to."""
    if "/" in service:
        raise ValueError(f"service name {service!r} contains '/'")
    return service if key is None else f"{service}/{key}"


def _accept_row(seq: int, r: Accept) -> Row:
    meta = (f'{{"handler":{_q(r.handler)},"route_hash":{r.route_hash:d}'
            f',"created_at_ms":{r.created_at_ms:d},"host_order":{r.host_order:d}')
    if r.idempotency_key is not None:
        meta += ',"idempotency_key":' + _q(r.idempotency_key)
    if r.invoked_by is not None:
        meta += ',"invoked_by":' + _q(r.invoked_by)
    return (seq, LogKind.ACCEPT, r.id, _object(r.service, r.key), r.input, meta + "}")


def _entry_row(seq: int, r: Entry) -> Row:
    meta = (f'{{"idx":{r.idx:d},"entry_type":{_q(r.entry_type)}'
            f',"created_at_ms":{r.created_at_ms:d},"completed":{_BOOL[r.completed]}')
    if r.failure is not None:
        meta += ',"failure":' + _q(r.failure)
    if r.failure_code is not None:
        meta += f',"failure_code":{r.failure_code:d}'
    return (seq, LogKind.ENTRY, r.invocation_id, r.name, r.result, meta + "}")


def _state_row(seq: int, r: StateWrite) -> Row:
    return (seq, LogKind.STATE, _object(r.service, r.key), r.name, r.value, None)


def _status_row(seq: int, r: StatusChange) -> Row:
    meta = f'{{"retry_count":{r.retry_count:d},"at_ms":{r.at_ms:d}'
    if r.failure is not None:
        meta += ',"failure":' + _q(r.failure)
    return (seq, LogKind.STATUS, r.invocation_id, r.status, None, meta + "}")


def _output_row(seq: int, r: Output) -> Row:
    meta = f'{{"ok":{_BOOL[r.ok]},"completed_at_ms":{r.completed_at_ms:d}'
    if r.failure is not None:
        meta += ',"failure":' + _q(r.failure)
    if r.failure_code is not None:
        meta += f',"failure_code":{r.failure_code:d}'
    return (seq, LogKind.OUTPUT, r.invocation_id, None, r.output, meta + "}")


def _timer_row(seq: int, r: Timer) -> Row:
    meta = (f'{{"idx":{r.idx:d},"timer_kind":{_q(r.kind)},"fire_at_ms":{r.fire_at_ms:d}'
            f',"host":{_q(r.host)}}}')
    return (seq, LogKind.TIMER, r.invocation_id, r.timer_id, None, meta)


def _fired_row(seq: int, r: TimerFired) -> Row:
    return (seq, LogKind.FIRED, r.invocation_id, r.timer_id, None, f'{{"at_ms":{r.at_ms:d}}}')


def _completion_row(seq: int, r: Completion) -> Row:
    meta = f'{{"idx":{r.idx:d},"at_ms":{r.at_ms:d}'
    if r.failure is not None:
        meta += ',"failure":' + _q(r.failure)
    if r.failure_code is not None:
        meta += f',"failure_code":{r.failure_code:d}'
    if r.by is not None:
        meta += ',"by":' + _q(r.by)
    return (seq, LogKind.COMPLETION, r.invocation_id, None, r.result, meta + "}")


def _event_row(seq: int, r: AttemptFailed) -> Row:
    event = {"failure": r.failure, "stacktrace": r.stacktrace, "retry_count": r.retry_count,
             "related_entry_index": r.related_entry_index,
             "related_entry_name": r.related_entry_name,
             "related_entry_type": r.related_entry_type,
             "next_retry_at_ms": r.next_retry_at_ms}
    return (seq, LogKind.EVENT, r.invocation_id, EVENT_TRANSIENT_ERROR, json.dumps(event),
            f'{{"at_ms":{r.at_ms:d}}}')


_ENCODERS: dict[type, Callable[[int, Any], Row]] = {
    Accept: _accept_row,
    Entry: _entry_row,
    StateWrite: _state_row,
    StatusChange: _status_row,
    Output: _output_row,
    Timer: _timer_row,
    TimerFired: _fired_row,
    Completion: _completion_row,
    AttemptFailed: _event_row,
}


def log_rows(batch: Batch, seq: int) -> list[Row]:
    """The log rows of one batch, numbered from ``seq``: its batch-id row, then its records."""
    rows: list[Row] = [(seq, LogKind.BATCH, batch.batch_id, None, None, None)]
    for r in batch.records:
        seq += 1
        encode = _ENCODERS.get(type(r))
        if encode is None:  # pragma: no cover - a programming error, not user input
            raise TypeError(f"unknown journal record {r!r}")
        rows.append(encode(seq, r))
    return rows


# -- decoding ------------------------------------------------------------------------------------


def _accept(id: str, name: str, data: str, meta: str) -> Accept:
    m = json.loads(meta)
    service, slash, key = name.partition("/")
    return Accept(id, service, m["handler"], key if slash else None, m["route_hash"], data,
                  m.get("idempotency_key"), m.get("invoked_by"), m["created_at_ms"],
                  m["host_order"])


def _entry(id: str, name: str | None, data: str | None, meta: str) -> Entry:
    m = json.loads(meta)
    return Entry(id, m["idx"], m["entry_type"], name, data, m.get("failure"),
                 m.get("failure_code"), m["created_at_ms"], m["completed"])


def _completion(id: str, data: str | None, meta: str) -> Completion:
    m = json.loads(meta)
    return Completion(id, m["idx"], data, m.get("failure"), m.get("failure_code"), m["at_ms"],
                      m.get("by"))


def _outcome(data: str | None, meta: str) -> Outcome:
    m = json.loads(meta)
    return Outcome(m["ok"], data, m.get("failure"), m.get("failure_code"))


class JournalStore:
    """Durable facts of one runtime in one DuckDB file.

    ``clock`` (epoch ms) stamps the marks retention counts time by (see ``prune``); tests
    inject their own."""

    def __init__(self, data_dir: str | os.PathLike[str], *,
                 clock: Callable[[], int] = now_ms) -> None:
        self.data_dir = Path(data_dir)
        self._clock = clock
        self._con = open_database(self.data_dir)
        try:
            migrate(self._con)
            self._con.execute("SET enable_external_access = false")
            self._con.execute("SET lock_configuration = true")
        except duckdb.InvalidInputException:  # the configuration was locked by an open store
            self._con.close()
            raise DataDirError(f"data dir {self.data_dir} is in use by this process") from None
        self._appender = self._con.appender("log")
        self._wal = WriteAheadLog(self.data_dir)
        self._recover()
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
        self.drain()
        with self._write_lock:
            self._wal.reset()
        self._con.close()

    def _recover(self) -> None:
        """Put the rows the write-ahead log holds beyond DuckDB's into DuckDB, then start a new
        log: a journal that died before its last drain loses nothing it acknowledged."""
        top = self._max_seq()
        rows = [r for r in self._wal.replay() if r[0] > top]
        if rows:
            self._append(rows)
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
            now = self._clock() if now_ms is None else now_ms
            if batch_retention_ms is None:
                batch_retention_ms = max(retention_ms, retention.BATCH_ID_RETENTION_MS)
            if checkpoint is None:
                checkpoint = (time.monotonic() - self._checkpointed_at
                              >= retention.CHECKPOINT_INTERVAL_S)
            with self._con.cursor() as cur:
                stats, self._state_seen = retention.prune(
                    cur, now - retention_ms, now - batch_retention_ms,
                    state_since=self._state_seen, compact_state=compact_state,
                    chunk_rows=chunk_rows, pause_s=pause_s, checkpoint=checkpoint)
            if stats.checkpointed:
                self._checkpointed_at = time.monotonic()
            return stats

    def _already_written(self, batch_ids: list[str]) -> set[str]:
        """Which of these batches DuckDB holds (under the write lock, so no drain: the batches
        written since the last drain are in ``_recent_batches``)."""
        if not batch_ids:
            return set()
        with self._con.cursor() as cur:
            return {r[1] for r in _rows_of(cur, ["id"], batch_ids, (LogKind.BATCH,))}

    # -- reading ---------------------------------------------------------------------------

    def _reader(self) -> duckdb.DuckDBPyConnection:
        """A separate connection, so reads run beside the writer's transaction, after a drain,
        so they see everything acknowledged."""
        self.reads += 1
        self.drain()
        return self._con.cursor()

    def outcome(self, invocation_id: str) -> Outcome | None:
        with self._reader() as cur:
            rows = _rows_of(cur, ["data", "meta"], [invocation_id], (LogKind.OUTPUT,))
        return _outcome(*rows[0][1:]) if rows else None

    def accepted(self, invocation_id: str) -> Accept | None:
        with self._reader() as cur:
            rows = _rows_of(cur, ["id", "name", "data", "meta"], [invocation_id], (LogKind.ACCEPT,))
        return _accept(*rows[0][1:]) if rows else None

    def completion(self, invocation_id: str, idx: int) -> Completion | None:
        """The first completion of entry ``idx`` of an invocation (finished or not)."""
        with self._reader() as cur:
            rows = _rows_of(cur, ["data", "meta", "seq"], [invocation_id], (LogKind.COMPLETION,))
        found = sorted((seq, data, meta) for _, data, meta, seq in rows
                       if json.loads(meta)["idx"] == idx)
        return _completion(invocation_id, found[0][1], found[0][2]) if found else None

    def pending(
        self,
        services: list[str],
        *,
        partition: tuple[int, int] | None = None,
        key: str | None = None,
        ids: list[str] | None = None,
    ) -> list[PendingInvocation]:
        """Accepted invocations without output, in acceptance order, with their journals,
        completions and the unfired start or retry timer each waits for.

        ``partition=(index, count)`` selects the pooled host ``index`` of ``count``;
        ``key`` selects one key (a dedicated host); ``ids`` selects invocations by id.
        """
        services = [s for s in services if "/" not in s]
        objects = None if key is None else {f"{s}/{key}" for s in services}
        with self._reader() as cur:
            open_ids = None
            if ids is not None:
                done = {r[1] for r in _rows_of(cur, ["id"], ids, (LogKind.OUTPUT,))}
                open_ids = [i for i in ids if i not in done]
            elif objects:  # a key's invocations by name (a scan of two columns), then by id
                ids = [r[0] for r in cur.execute(
                    f"SELECT id FROM log WHERE kind = 'accept' AND name IN ({_marks(objects)})",
                    list(objects)).fetchall()]
                if len(ids) <= INDEX_LOOKUP_MAX_IDS:
                    done = {r[1] for r in _rows_of(cur, ["id"], ids, (LogKind.OUTPUT,))}
                    open_ids = [i for i in ids if i not in done]
            if open_ids is None and services:
                open_ids = self._open_ids(cur)
            rows = _rows_of(cur, ["id", "name", "data", "meta", "seq", _ROUTE], open_ids or [],
                            (LogKind.ACCEPT, LogKind.ENTRY, LogKind.STATUS, LogKind.TIMER,
                             LogKind.FIRED, LogKind.COMPLETION))
        wanted = set(services)
        accepts: list[tuple[Accept, int]] = []
        for kind, id, name, data, meta, seq, route in rows:
            if (kind == LogKind.ACCEPT
                    and (partition is None or route % partition[1] == partition[0])
                    and (name in objects if objects is not None
                         else name.partition("/")[0] in wanted)):
                accepts.append((_accept(id, name, data, meta), seq))
        if not accepts:
            return []
        mine = {a.id for a, _ in accepts}
        entries: dict[str, list[tuple[int, Entry]]] = defaultdict(list)
        retries: dict[str, int] = {}
        completions: dict[str, dict[int, Completion]] = defaultdict(dict)
        timers: dict[str, dict[str, str]] = defaultdict(dict)  # id -> timer id -> kind
        fired: set[str] = set()
        for kind, id, name, data, meta, seq, _ in rows:
            if id not in mine:
                continue
            if kind == LogKind.ENTRY:
                entries[id].append((seq, _entry(id, name, data, meta)))
            elif kind == LogKind.STATUS:
                retry = json.loads(meta)["retry_count"]
                retries[id] = max(retries.get(id, retry), retry)
            elif kind == LogKind.COMPLETION:
                c = _completion(id, data, meta)
                completions[id].setdefault(c.idx, c)
            elif kind == LogKind.TIMER:
                timers[id][name] = json.loads(meta)["timer_kind"]
            elif kind == LogKind.FIRED:
                fired.add(name)
        accepts.sort(key=lambda a: (a[0].host_order, a[1]))
        return [
            PendingInvocation(
                a, _dedup(sorted(entries.get(a.id, []), key=_by_idx)), retries.get(a.id, 0),
                completions.get(a.id, {}),
                next((k for t, k in timers.get(a.id, {}).items()
                      if k in (TimerKind.START, TimerKind.RETRY) and t not in fired), None))
            for a, _ in accepts
        ]

    def pending_timers(self, host: str | None = None) -> list[Timer]:
        """Every timer that has not fired, or those of one host (the scheduler reloads them
        when it starts; a host hands its own over again when it starts, since it may have died
        between committing a timer and handing it over)."""
        query = ("SELECT id, name, meta FROM log WHERE kind = 'timer' AND name NOT IN"
                 " (SELECT name FROM log WHERE kind = 'fired')")
        params: list[str] = []
        if host is not None:
            query += " AND meta->>'host' = ?"
            params.append(host)
        with self._reader() as cur:
            rows = cur.execute(query, params).fetchall()
        return _timers(rows)

    def fired_open_timers(self) -> list[Timer]:
        """Timers that fired for invocations still unfinished: a scheduler that starts wakes
        their hosts again, in case it died between making a firing durable and telling the
        host (hosts ignore a wake they already had)."""
        with self._reader() as cur:
            rows = cur.execute(
                "SELECT id, name, meta FROM log WHERE kind = 'timer'"
                " AND name IN (SELECT name FROM log WHERE kind = 'fired')"
                " AND id NOT IN (SELECT id FROM log WHERE kind = 'output')").fetchall()
        return _timers(rows)

    @staticmethod
    def _open_ids(cur: duckdb.DuckDBPyConnection) -> list[str]:
        """Ids of all unfinished invocations: one scan of accepts and outputs grouped by id
        (~45 ms at 200k invocations; an anti-join of accepts with outputs took ~70-80 ms, and
        filtering on the service in the same scan ~20 ms more than filtering the few open
        invocations afterwards)."""
        return [r[0] for r in cur.execute(
            "SELECT id FROM log WHERE kind IN ('accept', 'output')"
            " GROUP BY id HAVING bool_and(kind = 'accept')").fetchall()]

    def pending_services(self) -> list[str]:
        """Names of the services (and objects) with accepted, unfinished invocations."""
        with self._reader() as cur:
            rows = cur.execute(
                "SELECT DISTINCT split_part(any_value(name), '/', 1) FROM log"
                " WHERE kind IN ('accept', 'output') GROUP BY id HAVING bool_and(kind = 'accept')"
            ).fetchall()
        return sorted(r[0] for r in rows)

    def pending_keys(self, service: str) -> list[str]:
        """Keys of ``service`` with accepted, unfinished invocations."""
        if "/" in service:
            return []
        with self._reader() as cur:
            rows = cur.execute(
                "SELECT DISTINCT substr(any_value(name), length($prefix) + 1) FROM log"
                " WHERE kind = 'output' OR (kind = 'accept' AND starts_with(name, $prefix))"
                " GROUP BY id HAVING bool_and(kind = 'accept')",
                {"prefix": service + "/"},
            ).fetchall()
        return [r[0] for r in rows]

    def load_state(self, service: str, key: str) -> dict[str, str]:
        """The committed state of one object key: name -> JSON value."""
        return self.load_states(service, [key])[key]

    def load_states(self, service: str, keys: Sequence[str]) -> dict[str, dict[str, str]]:
        """The committed state of each of ``keys`` of one object: key -> name -> JSON value
        (hosts ask for the keys that became active together in one call)."""
        out: dict[str, dict[str, str]] = {k: {} for k in keys}
        if "/" in service or not keys:
            return out
        prefix = len(service) + 1
        state = "(kind = 'state' OR id IS NULL)"  # keeps the index usable, see _rows_of
        rows: list[tuple[Any, ...]] = []
        with self._reader() as cur:
            for i in range(0, len(keys), INDEX_LOOKUP_MAX_IDS):
                objs = [f"{service}/{k}" for k in keys[i:i + INDEX_LOOKUP_MAX_IDS]]
                where = f"id IN ({_marks(objs)}) AND {state}"
                # Usually a few rows per key, folded here (an aggregate in SQL costs about twice
                # as much); a long history (a hot key's) is folded by DuckDB instead.
                chunk = cur.execute(f"SELECT id, name, data, seq FROM log WHERE {where}"
                                    f" LIMIT {FOLD_IN_SQL_ROWS + 1}", objs).fetchall()
                if len(chunk) > FOLD_IN_SQL_ROWS:
                    chunk = cur.execute("SELECT id, name, arg_max_null(data, seq), max(seq)"
                                        f" FROM log WHERE {where} GROUP BY id, name",
                                        objs).fetchall()
                rows += chunk
        latest: dict[tuple[str, str], tuple[int, str | None]] = {}
        for obj, name, data, seq in rows:
            at = (obj, name)
            if at not in latest or seq > latest[at][0]:
                latest[at] = (seq, data)
        for (obj, name), (_, value) in latest.items():
            if value is not None:
                out[obj[prefix:]][name] = value
        return out

    def state_key_filter(self, service: str) -> bytes:
        """A ``KeyFilter`` (as bytes) of the keys of ``service`` that have state rows: a host
        loads nothing for a key outside it."""
        with self._reader() as cur:
            ids = cur.execute("SELECT DISTINCT id FROM log WHERE kind = 'state'"
                              " AND starts_with(id, ?)", [f"{service}/"]).fetchall()
        prefix = len(service) + 1
        return KeyFilter.of((i[prefix:] for (i,) in ids), len(ids)).to_bytes()

    def set_services(self, rows: Sequence[Sequence[str | None]]) -> None:
        """Replace the registry ``sys_service`` shows: (name, ty, handler, kind, options JSON)
        per handler (kind None for a service's). A table of its own, replaced in one
        transaction beside the log's writes."""
        with self._con.cursor() as cur:
            cur.execute("BEGIN TRANSACTION")
            try:
                cur.execute("DELETE FROM service_registry")
                if rows:
                    cur.executemany("INSERT INTO service_registry VALUES (?, ?, ?, ?, ?)",
                                    [list(r) for r in rows])
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


def _timers(rows: list[tuple[Any, ...]]) -> list[Timer]:
    """Timers from (id, name, meta) rows of kind 'timer'."""
    out = []
    for inv_id, timer_id, meta in rows:
        m = json.loads(meta)
        out.append(Timer(timer_id, inv_id, m["idx"], m["timer_kind"], m["fire_at_ms"], m["host"]))
    return out


def _marks(values: Collection[object]) -> str:
    return ", ".join("?" * len(values))


def _rows_of(
    cur: duckdb.DuckDBPyConnection, columns: list[str], ids: Sequence[str], kinds: Sequence[str]
) -> list[tuple[Any, ...]]:
    """``(kind, *columns)`` of the rows of ``kinds`` whose id is one of ``ids``.

    A few ids go through the index. DuckDB uses it only when the id test is the scan's one
    filter (``id = ? AND kind = ?`` is a full scan, ~17 ms at 1.2M rows), hence the kind test
    written as ``(kind IN (...) OR id IS NULL)`` (see ``journal.schema``), which stays above
    the scan. Many ids (each costs ~0.3 ms through the index, a scan ~80 ms): one scan.
    """
    if not ids:
        return []
    select = ", ".join(["kind", *columns])
    if len(ids) <= INDEX_LOOKUP_MAX_IDS:
        return cur.execute(
            f"SELECT {select} FROM log WHERE id IN ({_marks(ids)})"
            f" AND (kind IN ({_marks(kinds)}) OR id IS NULL)",
            [*ids, *kinds],
        ).fetchall()
    return cur.execute(
        f"SELECT {select} FROM log WHERE kind IN ({_marks(kinds)}) AND id IN (SELECT unnest(?))",
        [*kinds, list(ids)],
    ).fetchall()


def _by_idx(seq_entry: tuple[int, Entry]) -> tuple[int, int]:
    return seq_entry[1].idx, seq_entry[0]


def _dedup(entries: list[tuple[int, Entry]]) -> list[Entry]:
    """Keep the first entry per index (a re-sent batch can never add a second, but be safe)."""
    out: list[Entry] = []
    for _, e in entries:
        if e.idx == len(out):
            out.append(e)
    return out

"""Journal retention: drop what finished invocations left in the log once it is old enough.

``JournalStore.prune`` (which calls ``prune`` here) deletes every row of each invocation whose
output became durable more than ``retention`` ago: its acceptance, entries, status changes,
timers, timer firings, completions and output. Its idempotency result goes with them: the same
idempotency key on the same target afterwards starts a new execution (as in Restate, whose
retention also defaults to 24 h), and so does a workflow's main handler for a key whose run was
pruned (the workflow's state and promises are state rows, and stay). Never deleted:

- anything of an invocation without output (pending, scheduled, running, suspended,
  backing-off);
- a finished invocation sent or called by one that is not finished: a replay of the sender
  sends it again, and only its journal tells the callee's host to skip the duplicate;
- a finished invocation with a timer that has not fired (the scheduler still holds it; firing
  it later would leave rows behind that nothing prunes);
- the current value of every K/V state entry. State rows are keyed by object (``'svc/key'``),
  not by invocation, so pruning invocations never reaches them. What is removed are versions
  *superseded* more than ``retention`` ago: a state row with a later row for the same entry,
  and all rows of an entry whose latest row is a clear. Nothing reads those (``load_state``
  and the ``state`` view take the latest row; a replay reads state values from its own
  journal entries), and without removing them every ``ctx.set`` would leave a row forever.

Also removed: batch-id rows (the de-duplication of re-sent host batches across a journal
restart; a batch is re-sent within seconds) and clock marks older than
``max(retention, BATCH_ID_RETENTION_MS)``.

Time. Retention counts from when the output was written, by the journal's clock, not from the
host's ``completed_at`` (hosts' clocks may differ, and a scan that parses every output's
``meta`` grows with the retained invocations). ``JournalStore.write`` ends a group
commit with a *mark* row (``kind='mark'``, ``id`` = the journal clock in epoch ms) at most once
per ``MARK_INTERVAL_MS``, and every prune first marks the rows written since the last mark, so
every row lies below a mark not much later than it was written. An output is prunable when a
mark with a higher ``seq`` is older than ``now - retention``: the time test reads the few mark
rows, and every other test is a range of ``seq``, which DuckDB's min/max statistics turn into
skipped row groups. Prunable is therefore "written more than ``retention`` ago", late by at
most the mark interval or, after a quiet spell, one prune period.

How. One read (one transaction) lists the doomed rows by ``seq`` (DuckDB's row ids change when
a checkpoint compacts, ``seq`` never does) in a temporary table; DELETE statements then remove
them in chunks of about ``CHUNK_ROWS`` rows, one transaction each, with a short pause between.
Removing a row from the ART index on ``id`` is costly at commit, and the commit holds a lock
a concurrent group commit waits on: one large DELETE would stall commits for seconds, a chunk
stalls them briefly (figures in docs/performance.md, ``python -m benchmarks.retention``). All
rows of
an invocation are in one chunk, so a journal killed mid-prune leaves whole invocations (never
an acceptance without its output, which recovery would run again), and state versions go
oldest first, so a clear goes only with or after the values it cleared. Every condition above
only becomes more true as the log grows, so rows chosen by the read may be deleted later,
beside concurrent commits.

File size. DuckDB only marks rows deleted; a CHECKPOINT vacuums them (drops emptied row
groups, merges sparse ones; since DuckDB 2.0 also for tables with ART indexes, in files of
storage format 2.0, which new journals are) and later writes reuse the blocks it frees. The
file shrinks only by free blocks at its end (only a copy, ``COPY FROM DATABASE``, compacts
it): it stops growing once what is pruned per period matches what is written. A prune that
deleted anything checkpoints, at most every ``CHECKPOINT_INTERVAL_S`` (a checkpoint stalls
commits too); a checkpoint fails while another transaction runs (a group commit), so it is
tried a few times, and in between DuckDB checkpoints by itself when the WAL passes 16 MB.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import timedelta

import duckdb

from journal.config import DEFAULT_RETENTION  # noqa: F401 (re-exported: its home before)
from journal.kinds import LogKind

BATCH_ID_RETENTION_MS = 3_600_000  # batch ids (and marks) live at least this long
MARK_INTERVAL_MS = 1_000  # at most one clock mark per this many ms of writes
MIN_PRUNE_PERIOD_S = 2.0
MAX_PRUNE_PERIOD_S = 60.0
CHUNK_ROWS = 1_000  # rows per DELETE transaction (each one stalls group commits meanwhile)
CHUNK_PAUSE_S = 0.02  # between chunks, so queued group commits get through
CHECKPOINT_INTERVAL_S = 30.0  # a prune checkpoints at most this often
CHECKPOINT_TRIES = 5

# Row kinds whose ``id`` is an invocation id (see journal.schema). A kind not listed here is
# never pruned with its invocation.
INVOCATION_KINDS = (
    LogKind.ACCEPT,
    LogKind.ENTRY,
    LogKind.STATUS,
    LogKind.OUTPUT,
    LogKind.TIMER,
    LogKind.FIRED,
    LogKind.COMPLETION,
    LogKind.EVENT,
)


def retention_seconds(retention: timedelta | float | None) -> float | None:
    """Check ``Runtime.start(retention=...)``: a positive timedelta or number of seconds, or
    None to keep finished invocations forever. Returns seconds, or None."""
    if retention is None:
        return None
    if isinstance(retention, timedelta):
        seconds = retention.total_seconds()
    elif isinstance(retention, int | float) and not isinstance(retention, bool):
        seconds = float(retention)
    else:
        raise TypeError(
            "retention must be a timedelta, a number of seconds or None, "
            f"not {type(retention).__name__}"
        )
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(
            f"retention must be a positive duration, not {retention!r} "
            "(None keeps finished invocations forever)"
        )
    return seconds


def prune_period(retention_s: float) -> float:
    """How often the journal actor prunes: a quarter of the retention, within 2-60 s."""
    return min(max(retention_s / 4, MIN_PRUNE_PERIOD_S), MAX_PRUNE_PERIOD_S)


@dataclass(frozen=True, slots=True)
class PruneStats:
    invocations: int = 0  # finished invocations removed
    rows: int = 0  # log rows deleted: theirs, superseded state versions, batch ids, marks
    chunks: int = 0  # DELETE transactions
    seconds: float = 0.0  # in all; of which:
    select_seconds: float = 0.0  # finding the doomed rows
    delete_seconds: float = 0.0  # the DELETEs and the pauses between them
    checkpointed: bool = False
    checkpoint_seconds: float = 0.0
    gone: tuple[str, ...] = ()  # the ids of the invocations removed (their blobs go too)


_KINDS = ", ".join(f"'{k}'" for k in INVOCATION_KINDS)

_CUTOFFS = """
SELECT max(seq) FILTER (WHERE TRY_CAST(id AS BIGINT) < $cutoff),
       max(seq) FILTER (WHERE TRY_CAST(id AS BIGINT) < $batch_cutoff)
FROM log WHERE kind = 'mark'
"""

# Each part lists (seq, unit, invocation) of doomed rows; a unit is what must go in one
# transaction, in unit order: an invocation (all its rows share its output's seq), or one row.
# $done: outputs up to this seq are old enough.
_GONE = """
CREATE OR REPLACE TEMP TABLE raystate_gone AS
WITH old AS (
    SELECT id, min(seq) AS unit FROM log
    WHERE kind = 'output' AND seq <= $done GROUP BY id),
sent AS (  -- old invocations sent or called by another invocation (contains(): cheap prefilter)
    SELECT id, meta->>'invoked_by' AS sender FROM log
    WHERE kind = 'accept' AND seq <= $done AND contains(meta, '"invoked_by":')
      AND id IN (SELECT id FROM old)),
held AS (
    SELECT s.id FROM sent s
    WHERE EXISTS (SELECT 1 FROM log a WHERE a.kind = 'accept' AND a.id = s.sender)
      AND NOT EXISTS (SELECT 1 FROM log o WHERE o.kind = 'output' AND o.id = s.sender)
    UNION ALL
    SELECT t.id FROM log t
    WHERE t.kind = 'timer' AND t.seq <= $done AND t.id IN (SELECT id FROM old)
      AND NOT EXISTS (SELECT 1 FROM log f WHERE f.kind = 'fired' AND f.name = t.name))
SELECT id, unit FROM old WHERE id NOT IN (SELECT id FROM held)
"""
_INVOCATION_ROWS = f"""
SELECT l.seq, g.unit, true AS invocation FROM log l JOIN raystate_gone g ON l.id = g.id
WHERE l.kind IN ({_KINDS})  -- no seq bound: a timer may have fired after the output
"""
# State versions up to $done superseded by a later row up to $done (or cleared by it), of the
# entries written after $since (the $done of the last prune; the others were compacted then).
_STATE_VERSIONS = """
SELECT l.seq, l.seq, false FROM log l JOIN (
    SELECT id, name, max(seq) AS top, arg_max_null(data, seq) AS latest FROM log
    WHERE kind = 'state' AND seq <= $done AND (id, name) IN (
        SELECT (id, name) FROM log WHERE kind = 'state' AND seq > $since AND seq <= $done)
    GROUP BY id, name) e ON l.id = e.id AND l.name = e.name
WHERE l.kind = 'state' AND l.seq <= $done AND (l.seq < e.top OR e.latest IS NULL)
"""
# $batches: batch ids up to this seq, and marks below it, are old enough.
_BOOKKEEPING = """
SELECT seq, seq, false FROM log
WHERE (kind = 'batch' AND seq <= $batches) OR (kind = 'mark' AND seq < $batches)
"""


def prune(
    cur: duckdb.DuckDBPyConnection,
    cutoff_ms: int,
    batch_cutoff_ms: int,
    *,
    state_since: int = 0,
    compact_state: bool = True,
    chunk_rows: int = CHUNK_ROWS,
    pause_s: float = CHUNK_PAUSE_S,
    checkpoint: bool = True,
) -> tuple[PruneStats, int]:
    """Delete on ``cur`` (a connection of its own: it holds temporary tables) what is
    described above: invocations finished before ``cutoff_ms``, state versions superseded
    before it (of entries written after seq ``state_since``), batch ids and marks older than
    ``batch_cutoff_ms``. Returns the stats and the ``state_since`` for the next prune."""
    started = time.perf_counter()
    chunk_rows = max(chunk_rows, 1)
    cur.execute("BEGIN TRANSACTION")  # one snapshot for every read
    try:
        done, batches = cur.execute(
            _CUTOFFS, {"cutoff": cutoff_ms, "batch_cutoff": batch_cutoff_ms}
        ).fetchall()[0]
        parts: list[str] = []
        params: dict[str, object] = {}
        gone: tuple[str, ...] = ()
        if done is not None:
            cur.execute(_GONE, {"done": done})
            gone = tuple(r[0] for r in cur.execute("SELECT id FROM raystate_gone").fetchall())
            if gone:
                parts.append(_INVOCATION_ROWS)
            if compact_state and done > state_since:
                parts.append(_STATE_VERSIONS)
                params |= {"since": state_since, "done": done}
        if batches is not None:
            parts.append(_BOOKKEEPING)
            params["batches"] = batches
        plan: list[tuple[int, int, int, int, int]] = []
        if parts:
            cur.execute(
                "CREATE OR REPLACE TEMP TABLE raystate_doomed AS SELECT * FROM ("
                + " UNION ALL ".join(parts)
                + ") AS d(seq, unit, invocation)",
                params,
            )
            plan = _chunks(cur, chunk_rows)
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise
    selected = time.perf_counter()
    rows = 0
    try:
        for i, (first, last, lo, hi, _) in enumerate(plan):
            if i:
                time.sleep(pause_s)
            rows += cur.execute(
                "DELETE FROM log WHERE seq BETWEEN $lo AND $hi AND seq IN (SELECT seq FROM"
                " raystate_doomed WHERE unit // $width BETWEEN $first AND $last)",
                {"lo": lo, "hi": hi, "width": chunk_rows, "first": first, "last": last},
            ).fetchall()[0][0]
    finally:
        cur.execute("DROP TABLE IF EXISTS raystate_doomed")
        cur.execute("DROP TABLE IF EXISTS raystate_gone")
    deleted = time.perf_counter()
    checkpointed = bool(rows) and checkpoint and _checkpoint(cur)
    end = time.perf_counter()
    stats = PruneStats(
        sum(c[4] for c in plan),
        rows,
        len(plan),
        end - started,
        selected - started,
        deleted - selected,
        checkpointed,
        end - deleted,
        gone,
    )
    return stats, state_since if done is None or not compact_state else max(done, state_since)


def _chunks(cur: duckdb.DuckDBPyConnection, rows: int) -> list[tuple[int, int, int, int, int]]:
    """Consecutive buckets of units (``unit // rows``: never more than ``rows`` units, usually
    about as many rows) merged until they hold ``rows`` rows: ``(first bucket, last bucket,
    min seq, max seq, invocations)`` per DELETE, in unit order."""
    buckets = cur.execute(
        "SELECT unit // $width AS b, count(*), min(seq), max(seq),"
        " count(DISTINCT unit) FILTER (WHERE invocation)"
        " FROM raystate_doomed GROUP BY b ORDER BY b",
        {"width": rows},
    ).fetchall()
    plan: list[list[int]] = []
    filled = rows
    for b, n, lo, hi, invocations in buckets:
        if filled + n > rows and filled:
            plan.append([b, b, lo, hi, invocations])
            filled = n
        else:
            chunk = plan[-1]
            chunk[1], chunk[2], chunk[3] = b, min(chunk[2], lo), max(chunk[3], hi)
            chunk[4] += invocations
            filled += n
    return [(c[0], c[1], c[2], c[3], c[4]) for c in plan]


def _checkpoint(cur: duckdb.DuckDBPyConnection) -> bool:
    """CHECKPOINT, so deleted rows are vacuumed and their blocks reused. It fails while another
    transaction runs (a group commit): try a few times, then leave it to the automatic one."""
    for attempt in range(CHECKPOINT_TRIES):
        try:
            cur.execute("CHECKPOINT")
            return True
        except duckdb.TransactionException:
            time.sleep(0.01 * (attempt + 1))
    return False

"""Schedules in the journal: the ``schedule`` table (one row per schedule, updated in place),
its reads and writes, and the journal actor's calls for them.

Why a table of its own and not rows of ``log``: a schedule is a small piece of mutable
configuration plus a progress cursor that moves at every tick. As log rows, every tick would
leave a row that retention then had to compact (10,000 schedules of ``every=10s`` write 1,000
a second); as a table, a schedule is one row forever, ``sys_schedule`` is a plain select, and
a runner's progress for the ticks it fires in one turn is one UPDATE (one DuckDB transaction).
The writes go to DuckDB directly, like ``service_registry`` (the journal's write-ahead log is
for the hot path; a tick is not one).

Exactly once. The runner records a tick (``fire``: the tick's time and its invocation id) BEFORE
it submits the invocation, and submits only what the UPDATE returned (a schedule paused or
deleted meanwhile returns nothing, so it fires nothing more). A runner that dies between the
two finds, when it loads, a ``last_invocation_id`` the log never accepted, and submits it then;
the invocation id derives from (schedule, tick time), and hosts de-duplicate by it, so a tick
submitted twice runs once.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import astuple, dataclass, fields
from typing import Any

import duckdb
import pyarrow as pa

MIGRATION_SCHEDULES = """
    CREATE TABLE schedule(
        id VARCHAR NOT NULL, service VARCHAR NOT NULL, handler VARCHAR NOT NULL, key VARCHAR,
        input VARCHAR NOT NULL, spec VARCHAR NOT NULL, cron VARCHAR, every_ms BIGINT,
        timezone VARCHAR NOT NULL, overlap VARCHAR NOT NULL, catchup_ms BIGINT NOT NULL,
        paused BOOLEAN NOT NULL, created_at_ms BIGINT NOT NULL, cursor_ms BIGINT NOT NULL,
        next_fire_at_ms BIGINT, last_fire_at_ms BIGINT, last_invocation_id VARCHAR,
        buffered_at_ms BIGINT);
    COMMENT ON TABLE schedule IS
        'raystate: durable schedules (Runtime.schedule) and their progress; query sys_schedule';

    CREATE VIEW sys_schedule AS
    SELECT id,
           CASE WHEN key IS NULL THEN service || '/' || handler
                ELSE service || '/' || key || '/' || handler END AS target,
           spec, timezone, overlap, paused,
           make_timestamp(next_fire_at_ms * 1000) AS next_fire_at,
           make_timestamp(last_fire_at_ms * 1000) AS last_fire_at,
           last_invocation_id,
           service AS target_service_name, key AS target_service_key,
           handler AS target_handler_name, input::JSON AS input,
           catchup_ms / 1000 AS catchup_s,
           make_timestamp(buffered_at_ms * 1000) AS buffered_tick_at,
           make_timestamp(created_at_ms * 1000) AS created_at
    FROM schedule;
"""


@dataclass(slots=True)
class ScheduleRow:
    """One schedule as the journal keeps it. ``cursor_ms``: the last tick decided (fired,
    skipped or buffered), or the creation/resume time; ticks after it are still to come."""

    id: str
    service: str
    handler: str
    key: str | None
    input: str  # the handler's argument, JSON text
    spec: str  # the cron expression, or "@every 30s"
    cron: str | None
    every_ms: int | None
    timezone: str
    overlap: str
    catchup_ms: int
    paused: bool
    created_at_ms: int
    cursor_ms: int
    next_fire_at_ms: int | None = None
    last_fire_at_ms: int | None = None
    last_invocation_id: str | None = None
    buffered_at_ms: int | None = None

    @property
    def target(self) -> str:
        return f"{self.service}/{self.handler}"


COLUMNS = [f.name for f in fields(ScheduleRow)]


@dataclass(slots=True)
class Loaded:
    """A schedule as a runner loads it, with what the log says of its last tick's invocation."""

    row: ScheduleRow
    last_accepted: bool
    last_done: bool


@dataclass(slots=True)
class Progress:
    """A runner's step on one schedule: the new cursor and next due tick, and, when it fires,
    the tick and its invocation id; ``buffered_at_ms``: the tick waiting (overlap
    "buffer_one"), or None."""

    id: str
    cursor_ms: int
    next_fire_at_ms: int | None
    fired_ms: int | None = None
    invocation_id: str | None = None
    buffered_at_ms: int | None = None


PROGRESS_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("cursor_ms", pa.int64()),
        ("next_fire_at_ms", pa.int64()),
        ("fired_ms", pa.int64()),
        ("invocation_id", pa.string()),
        ("buffered_at_ms", pa.int64()),
    ]
)


class ScheduleStore:
    """The ``schedule`` table's reads and writes (mixed into ``JournalStore``)."""

    _con: duckdb.DuckDBPyConnection
    _schedule_lock = threading.Lock()

    def _reader(self) -> duckdb.DuckDBPyConnection:
        raise NotImplementedError

    def _schedule_write(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        with self._schedule_lock, self._con.cursor() as cur:
            return cur.execute(sql, params).fetchall()

    def create_schedule(self, row: ScheduleRow) -> bool:
        """Insert a schedule; False (and nothing written) if one with its id exists."""
        with self._schedule_lock, self._con.cursor() as cur:
            cur.execute("BEGIN TRANSACTION")
            try:
                if cur.execute("SELECT 1 FROM schedule WHERE id = ?", [row.id]).fetchall():
                    cur.execute("ROLLBACK")
                    return False
                marks = ", ".join("?" for _ in COLUMNS)
                cur.execute(f"INSERT INTO schedule VALUES ({marks})", list(astuple(row)))
                cur.execute("COMMIT")
                return True
            except BaseException:
                cur.execute("ROLLBACK")
                raise

    def pause_schedule(self, schedule_id: str, paused: bool, now_ms: int) -> bool:
        """Pause or resume; a resumed schedule goes on from ``now_ms`` (the ticks of the pause
        are skipped, not caught up). False if there is no such schedule."""
        if paused:
            sql = (
                "UPDATE schedule SET paused = true, next_fire_at_ms = NULL"
                " WHERE id = ? RETURNING id"
            )
            return bool(self._schedule_write(sql, [schedule_id]))
        sql = (
            "UPDATE schedule SET cursor_ms = CASE WHEN paused THEN greatest(cursor_ms, ?)"
            " ELSE cursor_ms END, paused = false WHERE id = ? RETURNING id"
        )
        return bool(self._schedule_write(sql, [now_ms, schedule_id]))

    def delete_schedule(self, schedule_id: str) -> bool:
        """Delete a schedule (its id may be used again); False if there is none."""
        return bool(
            self._schedule_write("DELETE FROM schedule WHERE id = ? RETURNING id", [schedule_id])
        )

    def schedule_progress(self, steps: list[Progress]) -> list[str]:
        """Record a runner's steps in one transaction; return the ids of the schedules it
        applied to (not paused, not deleted): the runner fires only those."""
        if not steps:
            return []
        table = pa.Table.from_pylist(
            [dict(zip(PROGRESS_SCHEMA.names, astuple(s), strict=True)) for s in steps],
            PROGRESS_SCHEMA,
        )
        with self._schedule_lock, self._con.cursor() as cur:
            cur.register("progress_steps", table)
            rows = cur.execute(
                """UPDATE schedule s SET
                       cursor_ms = greatest(s.cursor_ms, p.cursor_ms),
                       next_fire_at_ms = p.next_fire_at_ms,
                       last_fire_at_ms = coalesce(p.fired_ms, s.last_fire_at_ms),
                       last_invocation_id = coalesce(p.invocation_id, s.last_invocation_id),
                       buffered_at_ms = p.buffered_at_ms
                   FROM progress_steps p WHERE s.id = p.id AND NOT s.paused
                   RETURNING s.id"""
            ).fetchall()
            cur.unregister("progress_steps")
        return [r[0] for r in rows]

    def load_schedules(self, ids: list[str] | None = None) -> list[Loaded]:
        """Schedules (all, or those of ``ids``), each with whether the log accepted its last
        tick's invocation and whether that finished."""
        where = "" if ids is None else "WHERE s.id IN (SELECT unnest(?))"
        query = f"""
            WITH s AS (SELECT * FROM schedule s {where}),
            last AS (SELECT DISTINCT last_invocation_id AS id FROM s
                     WHERE last_invocation_id IS NOT NULL),
            acc AS (SELECT DISTINCT id FROM log
                    WHERE kind = 'accept' AND id IN (SELECT id FROM last)),
            out AS (SELECT DISTINCT id FROM log
                    WHERE kind = 'output' AND id IN (SELECT id FROM last))
            SELECT {", ".join("s." + c for c in COLUMNS)},
                   acc.id IS NOT NULL, out.id IS NOT NULL
            FROM s LEFT JOIN acc ON acc.id = s.last_invocation_id
                   LEFT JOIN out ON out.id = s.last_invocation_id
            ORDER BY s.id"""
        with self._reader() as cur:
            rows = cur.execute(query, [] if ids is None else [ids]).fetchall()
        n = len(COLUMNS)
        return [Loaded(ScheduleRow(*r[:n]), bool(r[n]), bool(r[n + 1])) for r in rows]

    def schedule_count(self) -> int:
        with self._con.cursor() as cur:
            return int(cur.execute("SELECT count(*) FROM schedule").fetchall()[0][0])


class ScheduleJournal:
    """The journal actor's calls for schedules (mixed into ``GroupCommitJournal``)."""

    store: Any

    async def _settled(self) -> None:
        raise NotImplementedError

    async def create_schedule(self, row: ScheduleRow) -> bool:
        return bool(await asyncio.to_thread(self.store.create_schedule, row))

    async def pause_schedule(self, schedule_id: str, paused: bool, now_ms: int) -> bool:
        return bool(await asyncio.to_thread(self.store.pause_schedule, schedule_id, paused, now_ms))

    async def delete_schedule(self, schedule_id: str) -> bool:
        return bool(await asyncio.to_thread(self.store.delete_schedule, schedule_id))

    async def schedule_progress(self, steps: list[Progress]) -> list[str]:
        return list(await asyncio.to_thread(self.store.schedule_progress, steps))

    async def load_schedules(self, ids: list[str] | None = None) -> list[Loaded]:
        await self._settled()
        return list(await asyncio.to_thread(self.store.load_schedules, ids))

    async def schedule_count(self) -> int:
        return int(await asyncio.to_thread(self.store.schedule_count))

"""The journal's records as rows of the append-only ``log`` table, and back.

A row is ``(seq, kind, id, name, data, meta)``; the ``log`` table and its views are described
in ``journal.schema``. Also the look-up of rows by id that the reads share (``rows_of``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from json.encoder import encode_basestring as _q  # type: ignore[attr-defined]
from typing import Any

import duckdb

from journal.kinds import LogKind
from journal.records import (
    Accept,
    Admitted,
    AttemptFailed,
    Batch,
    Completion,
    Entry,
    Outcome,
    Output,
    StateWrite,
    StatusChange,
    Timer,
    TimerFired,
    Waiting,
)
from journal.wal import Row

EVENT_TRANSIENT_ERROR = "TransientError"  # sys_journal_events.event_type of a failed attempt
INDEX_LOOKUP_MAX_IDS = 128  # up to this many ids, look them up in the index; else scan + join

# -- encoding records as log rows (seq, kind, id, name, data, meta) -----------------------------
# ``meta`` is built by string formatting: ``:d`` refuses anything but an int (or bool) and ``_q``
# (the C JSON string encoder) anything but a str, so a malformed record fails the write up front.

_BOOL = {True: "true", False: "false", None: "null"}
ROUTE_SQL = "CASE WHEN kind = 'accept' THEN (meta->>'route_hash')::UBIGINT END"


def _object(service: str, key: str | None) -> str:
    """'service/key' ('service' without a key): the object an accept or state row belongs to."""
    if "/" in service:
        raise ValueError(f"service name {service!r} contains '/'")
    return service if key is None else f"{service}/{key}"


def _accept_row(seq: int, r: Accept) -> Row:
    meta = (
        f'{{"handler":{_q(r.handler)},"route_hash":{r.route_hash:d}'
        f',"created_at_ms":{r.created_at_ms:d},"host_order":{r.host_order:d}'
    )
    if r.idempotency_key is not None:
        meta += ',"idempotency_key":' + _q(r.idempotency_key)
    if r.invoked_by is not None:
        meta += ',"invoked_by":' + _q(r.invoked_by)
    return (seq, LogKind.ACCEPT, r.id, _object(r.service, r.key), r.input, meta + "}")


def _entry_row(seq: int, r: Entry) -> Row:
    meta = (
        f'{{"idx":{r.idx:d},"entry_type":{_q(r.entry_type)}'
        f',"created_at_ms":{r.created_at_ms:d},"completed":{_BOOL[r.completed]}'
    )
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
    meta = (
        f'{{"idx":{r.idx:d},"timer_kind":{_q(r.kind)},"fire_at_ms":{r.fire_at_ms:d}'
        f',"host":{_q(r.host)}}}'
    )
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
    event = {
        "failure": r.failure,
        "stacktrace": r.stacktrace,
        "retry_count": r.retry_count,
        "related_entry_index": r.related_entry_index,
        "related_entry_name": r.related_entry_name,
        "related_entry_type": r.related_entry_type,
        "next_retry_at_ms": r.next_retry_at_ms,
    }
    return (
        seq,
        LogKind.EVENT,
        r.invocation_id,
        EVENT_TRANSIENT_ERROR,
        json.dumps(event),
        f'{{"at_ms":{r.at_ms:d}}}',
    )


def _waiting_row(seq: int, r: Waiting) -> Row:
    return (seq, LogKind.WAIT, r.invocation_id, None, r.reason, f'{{"at_ms":{r.at_ms:d}}}')


def _admitted_row(seq: int, r: Admitted) -> Row:
    return (seq, LogKind.ADMIT, r.invocation_id, r.limit, None, f'{{"at_ms":{r.at_ms:d}}}')


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
    Waiting: _waiting_row,
    Admitted: _admitted_row,
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


def decode_accept(id: str, name: str, data: str, meta: str) -> Accept:
    m = json.loads(meta)
    service, slash, key = name.partition("/")
    return Accept(
        id,
        service,
        m["handler"],
        key if slash else None,
        m["route_hash"],
        data,
        m.get("idempotency_key"),
        m.get("invoked_by"),
        m["created_at_ms"],
        m["host_order"],
    )


def decode_entry(id: str, name: str | None, data: str | None, meta: str) -> Entry:
    m = json.loads(meta)
    return Entry(
        id,
        m["idx"],
        m["entry_type"],
        name,
        data,
        m.get("failure"),
        m.get("failure_code"),
        m["created_at_ms"],
        m["completed"],
    )


def decode_completion(id: str, data: str | None, meta: str) -> Completion:
    m = json.loads(meta)
    return Completion(
        id, m["idx"], data, m.get("failure"), m.get("failure_code"), m["at_ms"], m.get("by")
    )


def decode_outcome(data: str | None, meta: str) -> Outcome:
    m = json.loads(meta)
    return Outcome(m["ok"], data, m.get("failure"), m.get("failure_code"))


def decode_timers(rows: list[tuple[Any, ...]]) -> list[Timer]:
    """Timers from (id, name, meta) rows of kind 'timer'."""
    out = []
    for inv_id, timer_id, meta in rows:
        m = json.loads(meta)
        out.append(Timer(timer_id, inv_id, m["idx"], m["timer_kind"], m["fire_at_ms"], m["host"]))
    return out


def marks(values: Collection[object]) -> str:
    return ", ".join("?" * len(values))


def rows_of(
    cur: duckdb.DuckDBPyConnection, columns: list[str], ids: Sequence[str], kinds: Sequence[str]
) -> list[tuple[Any, ...]]:
    """``(kind, *columns)`` of the rows of ``kinds`` whose id is one of ``ids``.

    A few ids go through the index. DuckDB uses it only when the id test is the scan's one
    filter (``id = ? AND kind = ?`` is a full scan), hence the kind test written as
    ``(kind IN (...) OR id IS NULL)`` (see ``journal.schema``), which stays above the scan.
    Many ids (beyond ``INDEX_LOOKUP_MAX_IDS`` one scan costs less than as many look-ups): one
    scan.
    """
    if not ids:
        return []
    select = ", ".join(["kind", *columns])
    if len(ids) <= INDEX_LOOKUP_MAX_IDS:
        return cur.execute(
            f"SELECT {select} FROM log WHERE id IN ({marks(ids)})"
            f" AND (kind IN ({marks(kinds)}) OR id IS NULL)",
            [*ids, *kinds],
        ).fetchall()
    return cur.execute(
        f"SELECT {select} FROM log WHERE kind IN ({marks(kinds)}) AND id IN (SELECT unnest(?))",
        [*kinds, list(ids)],
    ).fetchall()


def by_idx(seq_entry: tuple[int, Entry]) -> tuple[int, int]:
    return seq_entry[1].idx, seq_entry[0]


def dedup_entries(entries: list[tuple[int, Entry]]) -> list[Entry]:
    """Keep the first entry per index (a re-sent batch can never add a second, but be safe)."""
    out: list[Entry] = []
    for _, e in entries:
        if e.idx == len(out):
            out.append(e)
    return out

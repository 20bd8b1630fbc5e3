"""Reads of invocations (outcomes, acceptances, completions, what is pending) and of timers."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import TYPE_CHECKING

import duckdb

from journal.kinds import LogKind, TimerKind
from journal.records import Accept, Completion, Entry, Outcome, PendingInvocation, Timer
from journal.rows import (
    INDEX_LOOKUP_MAX_IDS,
    ROUTE_SQL,
    by_idx,
    decode_accept,
    decode_completion,
    decode_entry,
    decode_outcome,
    decode_timers,
    dedup_entries,
    marks,
    rows_of,
)


class InvocationReads:
    """Mixed into ``JournalStore``: what hosts and the scheduler read to recover and resume."""

    if TYPE_CHECKING:

        def _reader(self) -> duckdb.DuckDBPyConnection: ...

    def outcome(self, invocation_id: str) -> Outcome | None:
        with self._reader() as cur:
            rows = rows_of(cur, ["data", "meta"], [invocation_id], (LogKind.OUTPUT,))
        return decode_outcome(*rows[0][1:]) if rows else None

    def accepted(self, invocation_id: str) -> Accept | None:
        with self._reader() as cur:
            rows = rows_of(cur, ["id", "name", "data", "meta"], [invocation_id], (LogKind.ACCEPT,))
        return decode_accept(*rows[0][1:]) if rows else None

    def completion(self, invocation_id: str, idx: int) -> Completion | None:
        """The first completion of entry ``idx`` of an invocation (finished or not)."""
        with self._reader() as cur:
            rows = rows_of(cur, ["data", "meta", "seq"], [invocation_id], (LogKind.COMPLETION,))
        found = sorted(
            (seq, data, meta) for _, data, meta, seq in rows if json.loads(meta)["idx"] == idx
        )
        return decode_completion(invocation_id, found[0][1], found[0][2]) if found else None

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
                done = {r[1] for r in rows_of(cur, ["id"], ids, (LogKind.OUTPUT,))}
                open_ids = [i for i in ids if i not in done]
            elif objects:  # a key's invocations by name (a scan of two columns), then by id
                ids = [
                    r[0]
                    for r in cur.execute(
                        f"SELECT id FROM log WHERE kind = 'accept' AND name IN ({marks(objects)})",
                        list(objects),
                    ).fetchall()
                ]
                if len(ids) <= INDEX_LOOKUP_MAX_IDS:
                    done = {r[1] for r in rows_of(cur, ["id"], ids, (LogKind.OUTPUT,))}
                    open_ids = [i for i in ids if i not in done]
            if open_ids is None and services:
                open_ids = self._open_ids(cur)
            rows = rows_of(
                cur,
                ["id", "name", "data", "meta", "seq", ROUTE_SQL],
                open_ids or [],
                (
                    LogKind.ACCEPT,
                    LogKind.ENTRY,
                    LogKind.STATUS,
                    LogKind.TIMER,
                    LogKind.FIRED,
                    LogKind.COMPLETION,
                ),
            )
        wanted = set(services)
        accepts: list[tuple[Accept, int]] = []
        for kind, id, name, data, meta, seq, route in rows:
            if (
                kind == LogKind.ACCEPT
                and (partition is None or route % partition[1] == partition[0])
                and (name in objects if objects is not None else name.partition("/")[0] in wanted)
            ):
                accepts.append((decode_accept(id, name, data, meta), seq))
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
                entries[id].append((seq, decode_entry(id, name, data, meta)))
            elif kind == LogKind.STATUS:
                retry = json.loads(meta)["retry_count"]
                retries[id] = max(retries.get(id, retry), retry)
            elif kind == LogKind.COMPLETION:
                c = decode_completion(id, data, meta)
                completions[id].setdefault(c.idx, c)
            elif kind == LogKind.TIMER:
                timers[id][name] = json.loads(meta)["timer_kind"]
            elif kind == LogKind.FIRED:
                fired.add(name)
        accepts.sort(key=lambda a: (a[0].host_order, a[1]))
        return [
            PendingInvocation(
                a,
                dedup_entries(sorted(entries.get(a.id, []), key=by_idx)),
                retries.get(a.id, 0),
                completions.get(a.id, {}),
                next(
                    (
                        k
                        for t, k in timers.get(a.id, {}).items()
                        if k in (TimerKind.START, TimerKind.RETRY) and t not in fired
                    ),
                    None,
                ),
            )
            for a, _ in accepts
        ]

    def pending_timers(self, host: str | None = None) -> list[Timer]:
        """Every timer that has not fired, or those of one host (the scheduler reloads them
        when it starts; a host hands its own over again when it starts, since it may have died
        between committing a timer and handing it over)."""
        query = (
            "SELECT id, name, meta FROM log WHERE kind = 'timer' AND name NOT IN"
            " (SELECT name FROM log WHERE kind = 'fired')"
        )
        params: list[str] = []
        if host is not None:
            query += " AND meta->>'host' = ?"
            params.append(host)
        with self._reader() as cur:
            rows = cur.execute(query, params).fetchall()
        return decode_timers(rows)

    def fired_open_timers(self) -> list[Timer]:
        """Timers that fired for invocations still unfinished: a scheduler that starts wakes
        their hosts again, in case it died between making a firing durable and telling the
        host (hosts ignore a wake they already had)."""
        with self._reader() as cur:
            rows = cur.execute(
                "SELECT id, name, meta FROM log WHERE kind = 'timer'"
                " AND name IN (SELECT name FROM log WHERE kind = 'fired')"
                " AND id NOT IN (SELECT id FROM log WHERE kind = 'output')"
            ).fetchall()
        return decode_timers(rows)

    def admissions(self, limit: str, since_ms: int) -> list[int]:
        """When invocations were admitted under the rate limit ``limit`` since ``since_ms``
        (a limiter that starts reads its window back)."""
        with self._reader() as cur:
            rows = cur.execute(
                "SELECT (meta->>'at_ms')::BIGINT AS admitted_at FROM log"
                " WHERE kind = 'admit' AND name = ? AND admitted_at >= ?",
                [limit, since_ms],
            ).fetchall()
        return sorted(r[0] for r in rows)

    @staticmethod
    def _open_ids(cur: duckdb.DuckDBPyConnection) -> list[str]:
        """Ids of all unfinished invocations: one scan of accepts and outputs grouped by id
        (faster than an anti-join of accepts with outputs; filtering on the service in the same
        scan costs more than filtering the few open invocations afterwards)."""
        return [
            r[0]
            for r in cur.execute(
                "SELECT id FROM log WHERE kind IN ('accept', 'output')"
                " GROUP BY id HAVING bool_and(kind = 'accept')"
            ).fetchall()
        ]

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

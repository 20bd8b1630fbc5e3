"""Reads of object state: one key's, many keys' at once, and which keys have any."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import duckdb

from journal.keyfilter import KeyFilter
from journal.rows import INDEX_LOOKUP_MAX_IDS, marks

FOLD_IN_SQL_ROWS = 1_000  # load_state folds a key's history in Python up to this many rows


class StateReads:
    """Mixed into ``JournalStore``: the committed state hosts load."""

    if TYPE_CHECKING:

        def _reader(self) -> duckdb.DuckDBPyConnection: ...

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
        state = "(kind = 'state' OR id IS NULL)"  # keeps the index usable, see rows_of
        rows: list[tuple[Any, ...]] = []
        with self._reader() as cur:
            for i in range(0, len(keys), INDEX_LOOKUP_MAX_IDS):
                objs = [f"{service}/{k}" for k in keys[i : i + INDEX_LOOKUP_MAX_IDS]]
                where = f"id IN ({marks(objs)}) AND {state}"
                # Usually a few rows per key, folded here (an aggregate in SQL costs about twice
                # as much); a long history (a hot key's) is folded by DuckDB instead.
                chunk = cur.execute(
                    f"SELECT id, name, data, seq FROM log WHERE {where}"
                    f" LIMIT {FOLD_IN_SQL_ROWS + 1}",
                    objs,
                ).fetchall()
                if len(chunk) > FOLD_IN_SQL_ROWS:
                    chunk = cur.execute(
                        "SELECT id, name, arg_max_null(data, seq), max(seq)"
                        f" FROM log WHERE {where} GROUP BY id, name",
                        objs,
                    ).fetchall()
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
            ids = cur.execute(
                "SELECT DISTINCT id FROM log WHERE kind = 'state' AND starts_with(id, ?)",
                [f"{service}/"],
            ).fetchall()
        prefix = len(service) + 1
        return KeyFilter.of((i[prefix:] for (i,) in ids), len(ids)).to_bytes()

"""Read-only SQL for users: one statement, a query, no files, no network.

The statement type comes from DuckDB's own parser (no regex guessing); file and network access
is also switched off for the whole database (``enable_external_access``), so ``read_csv``,
``glob`` and friends fail even when nested in a query; and the store runs the query inside a
transaction it always rolls back, so a statement that slipped through could change nothing.
"""

from __future__ import annotations

import duckdb

ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}


class SqlRefused(ValueError):
    """The SQL entry point accepts one read-only query; this was something else."""


def check_read_only(query: str) -> str:
    """Return ``query`` if it is a single read-only statement, else raise ``SqlRefused``."""
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as e:
        raise SqlRefused(f"cannot parse SQL: {e}") from None
    if len(statements) != 1:
        raise SqlRefused(f"expected exactly one statement, got {len(statements)}")
    kind = statements[0].type
    if kind == duckdb.StatementType.EXPLAIN and _words(query)[:2] == ["explain", "analyze"]:
        raise SqlRefused("EXPLAIN ANALYZE executes its statement; use EXPLAIN")
    if kind not in ALLOWED:
        raise SqlRefused(
            f"only read-only queries (SELECT, WITH, EXPLAIN) are accepted, not {kind.name}"
        )
    return query


def _words(query: str) -> list[str]:
    return query.strip().lstrip("(").lower().split()

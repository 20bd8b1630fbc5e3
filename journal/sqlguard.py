"""Read-only SQL for users: one statement, a query, nothing that writes, no files, no network.

The check reads DuckDB's own parse of the statement (no regex guessing): its type
(``duckdb.extract_statements``), and for a query the whole syntax tree (``json_serialize_sql``),
so a write anywhere inside it (``WITH d AS (DELETE ... RETURNING *) SELECT ...``) is refused, and
so is any table function outside an allow-list of side-effect-free ones (``checkpoint()``,
``query('...')``, ``read_csv`` ...) and the few scalar functions that change something
(``nextval``). ``EXPLAIN`` is checked as the statement it explains, and ``EXPLAIN ANALYZE`` (which
runs it) is refused. A ``PIVOT`` without an ``IN`` list, which DuckDB parses into several
statements it does not show, is checked on its tokens instead: no writing keyword, no table
function outside the allow-list.

Behind the check, the store runs the query in a READ ONLY transaction it always rolls back, with
file and network access switched off for the whole database (``enable_external_access``), so a
statement that slipped through could still change nothing and read no file.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from typing import Any

import duckdb

from journal.errors import SqlRefused

ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
# Query nodes a read may contain; anything else (INSERT_QUERY_NODE, DELETE_QUERY_NODE, ...) writes.
READ_NODES = {"SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE", "CTE_NODE"}
# Table functions that only compute or describe: an allow-list, so a function a later DuckDB
# adds is refused until someone looks at it.
TABLE_FUNCTIONS = frozenset(
    {
        "range",
        "generate_series",
        "unnest",
        "repeat",
        "repeat_row",
        "json_each",
        "json_tree",
        "histogram",
        "histogram_values",
        "summary",
        "pg_timezone_names",
        "icu_calendar_names",
        "pragma_table_info",
        "pragma_show",
        "pragma_version",
        "pragma_platform",
        "pragma_database_size",
        "pragma_storage_info",
        "pragma_metadata_info",
        "pragma_collations",
        "duckdb_columns",
        "duckdb_constraints",
        "duckdb_databases",
        "duckdb_dependencies",
        "duckdb_functions",
        "duckdb_indexes",
        "duckdb_keywords",
        "duckdb_optimizers",
        "duckdb_schemas",
        "duckdb_sequences",
        "duckdb_settings",
        "duckdb_tables",
        "duckdb_types",
        "duckdb_views",
        "duckdb_memory",
        "duckdb_temporary_files",
        "duckdb_variables",
    }
)
# Scalar functions that change something (a sequence, the session's random seed).
SCALAR_DENIED = frozenset({"nextval", "setval", "setseed"})
# Keywords that never belong in a read (checked where the syntax tree is not available).
WRITE_KEYWORDS = frozenset(
    {
        "INSERT",
        "UPDATE",
        "DELETE",
        "MERGE",
        "COPY",
        "ATTACH",
        "DETACH",
        "CREATE",
        "DROP",
        "ALTER",
        "INSTALL",
        "LOAD",
        "SET",
        "RESET",
        "PRAGMA",
        "CALL",
        "CHECKPOINT",
        "EXPORT",
        "IMPORT",
        "VACUUM",
        "TRUNCATE",
        "ANALYZE",
        "ANALYSE",
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
    }
)


_parser_lock = threading.Lock()
_parser: duckdb.DuckDBPyConnection | None = None


def check_read_only(query: str) -> str:
    """Return ``query`` if it is a single read-only statement, else raise ``SqlRefused``."""
    kind = _statement_type(query)
    if kind == duckdb.StatementType.EXPLAIN:
        check_read_only(_explained(query))
    elif kind == duckdb.StatementType.MULTI:
        _check_pivot(query)
    elif kind == duckdb.StatementType.SELECT:
        _check_tree(query)
    else:
        raise SqlRefused(
            f"only read-only queries (SELECT, WITH, EXPLAIN) are accepted, not {kind.name}"
        )
    return query


def _statement_type(query: str) -> duckdb.StatementType:
    try:
        statements = duckdb.extract_statements(query)
        kinds = [s.type for s in statements]
    except duckdb.Error as e:
        raise SqlRefused(f"cannot parse SQL: {e}") from None
    except ValueError:  # a statement type this DuckDB's Python enum lacks (UPDATE EXTENSIONS)
        raise SqlRefused(
            "only read-only queries (SELECT, WITH, EXPLAIN) are accepted, not "
            f"{' '.join(_words(query)[:2]).upper()}"
        ) from None
    if len(kinds) != 1:
        raise SqlRefused(f"expected exactly one statement, got {len(kinds)}")
    kind = kinds[0]
    if kind not in (*ALLOWED, duckdb.StatementType.MULTI):
        raise SqlRefused(
            f"only read-only queries (SELECT, WITH, EXPLAIN) are accepted, not {kind.name}"
        )
    return kind


def _tokens(query: str) -> list[tuple[str, str]]:
    """(text, type name) of each token but comments, as DuckDB's tokenizer splits them."""
    raw = duckdb.tokenize(query)
    out = []
    for i, (start, kind) in enumerate(raw):
        end = raw[i + 1][0] if i + 1 < len(raw) else len(query)
        if kind.name != "comment":
            out.append((query[start:end].strip(), kind.name))
    return out


def _explained(query: str) -> str:
    """The statement an ``EXPLAIN`` explains; ``SqlRefused`` for ``EXPLAIN ANALYZE``, which runs
    it (in any spelling: ``EXPLAIN/**/ANALYZE``, ``EXPLAIN (ANALYZE)``)."""
    raw = [(start, kind.name) for start, kind in duckdb.tokenize(query) if kind.name != "comment"]
    texts = _tokens(query)
    i, depth = 1, 0
    while i < len(texts):
        text = texts[i][0]
        if text.upper() in ("ANALYZE", "ANALYSE"):
            raise SqlRefused("EXPLAIN ANALYZE executes its statement; use EXPLAIN")
        if text.startswith("("):
            depth += 1
        elif text.startswith(")"):
            depth -= 1
        elif depth == 0:
            return query[raw[i][0] :]
        i += 1
    raise SqlRefused("EXPLAIN of nothing")


def syntax_tree(query: str) -> dict[str, Any]:
    """DuckDB's own parse of a query (``json_serialize_sql``); ``SqlRefused`` if it has none."""
    global _parser
    with _parser_lock:
        if _parser is None:
            _parser = duckdb.connect(":memory:", config={"enable_external_access": False})
        row = _parser.execute("SELECT json_serialize_sql(?)", [query]).fetchone()
    tree: dict[str, Any] = (
        json.loads(row[0]) if row else {"error": True, "error_message": "no result"}
    )
    if tree.get("error"):
        raise SqlRefused(f"cannot check SQL: {tree.get('error_message')}")
    return tree


def _check_tree(query: str) -> None:
    for node in _nodes(syntax_tree(query)):
        _check_node(node)


def _nodes(tree: Any) -> Iterator[dict[str, Any]]:
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _check_node(node: dict[str, Any]) -> None:
    kind = node.get("type")
    if not isinstance(kind, str):
        return
    if kind.endswith("_NODE") and kind not in READ_NODES:
        raise SqlRefused(
            "only read-only queries are accepted: this one contains a write "
            f"({kind.removesuffix('_NODE').removesuffix('_QUERY')})"
        )
    if kind == "TABLE_FUNCTION":
        name = str((node.get("function") or {}).get("function_name", "")).lower()
        if name not in TABLE_FUNCTIONS:
            raise SqlRefused(f"table function {name}() is not allowed in queries")
    elif node.get("class") == "FUNCTION":
        name = str(node.get("function_name", "")).lower()
        if name in SCALAR_DENIED:
            raise SqlRefused(f"function {name}() changes the database; not allowed in queries")


def _check_pivot(query: str) -> None:
    """A statement DuckDB splits into several (a PIVOT that finds its own column values):
    no writing keyword and no table function outside the allow-list, token by token."""
    tokens = _tokens(query)
    words = [t.upper() for t, kind in tokens if kind == "keyword"]
    if "PIVOT" not in words:
        raise SqlRefused(
            "only read-only queries (SELECT, WITH, EXPLAIN) are accepted, not a "
            "multi-part statement"
        )
    writes = sorted(WRITE_KEYWORDS.intersection(words))
    if writes:
        raise SqlRefused(f"only read-only queries are accepted: this one says {writes[0]}")
    for (text, kind), (after, _) in itertools.pairwise(tokens):
        if kind in ("identifier", "keyword") and after.startswith("("):
            name = text.strip('"').lower()
            if name in _table_function_names() and name not in TABLE_FUNCTIONS:
                raise SqlRefused(f"table function {name}() is not allowed in queries")
            if name in SCALAR_DENIED:
                raise SqlRefused(f"function {name}() changes the database; not allowed in queries")


_table_functions: frozenset[str] | None = None


def _table_function_names() -> frozenset[str]:
    global _table_functions
    if _table_functions is None:
        with _parser_lock:
            con = duckdb.connect(":memory:", config={"enable_external_access": False})
            rows = con.execute(
                "SELECT DISTINCT function_name FROM duckdb_functions() WHERE "
                "function_type IN ('table', 'table_macro')"
            ).fetchall()
            con.close()
        _table_functions = frozenset(r[0].lower() for r in rows)
    return _table_functions


def _words(query: str) -> list[str]:
    return query.strip().lstrip("(").lower().split()

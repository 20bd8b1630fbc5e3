"""Top-N over partitions: a query that reads one partitioned view and keeps at most its LIMIT
of it (``ORDER BY ... LIMIT n OFFSET m``, or a bare LIMIT) reads at most n + m rows of each
partition, not all of them (``journal.sqlplan`` uses it for the fetch; the federation then
runs the query unchanged over the rows fetched).

Why that is the query's answer: with one table, no grouping, no aggregate, no window and no
DISTINCT, the answer is the first n + m rows that pass the WHERE, in the ORDER, minus the
first m. Each of them is among the first n + m of its own partition under the same WHERE and
ORDER, so the union of every partition's first n + m holds them all, and the federation's
ORDER and LIMIT pick them out again (rows tied at the cut may differ, as SQL leaves them free).
Without an ORDER any n rows that pass are an answer. The WHERE and ORDER run twice (on the
partition, then in the federation), so they may call no volatile function (``random()``
would draw twice); an ORDER term must not be a position or a select-list alias, which the
fetch (``SELECT *``) does not have. Anything else leaves the query to the plain fetch.
"""

from __future__ import annotations

import copy
import functools
import json
import threading
from collections.abc import Iterator
from typing import Any

import duckdb

from journal.sqlguard import syntax_tree


def top_n_fetch(tree: dict[str, Any], columns: list[str]) -> str | None:
    """The fetch of the query parsed as ``tree`` from one partition: its own FROM, WHERE and
    ORDER, LIMIT n + m without the OFFSET, cut to ``columns``; None when it is not a top-N
    query over one table (the module's docstring says which are)."""
    statements = tree.get("statements") or []
    if len(statements) != 1 or not columns:
        return None
    node = statements[0].get("node") or {}
    limit = _limit(node)
    if limit is None or not _one_plain_table(node):
        return None
    select, where = node.get("select_list") or [], node.get("where_clause")
    orders = [o["expression"] for m in node["modifiers"] for o in m.get("orders", [])]
    if _any([*select, where, *orders], _aggregate_or_window) or _any([where, *orders], _volatile):
        return None
    aliases = {item.get("alias") for item in select} - {""}
    for expression in orders:
        if expression.get("class") == "CONSTANT" or _names(expression) & aliases:
            return None  # a position, or a select-list alias: not in ``SELECT *``
    fetch = copy.deepcopy(statements[0])
    fetch["node"]["select_list"] = [_star()]
    for modifier in fetch["node"]["modifiers"]:
        if modifier["type"] == "LIMIT_MODIFIER":
            modifier["limit"]["literal"]["text"] = str(limit)
            modifier["offset"] = None
    inner = _unparse({**tree, "statements": [fetch]})
    if inner is None:
        return None
    what = ", ".join('"' + c.replace('"', '""') + '"' for c in columns)
    return f"SELECT {what} FROM ({inner}) AS _top_n"


def _limit(node: dict[str, Any]) -> int | None:
    """n + m of a constant ``LIMIT n OFFSET m`` by row count, when the only other modifier is
    one ORDER BY (no DISTINCT); else None."""
    kinds = [m.get("type") for m in node.get("modifiers") or []]
    if kinds not in (["LIMIT_MODIFIER"], ["ORDER_MODIFIER", "LIMIT_MODIFIER"]):
        return None
    modifier = node["modifiers"][-1]
    if modifier.get("limit_type") != "ROW_COUNT":
        return None
    n, m = _integer(modifier.get("limit")), _integer(modifier.get("offset"), 0)
    return None if n is None or m is None else n + m


def _integer(expression: dict[str, Any] | None, absent: int | None = None) -> int | None:
    if expression is None:
        return absent
    literal = expression.get("literal") or {}
    if expression.get("class") != "CONSTANT" or literal.get("kind") != "INTEGER":
        return None
    value = int(literal["text"])
    return value if value >= 0 else None


def _one_plain_table(node: dict[str, Any]) -> bool:
    """A SELECT from one table as it is: no CTE, join, subquery in FROM, sample, time travel
    or column renaming, and no grouping, HAVING or QUALIFY."""
    table = node.get("from_table") or {}
    return (
        node.get("type") == "SELECT_NODE"
        and not (node.get("cte_map") or {}).get("map")
        and table.get("type") == "BASE_TABLE"
        and table.get("sample") is None
        and table.get("at_clause") is None
        and not table.get("column_name_alias")
        and not node.get("group_expressions")
        and not node.get("group_sets")
        and node.get("aggregate_handling") == "STANDARD_HANDLING"
        and node.get("having") is None
        and node.get("qualify") is None
        and node.get("sample") is None
    )


def _nodes(item: Any) -> Iterator[dict[str, Any]]:
    if isinstance(item, list):
        for x in item:
            yield from _nodes(x)
    elif isinstance(item, dict):
        yield item
        for value in item.values():
            yield from _nodes(value)


def _any(items: list[Any], test: Any) -> bool:
    return any(test(n) for n in _nodes(items))


def _aggregate_or_window(node: dict[str, Any]) -> bool:
    """A subquery (it may read another view), a window, or an aggregate call."""
    kind = node.get("class")
    if kind in ("SUBQUERY", "WINDOW"):
        return True
    return kind == "FUNCTION" and node.get("function_name", "").lower() in _functions()[0]


def _volatile(node: dict[str, Any]) -> bool:
    return (
        node.get("class") == "FUNCTION"
        and node.get("function_name", "").lower() in (_functions()[1])
    )


def _names(expression: dict[str, Any]) -> set[str]:
    """The last part of every column reference in ``expression``."""
    return {
        n["column_names"][-1]
        for n in _nodes(expression)
        if n.get("class") == "COLUMN_REF" and n.get("column_names")
    }


_lock = threading.Lock()


@functools.cache
def _connection() -> duckdb.DuckDBPyConnection:
    """An empty in-memory DuckDB for this module's questions (used under ``_lock``)."""
    return duckdb.connect(":memory:", config={"enable_external_access": False})


@functools.cache
def _functions() -> tuple[frozenset[str], frozenset[str]]:
    """DuckDB's aggregate functions, and its volatile ones."""
    with _lock:
        rows = (
            _connection()
            .execute(
                "SELECT lower(function_name), function_type = 'aggregate', stability = 'VOLATILE'"
                " FROM duckdb_functions()"
            )
            .fetchall()
        )
    return (
        frozenset(name for name, aggregate, _ in rows if aggregate),
        frozenset(name for name, _, volatile in rows if volatile),
    )


@functools.cache
def _star_json() -> str:
    return json.dumps(syntax_tree("SELECT * FROM t")["statements"][0]["node"]["select_list"][0])


def _star() -> dict[str, Any]:
    node: dict[str, Any] = json.loads(_star_json())
    return node


def _unparse(tree: dict[str, Any]) -> str | None:
    """SQL text of a syntax tree (DuckDB's ``json_deserialize_sql``); None if it has none."""
    try:
        with _lock:
            rows = (
                _connection()
                .execute("SELECT json_deserialize_sql(?::JSON)", [json.dumps(tree)])
                .fetchall()
            )
    except duckdb.Error:
        return None
    return str(rows[0][0]) if rows else None

"""Where a user's query over a partitioned journal runs, and what it reads of each partition
(``journal.federated`` runs the plan; its docstring says why the plan is sound). Pure: DuckDB's
own parse of the query (``json_serialize_sql``); no Ray, no open journal.

Why a WHERE equality may be pushed into a fetch, and may pick the partition: in a SELECT, a
row of a table reference reached from its FROM through inner, outer, semi or anti joins that
fails a top-level conjunct ``ref.column = 'literal'`` of the WHERE contributes to no output
row (an outer join's NULL rows fail the equality too), so leaving it out changes nothing. Not
through ASOF or POSITIONAL joins, nor under a sample (there the rows present change what a row
joins with or which rows are drawn). Each reference of a relation either has such conjuncts or
reads every row; the relation's fetch keeps the rows that pass one reference's conjuncts (an
OR over the references). Anything else (an OR at the top, a CTE that shadows a view's name
and reads the view unrestricted) leaves a reference unrestricted: all rows, all partitions.
When every reference of a partitioned relation keeps only the rows of one invocation id or
one key, and they all name one partition, the query's answer there is its answer over all.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import duckdb

from journal.partitions import Partitions, partition_of_id
from journal.schema import migrate
from journal.sqlguard import check_read_only, syntax_tree
from journal.sqltopn import top_n_fetch

CATALOG = "journal"  # the journal file's catalog name, which queries may spell out
# How a query may name the journal's schema: ``x``, ``main.x``, ``journal.x``, ``journal.main.x``
NAMED_SCHEMAS = frozenset({("", ""), ("", "main"), ("", CATALOG), (CATALOG, ""), (CATALOG, "main")})
# The same in every partition (the registry Runtime.start writes, the migrations): partition 0.
SHARED = frozenset({"sys_service", "service_registry", "schema_version"})
# The column naming the invocation a row belongs to (rows of an invocation: its partition).
ID_COLUMNS = {
    "sys_invocation": "id",
    "sys_journal": "invocation_id",
    "sys_journal_events": "invocation_id",
    "sys_timer": "invocation_id",
    "sys_waiting": "invocation_id",
    "sys_inbox": "id",
    "sys_keyed_service_status": "invocation_id",
    "key_queue": "id",
}
_KEY = ("service_name", "service_key")
# The columns naming the key a row belongs to (rows of a key: its partition).
KEY_COLUMNS = {
    "state": _KEY,
    "state_current": _KEY,
    "sys_promise": _KEY,
    "sys_inbox": _KEY,
    "sys_keyed_service_status": _KEY,
    "key_queue": _KEY,
    "sys_invocation": ("target_service_name", "target_service_key"),
}
# Joins through which a WHERE equality on one side keeps that side's other rows out of the answer.
ROW_JOINS = frozenset({"REGULAR", "CROSS"})
JOIN_TYPES = frozenset({"INNER", "LEFT", "RIGHT", "FULL", "OUTER", "SEMI", "ANTI"})
# Table references that see every column of what they read.
WHOLE_ROW_REFS = frozenset({"TABLE_FUNCTION", "SHOW_REF", "PIVOT"})


class Spread(enum.StrEnum):
    """How a relation's rows lie over the partitions."""

    PARTITIONED = "partitioned"  # each partition holds its own rows: the view is their union
    SHARED = "shared"  # every partition holds the same rows: partition 0's are the view


@dataclass(frozen=True)
class Relation:
    """A table or view of the journal's schema."""

    name: str
    columns: tuple[tuple[str, str], ...]  # (name, DuckDB type), in the schema's order
    spread: Spread

    @functools.cached_property
    def column_names(self) -> frozenset[str]:
        return frozenset(c for c, _ in self.columns)


@functools.cache
def catalog() -> dict[str, Relation]:
    """Every relation of the journal's schema, read from the migrations applied in memory."""
    con = duckdb.connect(":memory:", config={"enable_external_access": False})
    try:
        migrate(con)
        rows = con.execute(
            "SELECT table_name, column_name, data_type FROM duckdb_columns() "
            "WHERE database_name = current_database() AND schema_name = 'main' "
            "ORDER BY table_name, column_index"
        ).fetchall()
    finally:
        con.close()
    columns: dict[str, list[tuple[str, str]]] = {}
    for table, column, kind in rows:
        columns.setdefault(table.lower(), []).append((column, kind))
    return {
        name: Relation(name, tuple(cols), Spread.SHARED if name in SHARED else Spread.PARTITIONED)
        for name, cols in columns.items()
    }


@dataclass(frozen=True)
class Fetch:
    """What the federation reads of one relation: from which partitions, which columns
    (None: only how many rows), which rows (None: all)."""

    relation: Relation
    partitions: tuple[int, ...]
    columns: tuple[tuple[str, str], ...] | None
    where: str | None
    sql: str | None = None  # a query of its own (``journal.sqltopn``)

    @property
    def query(self) -> str:
        if self.sql is not None:
            return self.sql
        what = "count(*) AS n" if self.columns is None else _list(c for c, _ in self.columns)
        where = "" if self.where is None else f" WHERE {self.where}"
        return f"SELECT {what} FROM {ident(self.relation.name)}{where}"


@dataclass(frozen=True)
class Plan:
    """How a query runs: unchanged on ``partition``, or federated over ``fetches``."""

    partition: int | None = None
    fetches: tuple[Fetch, ...] = ()
    named_catalog: bool = False  # the query names the journal's catalog (``journal.x``)

    @property
    def requests(self) -> list[tuple[int, str]]:
        """(partition, query) of every read, in order: the fetches' partitions in turn."""
        if self.partition is not None:
            return []
        return [(p, f.query) for f in self.fetches for p in f.partitions]


# -- planning ----------------------------------------------------------------------------------


@dataclass
class _Ref:
    """One reference to a journal relation in a query, and the equalities its rows must pass."""

    relation: Relation
    schema_only: bool  # under DESCRIBE: reads no row
    conjuncts: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class _Reading:
    """What a query reads, found in its syntax tree."""

    refs: dict[int, _Ref] = field(default_factory=dict)  # by id() of the table reference
    selects: list[dict[str, Any]] = field(default_factory=list)
    names: set[str] = field(default_factory=set)  # every part of every column reference
    last_names: set[str] = field(default_factory=set)  # the last part of each (a row?)
    relation_names: set[str] = field(default_factory=set)  # journal relations' names, aliases
    whole_rows: bool = False  # some part sees every column
    named_catalog: bool = False  # a reference spells out the journal's catalog name


def plan(query: str, layout: Partitions) -> Plan:
    """Check ``query`` (``journal.sqlguard``) and decide where and how it runs."""
    check_read_only(query)
    if layout.count == 1:
        return Plan(partition=0)
    kind = duckdb.extract_statements(query)[0].type
    if kind == duckdb.StatementType.EXPLAIN:
        return Plan(partition=0)  # the plan as one partition's journal runs it
    reading = _Reading()
    tree = None
    if kind == duckdb.StatementType.SELECT:
        tree = syntax_tree(query)
        _walk(tree, reading, schema_only=False)
        for select in reading.selects:
            _restrict(select, reading)
    else:  # a PIVOT DuckDB splits into several statements: the names in its tokens
        reading.whole_rows = True
        for name in _token_names(query):
            if name in catalog():
                reading.refs[len(reading.refs)] = _Ref(catalog()[name], schema_only=False)
    planned = _plan(reading, layout)
    if tree is not None and len(reading.refs) == 1 and len(planned.fetches) == 1:
        (fetch,) = planned.fetches
        if fetch.columns is not None and len(fetch.partitions) > 1:
            top_n = top_n_fetch(tree, [c for c, _ in fetch.columns])
            if top_n is not None:  # at most its limit from each partition
                fetches = (dataclasses.replace(fetch, sql=top_n),)
                return dataclasses.replace(planned, fetches=fetches)
    return planned


def _plan(reading: _Reading, layout: Partitions) -> Plan:
    refs = list(reading.refs.values())
    partitioned = [r for r in refs if r.relation.spread is Spread.PARTITIONED and not r.schema_only]
    if not partitioned:
        return Plan(partition=0)
    homes = {_home(r, layout) for r in partitioned}
    if len(homes) == 1 and None not in homes:
        return Plan(partition=homes.pop())
    every = tuple(layout)
    if reading.whole_rows or reading.last_names & reading.relation_names:  # a row as a struct
        wanted = None
    else:
        wanted = reading.names
    fetches = []
    for name in sorted({r.relation.name for r in refs}):
        relation = catalog()[name]
        reads = [r for r in refs if r.relation.name == name and not r.schema_only]
        homes = {_home(r, layout) for r in reads}
        if not reads or relation.spread is Spread.SHARED:
            partitions: tuple[int, ...] = (0,)
        elif None in homes:
            partitions = every
        else:
            partitions = tuple(sorted(p for p in homes if p is not None))
        if not reads:
            where: str | None = "false"
        elif all(r.conjuncts for r in reads):
            where = " OR ".join(
                "(" + " AND ".join(f"{ident(c)} = {_literal(v)}" for c, v in r.conjuncts) + ")"
                for r in reads
            )
        else:
            where = None
        columns = (
            relation.columns
            if wanted is None
            else tuple(c for c in relation.columns if c[0] in wanted) or None
        )
        fetches.append(Fetch(relation, partitions, columns, where))
    return Plan(fetches=tuple(fetches), named_catalog=reading.named_catalog)


def _home(ref: _Ref, layout: Partitions) -> int | None:
    """The one partition that can hold the rows ``ref`` reads, if its equalities name one."""
    values: dict[str, str] = {}
    for column, value in ref.conjuncts:
        values.setdefault(column, value)
    name = ref.relation.name
    id_column = ID_COLUMNS.get(name)
    if id_column in values:
        invocation_id = values[id_column]
        p = partition_of_id(invocation_id)
        if p < layout.count and layout.place(invocation_id, p) == invocation_id:
            return p
    key = KEY_COLUMNS.get(name)
    if key is not None and key[0] in values and key[1] in values:
        return layout.of_key(values[key[0]], values[key[1]])
    return None


def _walk(item: Any, reading: _Reading, schema_only: bool) -> None:
    """Collect the query's references, column names and SELECTs (every depth: subqueries,
    CTEs, set operations, joins)."""
    if isinstance(item, list):
        for x in item:
            _walk(x, reading, schema_only)
        return
    if not isinstance(item, dict):
        return
    kind = item.get("type") if isinstance(item.get("type"), str) else None
    if kind == "SELECT_NODE":
        reading.selects.append(item)
    elif kind == "BASE_TABLE":
        if item.get("column_name_alias"):
            reading.whole_rows = True  # columns renamed by position
        relation = _relation(item)
        if relation is not None:
            reading.refs[id(item)] = _Ref(relation, schema_only)
            reading.named_catalog |= CATALOG in (
                str(item.get("catalog_name") or "").lower(),
                str(item.get("schema_name") or "").lower(),
            )
            # its name or alias as a column is its whole row, a struct
            reading.relation_names.update({relation.name, _ref_name(item)})
    elif kind in WHOLE_ROW_REFS:
        reading.whole_rows = True
        schema_only = schema_only or (kind == "SHOW_REF" and item.get("show_type") == "DESCRIBE")
    elif kind == "JOIN":
        if item.get("ref_type") == "NATURAL":
            reading.whole_rows = True
        reading.names.update(str(c).lower() for c in item.get("using_columns") or [])
    elif kind in ("STAR", "POSITIONAL_REFERENCE"):
        reading.whole_rows = True
    elif kind == "COLUMN_REF":
        parts = [str(c).lower() for c in item.get("column_names") or []]
        reading.names.update(parts)
        reading.last_names.update(parts[-1:])
    for value in item.values():
        if isinstance(value, dict | list):
            _walk(value, reading, schema_only)


def _relation(table: dict[str, Any]) -> Relation | None:
    """The journal relation a base-table reference names (None: another catalog's, or none)."""
    schema = str(table.get("schema_name") or "").lower()
    db = str(table.get("catalog_name") or "").lower()
    if (db, schema) not in NAMED_SCHEMAS:
        return None
    return catalog().get(str(table.get("table_name", "")).lower())


def _restrict(select: dict[str, Any], reading: _Reading) -> None:
    """Record on each reference the WHERE equalities every row it contributes must pass."""
    if select.get("sample"):  # drawn before WHERE: the rows present change the draw
        return
    top = select.get("from_table")
    leaves = list(_leaves(top))
    for parts, value in _equalities(select.get("where_clause")):
        if len(parts) == 1 and len(leaves) == 1 and top is leaves[0]:
            leaf = leaves[0]
        elif len(parts) == 2:
            named = [t for t in leaves if _ref_name(t) == parts[0]]
            if len(named) != 1:
                continue
            leaf = named[0]
        else:
            continue
        ref = reading.refs.get(id(leaf))
        if ref is None or leaf.get("sample") or leaf.get("column_name_alias"):
            continue
        if leaf.get("at_clause") or parts[-1] not in ref.relation.column_names:
            continue
        ref.conjuncts.append((parts[-1], value))


def _leaves(table: dict[str, Any] | None) -> Iterator[dict[str, Any]]:
    """The base tables under a FROM whose rows a WHERE equality on them keeps or drops."""
    if not table:
        return
    if table.get("type") == "BASE_TABLE":
        yield table
    elif (
        table.get("type") == "JOIN"
        and table.get("ref_type") in ROW_JOINS
        and table.get("join_type") in JOIN_TYPES
    ):
        yield from _leaves(table.get("left"))
        yield from _leaves(table.get("right"))


def _ref_name(table: dict[str, Any]) -> str:
    return str(table.get("alias") or table.get("table_name") or "").lower()


def _equalities(where: dict[str, Any] | None) -> Iterator[tuple[list[str], str]]:
    """(column reference's parts, string literal) of each top-level ``column = 'literal'``."""
    if not where:
        return
    if where.get("type") == "CONJUNCTION_AND":
        for child in where.get("children") or []:
            yield from _equalities(child)
        return
    if where.get("type") != "COMPARE_EQUAL":
        return
    for column, constant in ((where["left"], where["right"]), (where["right"], where["left"])):
        literal = constant.get("literal") or {}
        if (
            column.get("type") == "COLUMN_REF"
            and constant.get("type") == "VALUE_CONSTANT"
            and literal.get("kind") == "STRING"
        ):
            yield [str(c).lower() for c in column["column_names"]], str(literal.get("text"))


def _token_names(query: str) -> set[str]:
    names = set()
    tokens = duckdb.tokenize(query)
    for i, (start, kind) in enumerate(tokens):
        if kind.name in ("identifier", "keyword"):
            end = tokens[i + 1][0] if i + 1 < len(tokens) else len(query)
            names.add(query[start:end].strip().strip('"').lower())
    return names


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _list(names: Iterator[str]) -> str:
    return ", ".join(ident(n) for n in names)

"""Print a ``pyarrow.Table`` (what ``Runtime.sql`` returns) as a rich table, JSON lines or CSV.

Used by the ``raystate`` command line, the examples and the benchmarks. JSON columns of the
journal (``input``, ``output``, ``result``, ``value``, ...) arrive as JSON text: the table and
CSV print that text, JSON lines embed it as JSON (not as a string holding JSON). Timestamps
print in ISO 8601 in UTC with milliseconds and a ``Z`` (the journal's timestamps are UTC);
DuckDB's big integers and decimals print as numbers. Id columns never wrap, so an id stays
copyable in a narrow terminal.

>>> write(rt.sql("SELECT status, count(*) AS n FROM sys_invocation GROUP BY 1"))  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import enum
import json
import sys
from collections.abc import Iterator, Mapping
from typing import IO, Any

import pyarrow as pa
from rich.console import Console
from rich.table import Table

from journal.kinds import EntryType


class Format(enum.StrEnum):
    """Output formats: ``table`` (rich, for people), ``json`` (one object a line), ``csv``."""

    table = "table"
    json = "json"
    csv = "csv"


# Columns of the SQL views that hold JSON text (DuckDB's JSON type reaches Arrow as a string).
JSON_COLUMNS = frozenset({"input", "output", "result", "value", "event_json", "options"})


def timestamp(value: dt.datetime) -> str:
    """ISO 8601 in UTC with milliseconds: ``2026-12-06T12:23:49.291Z`` (naive means UTC)."""
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.isoformat(timespec="milliseconds") + "Z"


def plain(value: Any) -> Any:
    """A JSON- and CSV-friendly form of one Arrow cell value."""
    if isinstance(value, dt.datetime):
        return timestamp(value)
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):  # sum() and HUGEINT arrive as decimals
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, bytes):
        return value.hex()
    return value


def _json_value(text: Any) -> Any:
    """The JSON a JSON column holds (text that does not parse stays text)."""
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def is_json_column(field: pa.Field) -> bool:
    return field.name in JSON_COLUMNS and (
        pa.types.is_string(field.type) or pa.types.is_large_string(field.type)
    )


def records(table: pa.Table, *, embed_json: bool = False) -> Iterator[dict[str, Any]]:
    """The rows of ``table`` as dicts of plain values; ``embed_json``: JSON columns as the
    values they hold instead of their text."""
    parsed = {f.name for f in table.schema if is_json_column(f)} if embed_json else set()
    for row in table.to_pylist():
        yield {k: _json_value(v) if k in parsed else plain(v) for k, v in row.items()}


def json_lines(table: pa.Table) -> Iterator[str]:
    for row in records(table, embed_json=True):
        yield json.dumps(row, default=str, ensure_ascii=False)


def is_id_column(name: str) -> bool:
    return name == "id" or name.endswith("_id")


def rich_table(
    table: pa.Table, title: str | None = None, widths: Mapping[str, int] | None = None
) -> Table:
    """``table`` for a terminal. Id and timestamp columns keep their full width (other
    columns fold first); ``widths`` cuts the named columns' text to that many characters."""
    out = Table(title=title, title_justify="left", header_style="bold")
    rows = [
        [_cell(v, (widths or {}).get(name)) for name, v in row.items()] for row in table.to_pylist()
    ]
    for i, field in enumerate(table.schema):
        numeric = pa.types.is_integer(field.type) or pa.types.is_floating(field.type)
        if is_id_column(field.name) or pa.types.is_timestamp(field.type):
            longest = max((len(r[i]) for r in rows), default=0)
            out.add_column(field.name, no_wrap=True, min_width=max(longest, len(field.name)))
        else:
            out.add_column(field.name, justify="right" if numeric else "left", overflow="fold")
    for cells in rows:
        out.add_row(*cells)
    return out


def _cell(value: Any, width: int | None) -> str:
    text = "" if value is None else str(plain(value))
    if width is not None:
        first = text.splitlines()[0] if text else ""
        if len(first) > width:
            text = first[: width - 1] + "…"
        elif first != text:
            text = first + " …"
    return text


def console(file: IO[str] | None = None) -> Console:
    """A console for ``file`` (stdout by default); a pipe gets whole lines, not 80 columns."""
    target = file if file is not None else sys.stdout
    wide = None if target.isatty() else 1_000_000
    return Console(file=target, width=wide, soft_wrap=wide is not None)


def write(
    table: pa.Table,
    fmt: Format | str = Format.table,
    *,
    title: str | None = None,
    file: IO[str] | None = None,
    widths: Mapping[str, int] | None = None,
) -> None:
    """Print ``table`` in ``fmt`` to ``file`` (default stdout); ``widths``: see
    ``rich_table`` (the table format only)."""
    fmt = Format(fmt)
    out = file if file is not None else sys.stdout
    if fmt is Format.json:
        for line in json_lines(table):
            out.write(line + "\n")
    elif fmt is Format.csv:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(table.column_names)
        for row in records(table):
            writer.writerow("" if v is None else v for v in row.values())
    else:
        console(out).print(rich_table(table, title, widths))


def sleeps_as_times(entries: pa.Table) -> pa.Table:
    """A sleep's result is its due time in epoch milliseconds: show it as a timestamp (JSON
    text, like every result)."""
    kinds = entries.column("entry_type").to_pylist()
    results = entries.column("result").to_pylist()
    shown = [
        json.dumps(timestamp(dt.datetime.fromtimestamp(int(r) / 1000, dt.UTC)))
        if kind == EntryType.SLEEP and isinstance(r, str) and r.isdigit()
        else r
        for kind, r in zip(kinds, results, strict=True)
    ]
    column = entries.schema.get_field_index("result")
    return entries.set_column(column, "result", pa.array(shown, pa.string()))


def write_description(row: pa.Table, entries: pa.Table, fmt: Format) -> None:
    """``raystate describe``: one invocation, then its journal entries."""
    if fmt is Format.json:
        doc = {
            "invocation": next(records(row, embed_json=True)),
            "journal": list(records(entries, embed_json=True)),
        }
        print(json.dumps(doc, default=str, ensure_ascii=False))
    elif fmt is Format.csv:
        write(row, fmt)
        print()
        write(entries, fmt)
    else:
        invocation = next(records(row))
        fields = pa.table(
            {
                "field": list(invocation),
                "value": ["" if v is None else str(v) for v in invocation.values()],
            }
        )
        out = console()
        out.print(rich_table(fields, title=f"invocation {invocation['id']}"))
        out.print(rich_table(entries, title=f"journal ({entries.num_rows} entries)"))

"""Print a ``pyarrow.Table`` (what ``Runtime.sql`` returns) as a rich table, JSON lines or CSV.

Used by the ``raystate`` command line, the examples and the benchmarks. JSON columns of the
journal (``input``, ``output``, ``result``, ``value``) arrive as JSON text and are printed as
that text; timestamps print in ISO 8601.

>>> write(rt.sql("SELECT status, count(*) AS n FROM sys_invocation GROUP BY 1"))  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import enum
import json
import sys
from collections.abc import Iterator
from typing import IO, Any

import pyarrow as pa
from rich.console import Console
from rich.table import Table


class Format(enum.StrEnum):
    """Output formats: ``table`` (rich, for people), ``json`` (one object a line), ``csv``."""

    table = "table"
    json = "json"
    csv = "csv"


def plain(value: Any) -> Any:
    """A JSON- and CSV-friendly form of one Arrow cell value."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    return value


def records(table: pa.Table) -> Iterator[dict[str, Any]]:
    """The rows of ``table`` as dicts of plain values."""
    for row in table.to_pylist():
        yield {k: plain(v) for k, v in row.items()}


def json_lines(table: pa.Table) -> Iterator[str]:
    for row in records(table):
        yield json.dumps(row, default=str, ensure_ascii=False)


def rich_table(table: pa.Table, title: str | None = None) -> Table:
    out = Table(title=title, title_justify="left", header_style="bold")
    for field in table.schema:
        numeric = pa.types.is_integer(field.type) or pa.types.is_floating(field.type)
        out.add_column(field.name, justify="right" if numeric else "left", overflow="fold")
    for row in table.to_pylist():
        out.add_row(*("" if v is None else str(plain(v)) for v in row.values()))
    return out


def console(file: IO[str] | None = None) -> Console:
    """A console for ``file`` (stdout by default); a pipe gets whole lines, not 80 columns."""
    target = file if file is not None else sys.stdout
    wide = None if target.isatty() else 1_000_000
    return Console(file=target, width=wide, soft_wrap=wide is not None)


def write(table: pa.Table, fmt: Format | str = Format.table, *, title: str | None = None,
          file: IO[str] | None = None) -> None:
    """Print ``table`` in ``fmt`` to ``file`` (default stdout)."""
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
        console(out).print(rich_table(table, title))

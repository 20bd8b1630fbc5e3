"""Printing query results: timestamps with a zone and milliseconds, numbers as numbers, JSON
columns embedded in JSON output, long cells cut for the table."""

from __future__ import annotations

import datetime as dt
import decimal
import io
import json

import pyarrow as pa

from actors.client.tables import Format, plain, records, rich_table, write
from actors.client.waiting import InvocationTimeoutError


def test_timestamps_are_utc_with_milliseconds_and_a_zone() -> None:
    naive = dt.datetime(2026, 12, 6, 12, 23, 49, 291000)
    assert plain(naive) == "2026-12-06T12:23:49.291Z"
    assert plain(dt.datetime(2026, 12, 6, 12, 23, 49)) == "2026-12-06T12:23:49.000Z"
    berlin = dt.datetime(2026, 12, 6, 13, 23, 49, 291500, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert plain(berlin) == "2026-12-06T12:23:49.291Z"


def test_decimals_are_numbers() -> None:
    assert plain(decimal.Decimal("12")) == 12 and isinstance(plain(decimal.Decimal("12")), int)
    assert plain(decimal.Decimal("1.5")) == 1.5


def test_json_columns_are_embedded_in_json_only() -> None:
    table = pa.table(
        {"value": ['"Hal"', '{"a": 1}', "not json", None], "name": ['"Hal"', "x", "y", "z"]}
    )
    out = io.StringIO()
    write(table, Format.json, file=out)
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["value"] for r in rows] == ["Hal", {"a": 1}, "not json", None]
    assert rows[0]["name"] == '"Hal"'  # not a JSON column: its text
    assert next(records(table))["value"] == '"Hal"'  # CSV and tables keep the text


def test_table_cuts_named_columns_and_keeps_ids_whole() -> None:
    ident = "inv_" + "0123456789abcdef" * 2
    table = pa.table(
        {
            "id": [ident],
            "last_failure": ["ValueError: " + "x" * 100 + "\ntrace"],
            "note": ["short\nsecond"],
        }
    )
    from rich.console import Console

    out = io.StringIO()
    Console(file=out, width=80).print(rich_table(table, widths={"last_failure": 20, "note": 20}))
    text = out.getvalue()
    assert ident in text and "ValueError: xxxxxxx…" in text and "short …" in text
    assert "trace" not in text and "second" not in text


def test_timeout_error_says_where_the_invocation_stands() -> None:
    e = InvocationTimeoutError("inv_1", 2.0, "backing-off", 3, "ValueError: boom")
    assert isinstance(e, TimeoutError)
    assert str(e) == (
        "invocation inv_1 did not finish within 2 s (status backing-off after 3 "
        "retries; last failure: ValueError: boom)"
    )
    assert "no failure so far" in str(InvocationTimeoutError("inv_1", 1, "running", 0, None))
    assert "could not be read" in str(InvocationTimeoutError("inv_1", 1))
    import pickle

    assert str(pickle.loads(pickle.dumps(e))) == str(e)

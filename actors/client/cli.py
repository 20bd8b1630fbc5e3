"""The ``raystate`` command line: thin commands over ``Runtime.sql`` and the SQL views.

    raystate sql "SELECT status, count(*) FROM sys_invocation GROUP BY 1" [--format json]
    raystate invocations [--status S] [--service S] [--key K] [--limit N] [--all]
    raystate describe ID
    raystate state SERVICE KEY
    raystate cancel ID | raystate kill ID
    raystate resolve AWAKEABLE_ID JSON | raystate reject AWAKEABLE_ID REASON
    raystate schedules | raystate schedule pause|resume|delete ID

Every command reaches a running runtime through Ray (``--address``, ``--namespace``); the
reading ones can instead, with ``--db DATA_DIR``, open a stopped runtime's journal file directly,
read-only (rows a journal that died left only in its write-ahead log are replayed into the
file first; the acting ones refuse ``--db`` with a message: they need the runtime). Either way
the query passes ``journal.sqlguard.check_read_only`` and runs in a read-only transaction with
file and network access switched off, under a time limit and a result cap (``journal.usersql``).
Exit codes: 0 done, 1 refused or failed query / unknown id, service or key, 2 nothing to read
from or a bad command line (an unknown ``--status``, say).

Output: ``--format table`` (default) for people: ids never wrap; ``json`` (one object a line,
JSON columns embedded as JSON, numbers as numbers) and ``csv`` for programs. Timestamps are UTC,
ISO 8601 with milliseconds and a ``Z``.

Speed: a read attaches to the running cluster and makes one Ray call to the journal actor (no
``Runtime``, no handler modules loaded). When the command line attached to Ray itself (run as
``raystate``, not in-process), the process ends with ``os._exit`` once its output is flushed:
Ray's exit hook and ``ray.shutdown`` would wait for nothing, and a driver's exit is how Ray
learns it is gone either way (nothing of the command's is left in flight by then).

The SQL entry point takes one string, so the commands that filter build their queries with
``sql_literal`` (single quotes doubled), never by pasting raw values.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import click
import duckdb
import typer

from actors.client.clihelp import RaystateCommand, RaystateGroup
from actors.client.sources import (
    ATTACHED,
    NotFound,
    Source,
    Unreachable,
    attach_ray,
    connect,
    first_line,
    open_source,
)
from actors.client.tables import (
    Format,
    console,
    sleeps_as_times,
    write,
    write_description,
)
from actors.sdk.errors import TerminalError
from journal.kinds import InvocationStatus
from journal.sqlguard import SqlRefused


class _App(typer.Typer):
    """The ``raystate`` console script: ``app()`` ends the process at once when the command
    attached to Ray itself (see the module's docstring)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except SystemExit as e:
            if ATTACHED:
                _exit_now(e.code)
            raise


def _exit_now(code: object) -> None:
    if isinstance(code, str):
        print(code, file=sys.stderr)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # (a closed pipe: nothing to flush into)
            stream.flush()
    os._exit(code if isinstance(code, int) else 0 if code is None else 1)


app = _App(
    name="raystate",
    help="Inspect a raystate runtime: its invocations, journals and state, with SQL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=RaystateGroup,
)

AddressOpt = Annotated[
    str | None,
    typer.Option(
        "--address",
        envvar="RAY_ADDRESS",
        metavar="ADDRESS",
        help="Ray cluster address (default: auto, the running local cluster).",
    ),
]
NamespaceOpt = Annotated[
    str,
    typer.Option(
        "--namespace",
        envvar="RAYSTATE_NAMESPACE",
        metavar="NAMESPACE",
        help="The runtime's namespace.",
    ),
]
DbOpt = Annotated[
    Path | None,
    typer.Option(
        "--db",
        metavar="DATA_DIR",
        help="Read this data dir (or its journal.duckdb) directly and read-only, when "
        "no runtime runs on it.",
    ),
]
FormatOpt = Annotated[Format, typer.Option("--format", "-f", case_sensitive=False)]
LiveDbOpt = Annotated[
    Path | None,
    typer.Option(
        "--db",
        metavar="DATA_DIR",
        hidden=True,
        help="Refused: acting on an invocation needs its running runtime.",
    ),
]


def sql_literal(value: str) -> str:
    """``value`` as a SQL string literal: quoted, with single quotes doubled."""
    return "'" + value.replace("'", "''") + "'"


def _fail(message: str, code: int) -> None:
    typer.echo(f"raystate: {message}", err=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Turn failures into one line on stderr and an exit code."""
    try:
        yield
    except (typer.Exit, click.ClickException):
        raise
    except Unreachable as e:
        _fail(str(e), 2)
    except (SqlRefused, duckdb.Error) as e:
        _fail(f"query failed: {first_line(e)}", 1)
    except NotFound as e:
        _fail(str(e), 1)
    except TerminalError as e:
        _fail(e.message, 1)
    except Exception as e:  # a CLI reports in one line, it does not dump tracebacks
        _fail(f"{type(e).__name__}: {first_line(e)}", 1)


# -- commands --------------------------------------------------------------------------------


@app.callback()
def main() -> None:
    """Inspect a raystate runtime: its invocations, journals and state, with SQL."""


@app.command(cls=RaystateCommand)
def sql(
    query: Annotated[str, typer.Argument(help="One read-only query; '-' reads it from stdin.")],
    fmt: FormatOpt = Format.table,
    address: AddressOpt = None,
    namespace: NamespaceOpt = "raystate",
    db: DbOpt = None,
) -> None:
    """Run a read-only SQL query over sys_invocation, sys_journal, state, ..."""
    if query == "-":
        query = sys.stdin.read()
    with _errors(), open_source(db, address, namespace) as source:
        write(source.sql(query), fmt)


INVOCATION_COLUMNS = (
    "id, target, status, completion_result, retry_count, last_failure, created_at, modified_at"
)
# Unfinished invocations first (what needs a look), then the most recently changed.
INVOCATION_ORDER = "status = 'completed', modified_at DESC, id"
FAILURE_WIDTH = 60  # characters of last_failure the table shows (json and csv: all of it)
WIDE = 140  # a terminal this wide also gets the invocations' times in the table


def _table_columns(width: int) -> list[str]:
    """The columns ``invocations`` shows as a table: a whole id and what needs a look first
    (json and csv have every column; ``describe`` has the rest)."""
    columns = ["id", "target", "status", "retry_count", "last_failure"]
    return columns + (["modified_at"] if width >= WIDE else [])


def invocations_query(
    status: str | None = None,
    service: str | None = None,
    key: str | None = None,
    limit: int | None = 50,
) -> str:
    """The ``raystate invocations`` query: unfinished first, then the most recently changed
    (None: no limit). With partitions it reads at most ``limit`` rows of each
    (``journal.sqltopn``); ``invocations_count_query`` counts them all."""
    cut = "" if limit is None else f" LIMIT {int(limit)}"
    return (
        f"SELECT {INVOCATION_COLUMNS} FROM sys_invocation{_where(status, service, key)}"
        f" ORDER BY {INVOCATION_ORDER}{cut}"
    )


def invocations_count_query(
    status: str | None = None, service: str | None = None, key: str | None = None
) -> str:
    """How many invocations ``invocations_query`` would list without a limit."""
    return f"SELECT count(*) AS n FROM sys_invocation{_where(status, service, key)}"


def _where(status: str | None, service: str | None, key: str | None) -> str:
    where = [
        f"{column} = {sql_literal(value)}"
        for column, value in (
            ("status", status),
            ("target_service_name", service),
            ("target_service_key", key),
        )
        if value is not None
    ]
    return f" WHERE {' AND '.join(where)}" if where else ""


@app.command(cls=RaystateCommand)
def invocations(
    status: Annotated[
        InvocationStatus | None,
        typer.Option(help="Only invocations in this status.", case_sensitive=False),
    ] = None,
    service: Annotated[
        str | None, typer.Option(metavar="SERVICE", help="Target service name.")
    ] = None,
    key: Annotated[
        str | None, typer.Option(metavar="KEY", help="Target virtual-object key.")
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, metavar="N", help="Show at most N invocations.")
    ] = 50,
    every: Annotated[bool, typer.Option("--all", help="Show all of them (no --limit).")] = False,
    fmt: FormatOpt = Format.table,
    address: AddressOpt = None,
    namespace: NamespaceOpt = "raystate",
    db: DbOpt = None,
) -> None:
    """List invocations: unfinished first, then the most recently changed. Says on stderr how
    many more there are."""
    which = (status.value if status else None, service, key)
    shown = None if every else limit
    with _errors(), open_source(db, address, namespace) as source:
        table = source.sql(invocations_query(*which, shown))
        total = table.num_rows  # a full page: count them all (a count crosses, not the rows)
        if shown is not None and total == shown:
            total = source.sql(invocations_count_query(*which)).column(0)[0].as_py()
        if Format(fmt) is Format.table:
            columns = _table_columns(console().width)
            table = table.select(columns).rename_columns(
                ["retries" if c == "retry_count" else c for c in columns]
            )
        write(table, fmt, widths={"last_failure": FAILURE_WIDTH})
        if total > table.num_rows:
            typer.echo(
                f"({total - table.num_rows} more not shown: --limit {total} or --all shows them)",
                err=True,
            )


@app.command(cls=RaystateCommand)
def describe(
    invocation_id: Annotated[str, typer.Argument(metavar="ID", help="An invocation id.")],
    fmt: FormatOpt = Format.table,
    address: AddressOpt = None,
    namespace: NamespaceOpt = "raystate",
    db: DbOpt = None,
) -> None:
    """Show one invocation, then its journal entries in order (at_ms: milliseconds after the
    invocation was accepted; a sleep's result: when it is due)."""
    inv = sql_literal(invocation_id)
    with _errors(), open_source(db, address, namespace) as source:
        row = source.sql(f"SELECT * FROM sys_invocation WHERE id = {inv}")
        if row.num_rows == 0:
            raise NotFound(f"unknown invocation {invocation_id!r}")
        entries = source.sql(
            "SELECT \"index\", date_diff('millisecond', i.created_at, j.created_at) AS at_ms,"
            " j.entry_type, j.name, j.completed, j.result, j.created_at"
            f" FROM sys_journal j, (SELECT created_at FROM sys_invocation WHERE id = {inv}) i"
            f' WHERE j.invocation_id = {inv} ORDER BY "index"'
        )
        write_description(row, sleeps_as_times(entries), Format(fmt))


@app.command(cls=RaystateCommand)
def state(
    service: Annotated[str, typer.Argument(help="Virtual object (or workflow) name.")],
    key: Annotated[str, typer.Argument(help="Its key.")],
    fmt: FormatOpt = Format.table,
    address: AddressOpt = None,
    namespace: NamespaceOpt = "raystate",
    db: DbOpt = None,
) -> None:
    """Show the committed state of one object key (an unknown service, or a key without
    state, is an error: exit code 1)."""
    with _errors(), open_source(db, address, namespace) as source:
        table = source.sql(
            f"SELECT key, value FROM state WHERE service_name = {sql_literal(service)}"
            f" AND service_key = {sql_literal(key)} ORDER BY key"
        )
        if table.num_rows == 0:
            raise NotFound(_no_state(source, service, key))
        write(table, fmt)


def _no_state(source: Source, service: str, key: str) -> str:
    """Why ``state`` found nothing: the service is unknown, or this key has no state."""
    known = (
        source.sql(
            "SELECT DISTINCT target_service_name AS name FROM sys_invocation"
            " UNION SELECT DISTINCT service_name FROM state ORDER BY name"
        )
        .column(0)
        .to_pylist()
    )
    if service not in known:
        return (
            f"unknown service {service!r} (services with invocations or state: "
            f"{', '.join(known) or 'none'})"
        )
    return f"{service} has no state for key {key!r}"


# -- acting on invocations (live runtime only) -----------------------------------------------


@contextlib.contextmanager
def _live(address: str | None, namespace: str, db: Path | None) -> Iterator[Any]:
    if db is not None:  # a stopped runtime's journal can be read, not acted on
        raise Unreachable(
            "this command acts on a running runtime; reach it with --namespace (and --address),"
            " or start the runtime on the data dir first: Runtime.start(..., data_dir=...)"
        )
    with attach_ray(address, namespace):
        runtime: Any = connect(address, namespace)
        try:
            yield runtime
        finally:
            runtime.close()


@app.command(cls=RaystateCommand)
def cancel(
    invocation_id: Annotated[str, typer.Argument(metavar="ID", help="An invocation id.")],
    address: AddressOpt = None,
    namespace: NamespaceOpt = "raystate",
    db: LiveDbOpt = None,
) -> None:
    """Cancel an invocation: its handler gets TerminalError("cancelled") at its next await and
    can compensate; the call it waits for is cancelled too."""
    with _errors(), _live(address, namespace, db) as rt:
        typer.echo(f"{invocation_id}: {rt.cancel(invocation_id)}")


@app.command(cls=RaystateCommand)
def kill(
    invocation_id: Annotated[str, typer.Argument(metavar="ID", help="An invocation id.")],
    address: AddressOpt = None,
    namespace: NamespaceOpt = "raystate",
    db: LiveDbOpt = None,
) -> None:
    """Stop an invocation at once, without compensation, and free its key."""
    with _errors(), _live(address, namespace, db) as rt:
        typer.echo(f"{invocation_id}: {rt.kill(invocation_id)}")


@app.command(cls=RaystateCommand)
def resolve(
    awakeable_id: Annotated[str, typer.Argument(metavar="AWAKEABLE_ID")],
    value: Annotated[str, typer.Argument(metavar="JSON", help="The value, as JSON.")] = "null",
    address: AddressOpt = None,
    namespace: NamespaceOpt = "raystate",
    db: LiveDbOpt = None,
) -> None:
    """Resolve an awakeable with a JSON value (the waiting handler resumes)."""
    try:
        decoded = json.loads(value)
    except json.JSONDecodeError as e:
        _fail(f"the value is not JSON ({e.msg}); quote strings: '\"yes\"'", 1)
    with _errors(), _live(address, namespace, db) as rt:
        rt.resolve_awakeable(awakeable_id, decoded)
        typer.echo(f"{awakeable_id}: resolved")


@app.command(cls=RaystateCommand)
def reject(
    awakeable_id: Annotated[str, typer.Argument(metavar="AWAKEABLE_ID")],
    reason: Annotated[str, typer.Argument(help="Raised as TerminalError in the handler.")],
    address: AddressOpt = None,
    namespace: NamespaceOpt = "raystate",
    db: LiveDbOpt = None,
) -> None:
    """Reject an awakeable (the waiting handler gets TerminalError(REASON))."""
    with _errors(), _live(address, namespace, db) as rt:
        rt.reject_awakeable(awakeable_id, reason)
        typer.echo(f"{awakeable_id}: rejected")


# -- schedules ---------------------------------------------------------------------------------

SCHEDULE_COLUMNS = (
    "id, target, spec, timezone, overlap, paused, next_fire_at, last_fire_at, last_invocation_id"
)
ScheduleIdArg = Annotated[str, typer.Argument(metavar="ID", help="A schedule id.")]
schedule_app = typer.Typer(
    name="schedule",
    help="Pause, resume or delete a schedule of a running runtime.",
    no_args_is_help=True,
    cls=RaystateGroup,
)
app.add_typer(schedule_app)


@app.command(cls=RaystateCommand)
def partitions(
    fmt: FormatOpt = Format.table,
    address: AddressOpt = None,
    namespace: NamespaceOpt = "raystate",
    db: DbOpt = None,
) -> None:
    """List the journal partitions: where each one's journal runs (node, process, a spread
    one's epoch), its directory, and how many invocations it holds, unfinished too."""
    with _errors(), open_source(db, address, namespace) as source:
        table = source.partitions()
        if Format(fmt) is Format.table:  # the node's address says enough (json: its id too)
            table = table.drop_columns(["node_id"])
        write(table, fmt)


@app.command(cls=RaystateCommand)
def schedules(
    fmt: FormatOpt = Format.table,
    address: AddressOpt = None,
    namespace: NamespaceOpt = "raystate",
    db: DbOpt = None,
) -> None:
    """List schedules: what each runs, when it fires next, its last tick's invocation."""
    with _errors(), open_source(db, address, namespace) as source:
        write(source.sql(f"SELECT {SCHEDULE_COLUMNS} FROM sys_schedule ORDER BY id"), fmt)


def _schedule_command(what: str, doc: str) -> None:
    """``raystate schedule WHAT ID``: ``Runtime.<what>_schedule(ID)`` on the running runtime."""

    def command(
        schedule_id: ScheduleIdArg,
        address: AddressOpt = None,
        namespace: NamespaceOpt = "raystate",
        db: LiveDbOpt = None,
    ) -> None:
        with _errors(), _live(address, namespace, db) as rt:
            getattr(rt, f"{what}_schedule")(schedule_id)
            typer.echo(f"{schedule_id}: {what.rstrip('e')}ed")

    command.__doc__ = doc
    schedule_app.command(what, cls=RaystateCommand)(command)


_schedule_command("pause", "Stop a schedule's ticks (a tick already started goes on).")
_schedule_command(
    "resume", "Start a paused schedule again, from its next tick (the paused ones do not run)."
)
_schedule_command("delete", "Delete a schedule (a tick already started completes).")


if __name__ == "__main__":
    app()

"""The ``raystate`` commands for schedules (registered by ``actors.client.cli``):

    raystate schedules [--format json] [--db DATA_DIR]
    raystate schedule pause|resume|delete ID

``schedules`` reads ``sys_schedule`` (live, or a stopped runtime's file with ``--db``); the
``schedule`` commands act on the running runtime, like ``cancel``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from actors.client.cli import (
    AddressOpt,
    DbOpt,
    FormatOpt,
    LiveDbOpt,
    NamespaceOpt,
    _errors,
    _live,
    app,
)
from actors.client.clihelp import RaystateCommand, RaystateGroup
from actors.client.sources import open_source
from actors.client.tables import Format, write

SCHEDULE_COLUMNS = (
    "id, target, spec, timezone, overlap, paused, next_fire_at, last_fire_at, last_invocation_id"
)
IdArg = Annotated[str, typer.Argument(metavar="ID", help="A schedule id.")]

schedule_app = typer.Typer(
    name="schedule",
    help="Pause, resume or delete a schedule of a running runtime.",
    no_args_is_help=True,
    cls=RaystateGroup,
)
app.add_typer(schedule_app)


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


def _act(schedule_id: str, what: str, address: str | None, namespace: str, db: object) -> None:
    with _errors(), _live(address, namespace, db) as rt:  # type: ignore[arg-type]
        getattr(rt, f"{what}_schedule")(schedule_id)
        typer.echo(f"{schedule_id}: {what}d")


@schedule_app.command(cls=RaystateCommand)
def pause(
    schedule_id: IdArg,
    address: AddressOpt = None,
    namespace: NamespaceOpt = "raystate",
    db: LiveDbOpt = None,
) -> None:
    """Stop a schedule's ticks (a tick already started goes on)."""
    _act(schedule_id, "pause", address, namespace, db)


@schedule_app.command(cls=RaystateCommand)
def resume(
    schedule_id: IdArg,
    address: AddressOpt = None,
    namespace: NamespaceOpt = "raystate",
    db: LiveDbOpt = None,
) -> None:
    """Start a paused schedule again, from its next tick (the paused ones do not run)."""
    _act(schedule_id, "resume", address, namespace, db)


@schedule_app.command(cls=RaystateCommand)
def delete(
    schedule_id: IdArg,
    address: AddressOpt = None,
    namespace: NamespaceOpt = "raystate",
    db: LiveDbOpt = None,
) -> None:
    """Delete a schedule (a tick already started completes)."""
    _act(schedule_id, "delete", address, namespace, db)

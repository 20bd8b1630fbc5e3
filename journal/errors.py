"""The one family of raystate's errors, and the status codes they carry.

Every error raystate raises on purpose derives from ``RaystateError`` (and keeps the standard
base it always had: ``SqlRefused`` is a ``ValueError``, ``DataDirError`` a ``RuntimeError``,
``WireClosed`` a ``ConnectionError`` ...), so ``except RaystateError`` catches them all and
``e.code`` says what kind of failure it is, HTTP-like as Restate's. This module imports neither
Ray nor DuckDB: ``import actors`` re-exports from here without loading the journal's engine.
What crosses Ray as data (an ``Outcome``'s ``failure_code``) stays a plain ``int``; the codes
below name the numbers.
"""

from __future__ import annotations

from enum import IntEnum


class StatusCode(IntEnum):
    """The HTTP-like codes of failures (``TerminalError.status_code``, journaled
    ``failure_code``); plain ints on the wire and in the journal."""

    BAD_REQUEST = 400  # the input (argument, id, key) is malformed
    NOT_FOUND = 404  # an unknown service, handler, invocation or awakeable
    REQUEST_TIMEOUT = 408  # a time limit ran out
    CONFLICT = 409  # completed before (an awakeable, a promise), or a wait that cannot end
    PAYLOAD_TOO_LARGE = 413  # a payload or result over its size limit
    TOO_MANY_REQUESTS = 429  # refused at once: too much is running; try again later
    CLIENT_CLOSED = 499  # the caller gave up (a cancelled query)
    INTERNAL = 500  # the default: a handler's or raystate's own failure
    UNAVAILABLE = 503  # not ready yet (the runtime's configuration not loaded)


class RaystateError(Exception):
    """The base of raystate's errors; ``code`` is a ``StatusCode`` (a class default that a
    subclass or an instance may set)."""

    code: int = StatusCode.INTERNAL


class DataDirError(RaystateError, RuntimeError):
    """The data dir cannot be used: not creatable or writable, or in use by another process."""


class DataDirInUse(DataDirError):
    """Another process holds the data dir's DuckDB file (a fenced journal waits for it to let
    go: ``journal.takeover``)."""


class SqlRefused(RaystateError, ValueError):
    """The SQL entry point accepts one read-only query; this was something else."""

    code = StatusCode.BAD_REQUEST


class SqlTimeout(SqlRefused):
    """A user query ran past its time limit and was interrupted."""

    code = StatusCode.REQUEST_TIMEOUT


class SqlResultTooLarge(SqlRefused):
    """A user query's result grew past the cap; nothing of it is returned."""

    code = StatusCode.PAYLOAD_TOO_LARGE


class SqlBusy(SqlRefused):
    """Too many user queries run or wait already; try again later."""

    code = StatusCode.TOO_MANY_REQUESTS


class SqlCancelled(SqlRefused):
    """The query was interrupted because its caller gave up."""

    code = StatusCode.CLIENT_CLOSED


class StaleHost(RaystateError, RuntimeError):
    """A host recovered its keys (or a partition's scheduler loaded its timers) from an older
    writer of a fenced journal directory (epoch ``held``) than the one serving it now
    (``current``). Its node may have been declared lost while it ran on, and a newer process
    may do the same work: its commits are refused, and it must start again (recover anew)
    rather than send them elsewhere."""

    code = StatusCode.CONFLICT

    def __init__(self, directory: str, held: int, current: int) -> None:
        super().__init__(directory, held, current)  # the args a pickled copy is rebuilt from
        self.directory = directory
        self.held = held
        self.current = current

    def __str__(self) -> str:
        return (
            f"journal {self.directory}: this process recovered from its writer of epoch "
            f"{self.held}, the writer now is of epoch {self.current}: it must start again"
        )


class Fenced(RaystateError, RuntimeError):
    """A newer writer took this journal directory's epoch (``journal.fence``): this writer
    acknowledges nothing more, and its successor serves the partition (try again there)."""

    code = StatusCode.UNAVAILABLE

    def __init__(self, directory: str, held: int, current: int | None) -> None:
        super().__init__(directory, held, current)  # the args a pickled copy is rebuilt from
        self.directory = directory
        self.held = held
        self.current = current

    def __str__(self) -> str:
        now = "no readable epoch" if self.current is None else f"epoch {self.current}"
        return (
            f"journal {self.directory} is fenced: this writer holds epoch {self.held}, "
            f"the directory's epoch file now holds {now} (a newer writer started)"
        )

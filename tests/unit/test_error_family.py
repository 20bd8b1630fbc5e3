"""One family: every error raystate raises on purpose is a ``RaystateError`` with a ``code``,
keeps its standard base, survives pickle with its attributes, and importing the SDK (which
re-exports them) does not load DuckDB."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest

import actors
from actors.client.waiting import InvocationTimeoutError
from actors.sdk.errors import AlreadyCompletedError, DefinitionError, JournalMismatch, TerminalError
from journal import errors, sqlguard, usersql
from journal.errors import (
    DataDirError,
    Fenced,
    RaystateError,
    SqlBusy,
    SqlCancelled,
    SqlRefused,
    SqlResultTooLarge,
    SqlTimeout,
    StatusCode,
)
from journal.transport.wire import Unsendable, WireClosed

FAMILY = [
    (TerminalError("boom", 402), Exception, 402),
    (AlreadyCompletedError("twice"), TerminalError, StatusCode.CONFLICT),
    (DefinitionError("S/h", ["must be async"]), TypeError, StatusCode.INTERNAL),
    (DataDirError("in use"), RuntimeError, StatusCode.INTERNAL),
    (Fenced("/data/partition-1", 3, 4), RuntimeError, StatusCode.UNAVAILABLE),
    (SqlRefused("not a read"), ValueError, StatusCode.BAD_REQUEST),
    (SqlTimeout("too long"), SqlRefused, StatusCode.REQUEST_TIMEOUT),
    (SqlResultTooLarge("too big"), SqlRefused, StatusCode.PAYLOAD_TOO_LARGE),
    (SqlBusy("busy"), SqlRefused, StatusCode.TOO_MANY_REQUESTS),
    (SqlCancelled("gave up"), SqlRefused, StatusCode.CLIENT_CLOSED),
    (WireClosed("lost"), ConnectionError, StatusCode.INTERNAL),
    (Unsendable("too big"), RuntimeError, StatusCode.INTERNAL),
    (
        InvocationTimeoutError("inv_1", 1.5, "running", 2, "boom"),
        TimeoutError,
        StatusCode.REQUEST_TIMEOUT,
    ),
]


@pytest.mark.parametrize(("error", "base", "code"), FAMILY, ids=lambda v: type(v).__name__)
def test_every_error_is_in_the_family_and_keeps_its_base(
    error: RaystateError, base: type[BaseException], code: int
) -> None:
    assert isinstance(error, RaystateError) and isinstance(error, base)
    assert error.code == code
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and str(copy) == str(error) and copy.code == code
    assert copy.__dict__ == error.__dict__


def test_the_codes_are_the_plain_numbers() -> None:
    assert StatusCode.BAD_REQUEST == 400 and StatusCode.NOT_FOUND == 404
    assert StatusCode.CONFLICT == 409 and StatusCode.PAYLOAD_TOO_LARGE == 413
    assert StatusCode.INTERNAL == 500


def test_terminal_error_code_is_its_status_code_and_a_plain_int() -> None:
    e = TerminalError("no such thing", StatusCode.NOT_FOUND)
    assert e.code == e.status_code == 404 and type(e.status_code) is int
    assert str(e) == "[404] no such thing"
    e.status_code = 410
    assert e.code == 410
    assert TerminalError("boom").status_code == 500


def test_journal_mismatch_stays_outside_exception() -> None:
    """It must escape a handler's ``except Exception``, so it cannot join the family base."""
    assert not isinstance(JournalMismatch("inv", 1, "a", "b"), Exception)


def test_old_homes_and_the_sdk_export_the_same_classes() -> None:
    assert sqlguard.SqlRefused is errors.SqlRefused
    assert usersql.SqlTimeout is errors.SqlTimeout and usersql.SqlBusy is errors.SqlBusy
    assert actors.SqlRefused is SqlRefused and actors.RaystateError is RaystateError
    assert actors.SqlCancelled is SqlCancelled and actors.StatusCode is StatusCode


def test_importing_the_sdk_does_not_load_duckdb() -> None:
    probe = "import sys, actors; print('duckdb' in sys.modules, 'ray' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]

"""Errors cross process boundaries (Ray pickles them): each survives pickle with its attributes.
And the retry policy's arithmetic and validation."""

from __future__ import annotations

import pickle
from datetime import timedelta

import pytest

from actors.sdk.errors import DefinitionError, JournalMismatch, RetryPolicy, TerminalError
from journal.sqlguard import SqlRefused
from journal.store import DataDirError
from journal.transport.wire import Unsendable, WireClosed

ERRORS = [
    pytest.param(
        TerminalError("card declined", 402),
        {"message": "card declined", "status_code": 402},
        id="TerminalError",
    ),
    pytest.param(
        TerminalError("boom"), {"message": "boom", "status_code": 500}, id="TerminalError-default"
    ),
    pytest.param(
        JournalMismatch("inv_1", 3, "run('a')", "run('b')"),
        {"invocation_id": "inv_1", "index": 3, "journaled": "run('a')", "actual": "run('b')"},
        id="JournalMismatch",
    ),
    pytest.param(
        DefinitionError("handler Counter/add", ["must be async", "too many parameters"]),
        {"where": "handler Counter/add", "issues": ["must be async", "too many parameters"]},
        id="DefinitionError",
    ),
    pytest.param(SqlRefused("only read-only queries"), {}, id="SqlRefused"),
    pytest.param(DataDirError("data dir /x is in use by another process"), {}, id="DataDirError"),
    pytest.param(Unsendable("the result of 'sql' is too big"), {}, id="Unsendable"),
    pytest.param(WireClosed("connection lost"), {}, id="WireClosed"),
]


@pytest.mark.parametrize(("error", "attributes"), ERRORS)
def test_exception_survives_pickle(error: BaseException, attributes: dict[str, object]) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.args == error.args
    for name, value in attributes.items():
        assert getattr(copy, name) == value


def test_terminal_error_str_shows_status_code() -> None:
    assert str(TerminalError("not found", 404)) == "[404] not found"


def test_journal_mismatch_message_names_both_operations() -> None:
    e = JournalMismatch("inv_9", 2, "run('a')", "sleep")
    assert "inv_9" in str(e) and "index 2" in str(e)
    assert "run('a')" in str(e) and "sleep" in str(e)
    assert not isinstance(e, Exception), "an `except Exception` must not swallow it"


def test_definition_error_lists_every_issue() -> None:
    e = DefinitionError("handler S/h", ["one", "two"])
    assert isinstance(e, TypeError)
    assert str(e) == "handler S/h: one; two"


# -- RetryPolicy --------------------------------------------------------------------------------


def test_delay_grows_by_factor_and_caps_at_max_interval() -> None:
    policy = RetryPolicy(
        initial_interval=timedelta(milliseconds=100), factor=3, max_interval=timedelta(seconds=2)
    )
    assert [policy.delay(n) for n in range(1, 6)] == pytest.approx([0.1, 0.3, 0.9, 2.0, 2.0])
    assert policy.delay(0) == pytest.approx(0.1)  # defensive: never below the first interval


def test_delay_accepts_seconds_as_numbers() -> None:
    policy = RetryPolicy(initial_interval=0.5, factor=2, max_interval=3)  # type: ignore[arg-type]
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == pytest.approx([0.5, 1.0, 2.0, 3.0])


def test_zero_interval_never_waits() -> None:
    policy = RetryPolicy(initial_interval=timedelta(0))
    assert policy.delay(1) == 0 and policy.delay(10) == 0


def test_exhausted() -> None:
    assert not RetryPolicy().exhausted(10**6), "no max_attempts retries forever"
    policy = RetryPolicy(max_attempts=3)
    assert [policy.exhausted(n) for n in (1, 2, 3, 4)] == [False, False, True, True]
    assert RetryPolicy(max_attempts=1).exhausted(1)


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"initial_interval": timedelta(seconds=-1)}, "initial_interval"),
        ({"factor": 0.5}, "factor"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": -2}, "max_attempts"),
    ],
)
def test_invalid_policy_raises_value_error(kwargs: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_invalid_policy_lists_every_problem() -> None:
    with pytest.raises(ValueError) as info:
        RetryPolicy(initial_interval=timedelta(seconds=-1), factor=0, max_attempts=0)
    message = str(info.value)
    assert "initial_interval" in message and "factor" in message and "max_attempts" in message


def test_negative_max_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="max_interval"):
        RetryPolicy(max_interval=timedelta(seconds=-1))

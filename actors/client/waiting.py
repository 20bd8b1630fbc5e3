"""Bounded waits of the client: ``timeout=`` on calls and results, and what a timeout says.

A wait that times out does not stop the invocation (it goes on, and is retried per its policy);
the ``InvocationTimeoutError`` names it and says where it stands, read from ``sys_invocation``
when the wait gave up, so a handler that keeps failing shows its last failure at the caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from journal.errors import RaystateError, StatusCode

T = TypeVar("T")
# How long the timed-out caller waits for the journal to say where the invocation stands.
STATUS_READ_S = 5.0
FAILURE_SHOWN = 500  # characters of the last failure put in the message


class InvocationTimeoutError(RaystateError, TimeoutError):
    """A ``timeout=`` ran out before the invocation finished. The invocation is not cancelled:
    ``rt.attach(e.invocation_id).result()`` waits again, ``rt.cancel`` stops it.

    Attributes: ``invocation_id``; ``status``, ``retry_count`` and ``last_failure`` as
    ``sys_invocation`` had them when the wait gave up (None where unknown).
    """

    code = StatusCode.REQUEST_TIMEOUT

    def __init__(
        self,
        invocation_id: str,
        timeout: float,
        status: str | None = None,
        retry_count: int | None = None,
        last_failure: str | None = None,
    ) -> None:
        self.invocation_id = invocation_id
        self.timeout = timeout
        self.status = status
        self.retry_count = retry_count
        self.last_failure = last_failure
        super().__init__(self._message())

    def _message(self) -> str:
        text = f"invocation {self.invocation_id} did not finish within {self.timeout:g} s"
        if self.status is None:
            return text + " (its status could not be read)"
        where = f"status {self.status}"
        if self.retry_count:
            where += f" after {self.retry_count} retr{'y' if self.retry_count == 1 else 'ies'}"
        failure = self.last_failure
        if failure:
            if len(failure) > FAILURE_SHOWN:
                failure = failure[:FAILURE_SHOWN] + "..."
            return f"{text} ({where}; last failure: {failure})"
        return f"{text} ({where}; no failure so far)"

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (
            type(self),
            (self.invocation_id, self.timeout, self.status, self.retry_count, self.last_failure),
        )


def status_query(invocation_id: str) -> str:
    quoted = "'" + invocation_id.replace("'", "''") + "'"
    return f"SELECT status, retry_count, last_failure FROM sys_invocation WHERE id = {quoted}"


async def timed_out(
    invocation_id: str, timeout: float, sql: Callable[[str], Awaitable[Any]]
) -> InvocationTimeoutError:
    """The error for a wait on ``invocation_id`` that gave up, with its status from ``sql``
    (``Runtime.sql_async``); without it if the journal does not answer in time."""
    try:
        async with asyncio.timeout(STATUS_READ_S):
            rows = (await sql(status_query(invocation_id))).to_pylist()
    except Exception:  # the journal is down or busy: the id alone still helps
        return InvocationTimeoutError(invocation_id, timeout)
    if not rows:
        return InvocationTimeoutError(invocation_id, timeout, "not accepted yet")
    row = rows[0]
    return InvocationTimeoutError(
        invocation_id, timeout, row["status"], row["retry_count"], row["last_failure"]
    )


async def within(
    timeout: float | None,
    invocation_id: str,
    wait: Awaitable[T],
    sql: Callable[[str], Awaitable[Any]],
) -> T:
    """``await wait``, giving up after ``timeout`` seconds (None: no limit) with an
    ``InvocationTimeoutError`` for ``invocation_id``."""
    if timeout is None:
        return await wait
    if timeout < 0:
        if asyncio.iscoroutine(wait):
            wait.close()
        raise ValueError(f"timeout must not be negative, got {timeout!r}")
    limit = asyncio.timeout(timeout)
    try:
        async with limit:
            return await wait
    except TimeoutError:
        if not limit.expired():
            raise  # a TimeoutError of the wait itself
    raise await timed_out(invocation_id, timeout, sql)

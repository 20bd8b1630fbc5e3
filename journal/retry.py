"""One way to try an operation again: exponential back-off, a deadline or an attempt limit,
and a hook per failure (to log it, mark a batch as re-sent, forget a dead handle).

``retry`` (async) and ``retry_sync`` call ``fn`` until it returns; a failure that is not a
``retry_on`` (or that ``when`` rejects) propagates at once, and so does the last one once the
deadline or the attempt limit is reached. Sleep and clock are parameters, so tests run
without waiting. (The retry policy of invocations, ``actors.RetryPolicy``, is durable and
journaled; this is for the runtime's own calls between its processes.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
Errors = type[BaseException] | tuple[type[BaseException], ...]


@dataclass(frozen=True)
class Backoff:
    """Waits between attempts: ``initial`` seconds, times ``factor`` after each failure, at
    most ``max_interval`` (``factor`` 1: a fixed interval)."""

    initial: float = 0.05
    factor: float = 2.0
    max_interval: float = 1.0

    def delays(self) -> Iterator[float]:
        """The waits after the first, second, ... failure (endless)."""
        delay = self.initial
        while True:
            yield min(delay, self.max_interval)
            delay = min(delay * self.factor, self.max_interval)


class _Attempts:
    """Decides, after a failure, whether to go on and how long to wait first."""

    def __init__(
        self,
        retry_on: Errors,
        when: Callable[[BaseException], bool] | None,
        backoff: Backoff,
        deadline_s: float | None,
        max_attempts: int | None,
        on_retry: Callable[[BaseException], None] | None,
        clock: Callable[[], float],
    ) -> None:
        self.retry_on = retry_on
        self.when = when
        self.on_retry = on_retry
        self.delays = backoff.delays()
        self.clock = clock
        self.deadline = None if deadline_s is None else clock() + deadline_s
        self.left = max_attempts

    def after(self, error: BaseException) -> float | None:
        """The wait before the next attempt, or None: give up (re-raise ``error``)."""
        if not isinstance(error, self.retry_on) or (self.when is not None and not self.when(error)):
            return None
        if self.left is not None:
            self.left -= 1
            if self.left <= 0:
                return None
        if self.deadline is not None and self.clock() > self.deadline:
            return None
        if self.on_retry is not None:
            self.on_retry(error)
        return next(self.delays)


async def retry(
    fn: Callable[[], Awaitable[T]],
    *,
    retry_on: Errors = Exception,
    when: Callable[[BaseException], bool] | None = None,
    backoff: Backoff = Backoff(),
    deadline_s: float | None = None,
    max_attempts: int | None = None,
    on_retry: Callable[[BaseException], None] | None = None,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """``await fn()`` until it returns. ``retry_on``: the failures worth another attempt
    (``when``: a further test of one); ``deadline_s``: seconds from now after which a failure
    is final; ``max_attempts``: attempts in all (None: no limit); ``on_retry(error)``: called
    inside the ``except`` (so ``log.exception`` shows the failure) before each wait."""
    attempts = _Attempts(retry_on, when, backoff, deadline_s, max_attempts, on_retry, clock)
    while True:
        try:
            return await fn()
        except BaseException as e:
            if (delay := attempts.after(e)) is None:
                raise
        await sleep(delay)


def retry_sync(
    fn: Callable[[], T],
    *,
    retry_on: Errors = Exception,
    when: Callable[[BaseException], bool] | None = None,
    backoff: Backoff = Backoff(),
    deadline_s: float | None = None,
    max_attempts: int | None = None,
    on_retry: Callable[[BaseException], None] | None = None,
    sleep: Callable[[float], object] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """``retry`` for a blocking ``fn`` (same parameters)."""
    attempts = _Attempts(retry_on, when, backoff, deadline_s, max_attempts, on_retry, clock)
    while True:
        try:
            return fn()
        except BaseException as e:
            if (delay := attempts.after(e)) is None:
                raise
        sleep(delay)

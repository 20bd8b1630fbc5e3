"""Errors users see, and the retry policy. Every class survives pickle with its attributes.

All but ``JournalMismatch`` derive from ``journal.errors.RaystateError`` (the family's base,
with a ``code``); ``JournalMismatch`` stays outside ``Exception`` on purpose."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from journal.errors import RaystateError, StatusCode


class TerminalError(RaystateError):
    """A failure that is never retried: journaled as the outcome and re-raised at the caller.

    Args:
        message: what went wrong, shown to the caller and in ``sys_invocation``.
        status_code: an HTTP-like code (400 bad input, 404 unknown target, 500 default).
    """

    def __init__(self, message: str, status_code: int = StatusCode.INTERNAL) -> None:
        super().__init__(message)
        self.message = message
        self.code = int(status_code)  # plain int: it is journaled and crosses Ray

    @property
    def status_code(self) -> int:
        """The family's ``code``, under the name Restate's SDK gives it."""
        return self.code

    @status_code.setter
    def status_code(self, value: int) -> None:
        self.code = int(value)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.message, self.status_code))

    def __str__(self) -> str:
        return f"[{self.status_code}] {self.message}"


class JournalMismatch(BaseException):
    """A replay issued a different operation than the journal holds at that index.

    The attempt fails (and is retried per policy, so a fixed deployment can continue). It derives
    from ``BaseException`` so that a handler's ``except Exception`` cannot swallow it.
    """

    def __init__(self, invocation_id: str, index: int, journaled: str, actual: str) -> None:
        super().__init__(
            f"journal mismatch in {invocation_id} at index {index}: "
            f"the journal holds {journaled}, the handler now did {actual}"
        )
        self.invocation_id = invocation_id
        self.index = index
        self.journaled = journaled
        self.actual = actual

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.invocation_id, self.index, self.journaled, self.actual))


class DefinitionError(RaystateError, TypeError):
    """A service definition or handler is malformed; lists every problem found at once."""

    def __init__(self, where: str, issues: list[str]) -> None:
        super().__init__(f"{where}: " + "; ".join(issues))
        self.where = where
        self.issues = issues

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.where, self.issues))


def _seconds(value: timedelta | float) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential back-off for failed invocations (and ``ctx.run`` steps that ask for it).

    Attributes:
        initial_interval: wait before the first retry.
        factor: each further wait is multiplied by this.
        max_interval: cap on a single wait.
        max_attempts: attempts in all (the first included) before failing with
            ``TerminalError``; ``None`` retries forever, as Restate does.
    """

    initial_interval: timedelta = timedelta(milliseconds=50)
    factor: float = 2.0
    max_interval: timedelta = timedelta(seconds=10)
    max_attempts: int | None = None

    def __post_init__(self) -> None:
        problems = []
        if _seconds(self.initial_interval) < 0:
            problems.append("initial_interval must not be negative")
        if _seconds(self.max_interval) < _seconds(self.initial_interval):
            problems.append("max_interval must be >= initial_interval")
        if self.factor < 1:
            problems.append("factor must be >= 1")
        if self.max_attempts is not None and self.max_attempts < 1:
            problems.append("max_attempts must be >= 1 or None")
        if problems:
            raise ValueError("RetryPolicy: " + "; ".join(problems))

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failure (1-based)."""
        raw = _seconds(self.initial_interval) * self.factor ** max(failures - 1, 0)
        return min(raw, _seconds(self.max_interval))

    def exhausted(self, failures: int) -> bool:
        return self.max_attempts is not None and failures >= self.max_attempts


class AlreadyCompletedError(TerminalError):
    """An awakeable or workflow promise was resolved or rejected before: the first one wins."""

    def __init__(self, message: str, status_code: int = StatusCode.CONFLICT) -> None:
        super().__init__(message, status_code)

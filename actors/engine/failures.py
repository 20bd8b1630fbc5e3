"""Failed attempts: what user code raised, kept for the host's log, ``sys_invocation`` and
``sys_journal_events``; and ``BaseException``s of user code carried as ordinary exceptions.

``SystemExit``, ``KeyboardInterrupt`` (``sys.exit()`` in an action's thread, say) or a bare
``BaseException`` subclass must fail the attempt like any exception: raised out of a task, the
first two stop the host's event loop and the third kills the key's task, which would hang every
key of the host (or that key) for good, across restarts.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import Any

from journal.records import AttemptFailed

log = logging.getLogger("raystate.host")

MAX_STACKTRACE = 16_384  # characters kept of a failure's traceback (its end: the raise site)


class UserBaseException(Exception):
    """A ``BaseException`` that is not an ``Exception``, raised by user code, carried as an
    ordinary exception: it fails the attempt (retried per policy) instead of the host."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(describe(original))
        self.original = original


def original(e: BaseException) -> BaseException:
    """What user code raised (unwrapping ``UserBaseException``)."""
    return e.original if isinstance(e, UserBaseException) else e


def describe(e: BaseException) -> str:
    """``"ValueError: bad input"``: the failure as ``sys_invocation.last_failure`` shows it."""
    e = original(e)
    return f"{type(e).__name__}: {e}"


def stacktrace(e: BaseException) -> str:
    """The full traceback of what user code raised, its end kept if it is very long."""
    text = "".join(traceback.format_exception(original(e)))
    if len(text) > MAX_STACKTRACE:
        text = "... (truncated)\n" + text[-MAX_STACKTRACE:]
    return text


def report(event: AttemptFailed, target: str, e: BaseException, retry_in_s: float | None) -> None:
    """Log a failed attempt once, with its traceback (Ray forwards a host's stderr to the
    driver's terminal)."""
    at = (
        ""
        if event.related_entry_index is None
        else (
            f" at journal entry {event.related_entry_index}"
            f" ({event.related_entry_type} {event.related_entry_name!r})"
        )
    )
    if retry_in_s is None:
        log.error(
            "invocation %s (%s) failed (attempt %d)%s: %s; no retry follows",
            event.invocation_id,
            target,
            event.retry_count,
            at,
            event.failure,
            exc_info=original(e),
        )
    else:
        log.warning(
            "invocation %s (%s) failed (attempt %d)%s: %s; retrying in %.2f s",
            event.invocation_id,
            target,
            event.retry_count,
            at,
            event.failure,
            retry_in_s,
            exc_info=original(e),
        )


class ReplayAwareLogger(logging.Logger):
    """``ctx.logger``: a logger of one invocation that drops records while it replays.

    Not registered with ``logging`` (one per invocation would pile up there): its parent is the
    handler's named logger, whose level and handlers it uses."""

    def __init__(self, name: str, invocation_id: str, replaying: Callable[[], bool]) -> None:
        super().__init__(name)
        self.parent = logging.getLogger(name)
        self.invocation_id = invocation_id
        self._replaying = replaying

    def isEnabledFor(self, level: int) -> bool:
        return not self._replaying() and self.parent is not None and self.parent.isEnabledFor(level)

    def getEffectiveLevel(self) -> int:
        return self.parent.getEffectiveLevel() if self.parent is not None else logging.WARNING

    def makeRecord(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = super().makeRecord(*args, **kwargs)
        record.invocation_id = self.invocation_id
        return record

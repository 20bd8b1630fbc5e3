"""An accepted invocation as its host holds it in memory, and the signals and indexes of the
replay engine that host and engine share."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from typing import Any

from actors.sdk.definitions import HandlerSpec
from actors.sdk.errors import TerminalError
from journal.clock import now_ms as now_ms  # re-exported: its old home
from journal.errors import StatusCode
from journal.records import Accept, Completion, Entry


@dataclass(eq=False)
class Invocation:
    """An accepted invocation as its host holds it in memory."""

    accept: Accept
    spec: HandlerSpec
    entries: list[Entry] = field(default_factory=list)
    retry_count: int = 0
    accept_durable: bool = False
    durable: asyncio.Future[None] = field(default_factory=asyncio.Future)
    # entries completed later (sleeps ...; negative indexes are retry timers) and their waiters
    completions: dict[int, Completion] = field(default_factory=dict)
    waiters: dict[int, asyncio.Future[None]] = field(default_factory=dict)
    awaiting: int | None = None  # the completion index it waits for, if it waits
    cancel_delivered: bool = False  # a requested cancellation was raised in the handler
    killed: bool = False
    task: asyncio.Future[Any] | None = None  # the running attempt(s), cancelled by a kill
    fresh: bool = False  # accepted by this host just now (not recovered, parked or replayed)
    attempts: int = 0  # attempts started in this host
    ahead: int = 0  # completions it was resumed with whose commit is still under way
    resumed_ahead: bool = False  # resumed so (``SyncActions.begin``), not yet running on

    @property
    def first_run(self) -> bool:
        """In its very first attempt: no earlier attempt can have delivered a send or call of
        it, so the callee's host need not ask the journal whether it saw the request before."""
        return self.fresh and self.attempts == 1

    @property
    def id(self) -> str:
        return self.accept.id

    @property
    def cancel_pending(self) -> bool:
        """A cancellation was requested and not yet raised in the handler."""
        return CANCEL_INDEX in self.completions and not self.cancel_delivered


class Suspended(BaseException):
    """The invocation waits for a completion and leaves memory; its host replays it from the
    journal when the completion arrives. A ``BaseException``, so ``except Exception`` in a
    handler cannot swallow it."""


CANCEL_INDEX = -(2**31) + 1  # the completion index of a cancellation request
CANCELLED = "cancelled"
CANCELLED_CODE = StatusCode.CONFLICT
KILLED = "killed"


def cancelled() -> TerminalError:
    return TerminalError(CANCELLED, CANCELLED_CODE)


def callee_id(caller_id: str, idx: int) -> str:
    """The invocation id of the call or send at journal index ``idx``: a replaying caller
    derives the same id, so the callee's host recognises the request and runs it once. (A
    workflow's main replaces it by its run id, itself derived from workflow and key.)"""
    return "inv_" + hashlib.sha256(f"{caller_id}:{idx}".encode()).hexdigest()[:32]


PROMISE_STATE = "$promise:"  # workflow promises are kept as state entries with this prefix


def retry_index(retry_count: int) -> int:
    """The completion index a retry back-off timer wakes (negative: never an entry's)."""
    return -retry_count

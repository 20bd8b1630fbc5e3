"""What a host keeps per key and per parked invocation."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from actors.engine.invocation import Invocation
from journal.kinds import InvocationStatus, TimerKind
from journal.records import Completion


@dataclass(slots=True)
class Parked:
    """An invocation out of memory: suspended on a wait, or scheduled for a delayed start."""

    id: str
    key: str | None
    reason: Literal[InvocationStatus.SUSPENDED, TimerKind.START]
    reloading: bool = False  # being reloaded from the journal to resume
    early: dict[int, Completion] = field(default_factory=dict)  # woken while reloading


class KeySlot:
    """One object key in memory: committed state, the FIFO inbox, who is using it."""

    __slots__ = (
        "committed",
        "inbox",
        "last_used",
        "loading",
        "promises",
        "uncommitted",
        "users",
        "watchers",
        "worker",
        "working",
    )

    def __init__(self) -> None:
        self.committed: dict[str, str] | None = None  # what shared handlers read
        self.working: dict[str, str] = {}  # committed + queued changes; exclusive handlers
        self.uncommitted = 0  # finished exclusive invocations whose output is not yet durable
        self.loading: asyncio.Future[dict[str, str]] | None = None
        self.inbox: deque[Invocation | Parked] = deque()
        self.worker: asyncio.Task[None] | None = None
        self.users = 0
        self.last_used = time.monotonic()
        # workflow promises: completed (or claimed) name -> completion JSON, and who waits
        self.promises: dict[str, str] = {}
        self.watchers: dict[str, list[tuple[str, int]]] = {}

    @property
    def idle(self) -> bool:
        return (
            not self.inbox
            and self.users == 0
            and self.uncommitted == 0
            and not self.watchers
            and (self.worker is None or self.worker.done())
        )

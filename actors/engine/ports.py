"""HostPort: what the replay engine needs from the host that runs an invocation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, Protocol

from actors.engine.awakeable_ids import AwakeableIds
from actors.engine.invocation import Invocation
from actors.sdk.serde import Serde
from journal.records import Completion, Record


class HostPort(Protocol):
    """What an invocation needs from its host."""

    def submit(self, invocation: Invocation, records: list[Record]) -> asyncio.Future[None]:
        """Queue records for commit (after everything queued before); the future resolves
        once they are durable."""
        ...

    def depends_on_uncommitted(self, invocation: Invocation) -> bool:
        """Whether state this invocation can read, or a completion it was resumed with, is
        not yet committed: then its next action waits for that commit."""
        ...

    def run_sync(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Awaitable[Any]:
        """Run a sync function given to ``ctx.run`` off the event loop (on a thread)."""
        ...

    @property
    def name(self) -> str:
        """The host's actor name: timers carry it, so the scheduler knows whom to wake."""
        ...

    async def await_completion(
        self, invocation: Invocation, idx: int, records: list[Record]
    ) -> Completion | None:
        """Make ``records`` durable, then wait for the completion of entry ``idx``; raise
        ``Suspended`` when that takes longer than the host keeps invocations in memory.
        None: the wait was interrupted by a cancellation request."""
        ...

    def send(
        self,
        target: Any,
        key: str | None,
        arg: Any,
        delay: timedelta | float | None,
        invocation_id: str,
        sender: Invocation,
    ) -> tuple[str, str, Callable[[], asyncio.Future[None]]]:
        """Validate a one-way request to another handler (``TerminalError`` on bad input);
        returns the target's name, the callee's invocation id and a function that starts
        delivering it (its future is done once the callee's invocation is durable). The id is
        ``invocation_id`` unless the target names its own (a workflow's main: its run id)."""
        ...

    def pass_on(self, callee: str, kill: bool) -> None:
        """Cancel (or kill) the callee of a call this invocation stops waiting for."""
        ...

    @property
    def awakeables(self) -> AwakeableIds:
        """Makes and checks awakeable ids (signed with the runtime's secret)."""
        ...

    def expect_awakeable(self, invocation: Invocation, idx: int, serde: Serde) -> None:
        """The invocation created an awakeable at ``idx``: resolutions are checked against
        ``serde`` while this host remembers it."""
        ...

    def complete_awakeable(
        self,
        invocation: Invocation,
        idx: int,
        awakeable_id: str,
        result: str | None,
        failure: str | None,
        after: asyncio.Future[None],
    ) -> asyncio.Future[None]:
        """Deliver the resolution journaled at entry ``idx`` of ``invocation`` once ``after``
        is done (the entry is durable); the verdict (delivered, or refused: 409, 404 ...)
        becomes the entry's completion. Done once that completion is durable; one delivery
        per entry at a time."""
        ...

    def promise_of(self, invocation: Invocation, name: str) -> str | None:
        """The completion JSON of the workflow promise ``name`` if completed (or claimed)."""
        ...

    def claim_promise(self, invocation: Invocation, name: str, data: str) -> bool:
        """Complete the workflow promise ``name`` in memory; False if it was completed before.
        The caller queues the durable write at once."""
        ...

    def watch_promise(self, invocation: Invocation, idx: int, name: str) -> None:
        """Complete entry ``idx`` of ``invocation`` when the promise ``name`` is completed."""
        ...

    def call(
        self, target: Any, key: str | None, arg: Any, invocation_id: str, caller: Invocation
    ) -> tuple[str, str, Serde, Callable[[int], None]]:
        """Validate a call to another handler (``TerminalError`` on bad input, or when it would
        wait for its own key); returns the target's name, the callee's invocation id (as for
        ``send``), its output serde and a function that starts the call for journal entry
        ``idx`` (once that entry is durable). The callee's outcome arrives as the entry's
        completion."""
        ...

"""JournalCursor: walks an invocation's recorded entries, then records new ones."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from actors.sdk.errors import JournalMismatch, TerminalError
from journal.clock import now_ms
from journal.kinds import EntryType
from journal.records import Entry, Record


class JournalCursor:
    """Walks recorded entries, then records new ones (pure: no I/O, unit-tested alone)."""

    def __init__(self, invocation_id: str, entries: list[Entry]) -> None:
        self.invocation_id = invocation_id
        self.entries = entries
        self.index = 0
        self.buffer: list[Record] = []
        self.unflushed_run = False
        # set once the attempt is leaving (suspended, killed): ``finally`` blocks and
        # ``except BaseException`` in handlers then get it again from every operation
        self.closed: type[BaseException] | None = None
        self.killed: Callable[[], bool] | None = None

    def _check_open(self) -> None:
        if self.closed is not None:
            raise self.closed
        if self.killed is not None and self.killed():
            self.closed = asyncio.CancelledError
            raise self.closed

    @property
    def replaying(self) -> bool:
        return self.index < len(self.entries)

    def replay_cancel(self) -> bool:
        """Consume a journaled cancellation at this position, if there is one."""
        if self.replaying and self.entries[self.index].entry_type == EntryType.CANCEL:
            self.index += 1
            return True
        return False

    def replay(self, entry_type: EntryType, name: str | None) -> Entry | None:
        """The recorded entry for this operation, or None once past the journal's end."""
        self._check_open()
        if self.index >= len(self.entries):
            return None
        entry = self.entries[self.index]
        if entry.entry_type != entry_type or entry.name != name:
            raise JournalMismatch(
                self.invocation_id,
                self.index,
                _describe(entry.entry_type, entry.name),
                _describe(entry_type, name),
            )
        self.index += 1
        return entry

    def record(
        self,
        entry_type: EntryType,
        name: str | None,
        *,
        result: str | None = None,
        failure: TerminalError | None = None,
        extra: tuple[Record, ...] = (),
        completed: bool = True,
    ) -> Entry:
        self._check_open()
        entry = Entry(
            self.invocation_id,
            self.index,
            entry_type,
            name,
            result,
            failure.message if failure else None,
            failure.status_code if failure else None,
            now_ms(),
            completed,
        )
        self.entries.append(entry)
        self.buffer.append(entry)
        self.buffer.extend(extra)
        self.index += 1
        self.unflushed_run |= entry_type == EntryType.RUN
        return entry

    def take(self) -> list[Record]:
        """Hand over the buffered records (the caller makes them durable)."""
        out, self.buffer = self.buffer, []
        self.unflushed_run = False
        return out


def _describe(entry_type: str, name: str | None) -> str:
    return f"{entry_type}({name!r})" if name is not None else entry_type

"""State reads journal a reference instead of a second copy of a value already in the journal.

A ``ctx.get`` must be journaled (a replay has to see the value the first run saw, even if the
handler changed the state after reading it), but when this invocation's journal already holds
the same value -- it set it itself (a ``set_state`` entry), or read it before (an earlier
``get_state`` entry) -- the read's entry holds ``{"$raystate_ref":<index>}`` instead: the index of
the entry with the value. A replay resolves it from the journal it is replaying.

What still copies: the first read of a value another invocation wrote (the state row lives
outside this invocation's journal, and may have changed by the time a replay needs it), a
``set_state`` entry beside its state row, and values of 64 characters or less (a reference
would save nothing and the journal reads better with the value in it).

A value whose own JSON starts like a reference (a dict with the key ``"$raystate_ref"``) is
journaled as ``{"$raystate_ref":null,"value":<json>}``, so the two never mix.
"""

from __future__ import annotations

from actors.sdk.errors import JournalMismatch
from journal.kinds import EntryType
from journal.records import Entry

REF_PREFIX = '{"$raystate_ref":'
ESCAPED_PREFIX = REF_PREFIX + 'null,"value":'
MIN_REF_CHARS = 64
HOLDERS = (EntryType.SET_STATE, EntryType.GET_STATE)


class StateReads:
    """For each state name, the journal entry of this invocation that holds its current value
    (kept per attempt: recording and replaying maintain it alike)."""

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held: dict[str, tuple[int, str]] = {}

    def wrote(self, name: str, idx: int, value: str | None) -> None:
        """Entry ``idx`` set ``name`` to ``value`` (None: cleared)."""
        if value is None:
            self._held.pop(name, None)
        else:
            self._held[name] = (idx, value)

    def cleared_all(self) -> None:
        self._held.clear()

    def journal(self, name: str, idx: int, value: str | None) -> str | None:
        """What the ``get_state`` entry at ``idx`` journals for a read of ``value``."""
        if value is None:
            return None
        held = self._held.get(name)
        if (
            held is not None
            and len(value) > MIN_REF_CHARS
            and (held[1] is value or held[1] == value)
        ):
            return f"{REF_PREFIX}{held[0]}}}"
        self._held[name] = (idx, value)
        return ESCAPED_PREFIX + value + "}" if value.startswith(REF_PREFIX) else value

    def resolve(self, entry: Entry, entries: list[Entry]) -> str | None:
        """The value a replayed ``get_state`` entry read."""
        assert entry.name is not None
        data = entry.result
        if data is None:
            return None
        idx = entry.idx
        if data.startswith(REF_PREFIX):
            if data.startswith(ESCAPED_PREFIX):
                data = data[len(ESCAPED_PREFIX) : -1]
            else:
                idx = _ref_index(data)
                target = entries[idx] if 0 <= idx < entry.idx else None
                if (
                    target is None
                    or target.entry_type not in HOLDERS
                    or target.name != entry.name
                    or target.result is None
                ):
                    raise JournalMismatch(
                        entry.invocation_id,
                        entry.idx,
                        f"get_state({entry.name!r}) -> entry {idx}",
                        f"a replay where entry {idx} is {_describe(target)}",
                    )
                data = target.result
                if target.entry_type == EntryType.GET_STATE and data.startswith(ESCAPED_PREFIX):
                    data = data[len(ESCAPED_PREFIX) : -1]
        self._held[entry.name] = (idx, data)
        return data


def _ref_index(data: str) -> int:
    digits = data[len(REF_PREFIX) : -1]
    return int(digits) if digits.isascii() and digits.isdigit() and data.endswith("}") else -1


def _describe(entry: Entry | None) -> str:
    return "nothing" if entry is None else f"{entry.entry_type}({entry.name!r})"

"""The enums of ``journal.kinds`` are the strings the journal stores: records written with
members read back through the views as the same plain strings (rows written before the enums
existed, and the views' SQL, compare equal), and the engine records no entry type the enum
lacks."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from journal.kinds import EntryType, InvocationStatus, InvokeMode, LogKind, TimerKind
from journal.records import (
    Accept,
    AttemptFailed,
    Batch,
    Completion,
    Entry,
    Output,
    StateWrite,
    StatusChange,
    Timer,
    TimerFired,
)
from journal.store import JournalStore

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000_000


@pytest.fixture
def store(data_dir: Path) -> Iterator[JournalStore]:
    s = JournalStore(data_dir)
    yield s
    s.close()


def test_members_are_their_stored_strings() -> None:
    assert [e.value for e in EntryType] == [
        "run",
        "sleep",
        "call",
        "send",
        "awakeable",
        "complete_awakeable",
        "get_state",
        "set_state",
        "clear_state",
        "clear_all_state",
        "get_state_keys",
        "promise",
        "peek_promise",
        "complete_promise",
        "time",
        "cancel",
    ]
    assert [k.value for k in LogKind] == [
        "accept",
        "entry",
        "completion",
        "status",
        "output",
        "state",
        "timer",
        "fired",
        "event",
        "wait",
        "admit",
        "batch",
        "mark",
    ]
    assert [s.value for s in InvocationStatus] == [
        "pending",
        "scheduled",
        "running",
        "suspended",
        "backing-off",
        "completed",
    ]
    assert [k.value for k in TimerKind] == ["sleep", "retry", "start"]
    assert [m.value for m in InvokeMode] == ["call", "send"]
    assert EntryType.RUN == "run" and f"{InvocationStatus.BACKING_OFF}" == "backing-off"
    assert EntryType("get_state") is EntryType.GET_STATE


def test_records_written_with_members_read_back_as_the_same_strings(store: JournalStore) -> None:
    inv = "inv_1"
    store.write(
        [
            Batch(
                "b1",
                [
                    Accept(inv, "Counter", "add", "k", 7, "1", created_at_ms=T0),
                    Entry(inv, 0, EntryType.RUN, "step", "1", created_at_ms=T0),
                    Entry(
                        inv,
                        1,
                        EntryType.SLEEP,
                        None,
                        str(T0 + 5),
                        created_at_ms=T0,
                        completed=False,
                    ),
                    Timer(f"{inv}:1", inv, 1, TimerKind.SLEEP, T0 + 5, "host"),
                    StateWrite("Counter", "k", "count", "1"),
                    StatusChange(inv, InvocationStatus.BACKING_OFF, 1, "E: boom", T0 + 1),
                    AttemptFailed(
                        inv, 1, "E: boom", "trace", 0, "step", EntryType.RUN, T0 + 50, T0 + 1
                    ),
                ],
            )
        ]
    )
    journal = store.sql("SELECT entry_type FROM sys_journal ORDER BY index").to_pylist()
    assert [r["entry_type"] for r in journal] == ["run", "sleep"]
    assert store.sql("SELECT status FROM sys_invocation").to_pylist() == [
        {"status": InvocationStatus.BACKING_OFF}
    ]
    assert store.sql("SELECT kind FROM sys_timer").to_pylist() == [{"kind": "sleep"}]
    store.write(
        [
            Batch(
                "b2",
                [
                    TimerFired(f"{inv}:1", inv, T0 + 5),
                    Completion(inv, 1, None, at_ms=T0 + 5),
                    Output(inv, True, "1", completed_at_ms=T0 + 6),
                ],
            )
        ]
    )
    assert store.sql("SELECT status FROM sys_invocation").to_pylist() == [
        {"status": InvocationStatus.COMPLETED}
    ]
    with store._reader() as cur:
        kinds = {row[0] for row in cur.execute("SELECT DISTINCT kind FROM log").fetchall()}
    assert kinds <= set(LogKind) and {"accept", "entry", "timer", "fired", "output"} <= kinds


def test_the_engine_records_only_known_entry_types() -> None:
    """Literal entry types still in the engine's source (until it uses the members) are
    values of ``EntryType``."""
    source = "\n".join(p.read_text() for p in (ROOT / "actors" / "engine").glob("*.py"))
    used = set(re.findall(r'\.(?:record|replay)\("([a-z_]+)"', source))
    assert used <= {e.value for e in EntryType}, used - {e.value for e in EntryType}

"""Journal retention without Ray: ``JournalStore.prune`` on a tmp_path data dir with an injected
clock, the retention setting's validation, and idempotency after pruning on a real host."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from actors.client.runtime import Runtime
from journal import retention
from journal.actor import GroupCommitJournal
from journal.clock import now_ms
from journal.records import (
    Accept,
    Batch,
    Completion,
    Entry,
    Outcome,
    Output,
    StateWrite,
    StatusChange,
    Timer,
    TimerFired,
)
from journal.store import JournalStore
from tests.unit.engine_apps import CALLS, World, request, svc

T0 = 1_700_000_000_000
MINUTE = 60_000


class Clock:
    def __init__(self) -> None:
        self.ms = T0

    def __call__(self) -> int:
        return self.ms


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(data_dir: Path, clock: Clock) -> Iterator[JournalStore]:
    s = JournalStore(data_dir, clock=clock)
    yield s
    s.close()


_batches = iter(range(1_000_000))


def write(store: JournalStore, *records: Any) -> None:
    store.write([Batch(f"b{next(_batches)}", list(records))])


def finished(
    inv_id: str, key: str = "alice", *, invoked_by: str | None = None, value: int = 1
) -> list[Any]:
    """A counter ``add`` from acceptance to output, with a state write, a retry, a sleep."""
    return [
        Accept(inv_id, "Obj", "add", key, 0, "1", invoked_by=invoked_by, created_at_ms=T0),
        Entry(inv_id, 0, "get_state", "count", None),
        Entry(inv_id, 1, "set_state", "count", str(value)),
        StateWrite("Obj", key, "count", str(value)),
        StatusChange(inv_id, "backing-off", 1, "E: flaky", T0),
        Entry(inv_id, 2, "sleep", None, None, completed=False),
        Timer(f"{inv_id}:2", inv_id, 2, "sleep", T0 + 10, "host:Obj:0"),
        TimerFired(f"{inv_id}:2", inv_id, T0 + 10),
        Completion(inv_id, 2, None, at_ms=T0 + 10),
        Output(inv_id, True, str(value), completed_at_ms=T0 + 11),
    ]


def ids(store: JournalStore, view: str = "sys_invocation", column: str = "id") -> set[str]:
    return {r[column] for r in store.sql(f"SELECT {column} FROM {view}").to_pylist()}


def rows_of(store: JournalStore, inv_id: str) -> int:
    return store.sql(f"SELECT count(*) AS n FROM log WHERE id = '{inv_id}'").to_pylist()[0]["n"]


# -- what goes and what stays -------------------------------------------------------------------


def test_old_finished_invocations_go_recent_and_unfinished_stay(
    store: JournalStore, clock: Clock
) -> None:
    write(
        store,
        *finished("inv_old"),
        Accept("inv_open", "Obj", "add", "bob", 0, "1"),
        Entry("inv_open", 0, "get_state", "count", None),
        Accept("inv_later", "Obj", "add", "carol", 0, "1"),  # a delayed send, not yet due
        StatusChange("inv_later", "scheduled", 0, None, T0),
        Timer("inv_later:start", "inv_later", -1, "start", T0 + 2 * MINUTE, "host:Obj:0"),
    )
    clock.ms += 10 * MINUTE
    write(store, *finished("inv_recent", "dave"))
    clock.ms += MINUTE

    stats = store.prune(retention_ms=5 * MINUTE)

    assert (stats.invocations, stats.checkpointed) == (1, True)
    assert ids(store) == {"inv_open", "inv_later", "inv_recent"}
    assert ids(store, "sys_journal", "invocation_id") == {"inv_open", "inv_recent"}
    assert ids(store, "sys_timer", "invocation_id") == {"inv_later", "inv_recent"}
    assert rows_of(store, "inv_old") == 0
    assert store.outcome("inv_old") is None and store.accepted("inv_old") is None
    assert store.outcome("inv_recent") == Outcome(True, "1")
    assert [p.accept.id for p in store.pending(["Obj"])] == ["inv_open", "inv_later"]
    assert [t.timer_id for t in store.pending_timers()] == ["inv_later:start"]
    # the state inv_old wrote is the object's state, and stays
    assert store.load_state("Obj", "alice") == {"count": "1"}
    assert store.sql("SELECT service_key, value FROM state ORDER BY 1").to_pylist() == [
        {"service_key": "alice", "value": "1"},
        {"service_key": "dave", "value": "1"},
    ]

    clock.ms += 5 * MINUTE  # now inv_recent is old too; the open ones still stay
    assert store.prune(retention_ms=5 * MINUTE).invocations == 1
    assert ids(store) == {"inv_open", "inv_later"}
    assert store.load_state("Obj", "dave") == {"count": "1"}


def test_nothing_to_prune(store: JournalStore, clock: Clock) -> None:
    empty = store.prune(retention_ms=MINUTE)
    assert (empty.invocations, empty.rows, empty.chunks, empty.checkpointed) == (0, 0, 0, False)
    write(store, *finished("inv_1"))
    clock.ms += 30_000
    stats = store.prune(retention_ms=MINUTE)
    assert (stats.invocations, stats.rows, stats.checkpointed) == (0, 0, False)
    assert ids(store) == {"inv_1"}


def test_superseded_state_versions_go_current_values_stay(
    store: JournalStore, clock: Clock
) -> None:
    write(
        store,
        StateWrite("Obj", "a", "x", "1"),
        StateWrite("Obj", "a", "y", '"why"'),
        StateWrite("Obj", "a", "z", "0"),
        StateWrite("Other", "a", "x", "100"),
    )
    write(store, StateWrite("Obj", "a", "x", "2"), StateWrite("Obj", "a", "x", "3"))
    write(store, StateWrite("Obj", "a", "y", None))  # cleared
    before = (
        store.load_state("Obj", "a"),
        store.load_state("Other", "a"),
        store.sql("SELECT * FROM state ORDER BY ALL").to_pylist(),
    )
    store.prune(retention_ms=MINUTE)
    assert store.sql("SELECT count(*) AS n FROM log WHERE kind = 'state'").to_pylist() == [
        {"n": 7}
    ], "versions superseded within the retention stay"

    clock.ms += 10 * MINUTE
    store.prune(retention_ms=MINUTE)

    assert (
        store.load_state("Obj", "a"),
        store.load_state("Other", "a"),
        store.sql("SELECT * FROM state ORDER BY ALL").to_pylist(),
    ) == before
    assert before[0] == {"x": "3", "z": "0"}
    kept = store.sql("SELECT id, name, data FROM log WHERE kind = 'state' ORDER BY ALL")
    assert kept.to_pylist() == [  # one row per live entry, the clear went with what it cleared
        {"id": "Obj/a", "name": "x", "data": "3"},
        {"id": "Obj/a", "name": "z", "data": "0"},
        {"id": "Other/a", "name": "x", "data": "100"},
    ]

    # set again after the prune: no ghosts
    write(store, StateWrite("Obj", "a", "y", "7"), StateWrite("Obj", "a", "x", "4"))
    clock.ms += 10 * MINUTE
    store.prune(retention_ms=MINUTE)
    assert store.load_state("Obj", "a") == {"x": "4", "y": "7", "z": "0"}
    assert store.sql("SELECT count(*) AS n FROM log WHERE kind = 'state'").to_pylist() == [{"n": 4}]


def test_compact_state_false_keeps_every_version(store: JournalStore, clock: Clock) -> None:
    write(store, StateWrite("Obj", "a", "x", "1"))
    write(store, StateWrite("Obj", "a", "x", "2"))
    clock.ms += 10 * MINUTE
    store.prune(retention_ms=MINUTE, compact_state=False)
    assert store.sql("SELECT count(*) AS n FROM log WHERE kind = 'state'").to_pylist() == [{"n": 2}]


def test_a_callee_stays_while_its_sender_is_unfinished(store: JournalStore, clock: Clock) -> None:
    write(
        store,
        Accept("inv_sender", "Obj", "go", "s", 0, "null"),
        Entry("inv_sender", 0, "send", "Obj/add", '"inv_callee"'),
        *finished("inv_callee", invoked_by="inv_sender"),
        *finished("inv_orphan_callee", "o", invoked_by="inv_pruned_long_ago"),
    )
    clock.ms += 10 * MINUTE
    assert store.prune(retention_ms=MINUTE).invocations == 1  # the sender's long gone
    assert ids(store) == {"inv_sender", "inv_callee"}

    write(store, Output("inv_sender", True, "null"))
    clock.ms += 10 * MINUTE
    assert store.prune(retention_ms=MINUTE).invocations == 2
    assert ids(store) == set()


def test_an_unfired_timer_holds_its_invocation(store: JournalStore, clock: Clock) -> None:
    records = finished("inv_1")
    records.insert(-1, Timer("inv_1:retry:9", "inv_1", 3, "retry", T0 + MINUTE, "host:Obj:0"))
    write(store, *records)
    clock.ms += 10 * MINUTE
    assert store.prune(retention_ms=MINUTE).invocations == 0
    write(store, TimerFired("inv_1:retry:9", "inv_1", clock.ms))
    clock.ms += 10 * MINUTE
    assert store.prune(retention_ms=MINUTE).invocations == 1
    assert rows_of(store, "inv_1") == 0, "the late firing went too"


def test_retention_counts_from_when_the_output_was_written(
    store: JournalStore, clock: Clock
) -> None:
    write(store, *finished("inv_1"))  # a mark ends this write
    clock.ms += 500
    write(store, *finished("inv_2", "b"))  # within the mark interval: no mark yet
    clock.ms += 10 * MINUTE
    assert store.prune(retention_ms=MINUTE).invocations == 1, "inv_2's time is the prune's mark"
    assert ids(store) == {"inv_2"}
    clock.ms += 30_000
    assert store.prune(retention_ms=MINUTE).invocations == 0
    clock.ms += 31_000
    assert store.prune(retention_ms=MINUTE).invocations == 1
    # retention is by the journal's clock, not the host's completed_at
    write(
        store,
        *finished("inv_3", "c")[:-1],
        Output("inv_3", True, "1", completed_at_ms=clock.ms - 100 * MINUTE),
    )
    assert store.prune(retention_ms=MINUTE).invocations == 0


def test_batch_ids_stay_an_hour_so_a_resent_batch_is_still_recognised(
    data_dir: Path, store: JournalStore, clock: Clock
) -> None:
    store.write([Batch("host-1:1", [StateWrite("Obj", "a", "x", "1")])])
    store.write([Batch("host-1:2", [StateWrite("Obj", "a", "x", "2")])])
    clock.ms += 10 * MINUTE
    store.prune(retention_ms=MINUTE)
    store.close()  # a journal restart forgets the recent batch ids it kept in memory

    again = JournalStore(data_dir, clock=clock)
    try:
        again.write([Batch("host-1:1", [StateWrite("Obj", "a", "x", "1")], resent=True)])
        assert again.load_state("Obj", "a") == {"x": "2"}, "the late copy was skipped"
        clock.ms += 61 * MINUTE  # an hour after the mark the first prune wrote
        again.prune(retention_ms=MINUTE)
        batches = again.sql("SELECT id FROM log WHERE kind = 'batch'").to_pylist()
        assert batches == [], "batch ids and marks older than an hour are pruned"
        marks = again.sql("SELECT id FROM log WHERE kind = 'mark' ORDER BY seq").to_pylist()
        assert [int(m["id"]) for m in marks] == [T0 + 10 * MINUTE, T0 + 71 * MINUTE], (
            "the newest mark before the cutoff stays, and the one this prune wrote"
        )
    finally:
        again.close()


def test_chunks_never_split_an_invocation(store: JournalStore, clock: Clock) -> None:
    for n in range(6):
        write(store, *finished(f"inv_{n}", f"k{n}"))
    store.mark()  # all six written by now (store.prune marks first; retention.prune does not)
    store.drain()  # and in DuckDB, where retention.prune looks (store.prune drains first)
    clock.ms += 10 * MINUTE
    cur = store._con.cursor()
    failing: Any = FailingCursor(cur, fail_at_delete=3)
    with pytest.raises(RuntimeError, match="killed"):  # as if the journal died mid-prune
        retention.prune(failing, clock.ms - MINUTE, clock.ms - MINUTE, chunk_rows=4, pause_s=0)
    counts = {f"inv_{n}": rows_of(store, f"inv_{n}") for n in range(6)}
    assert sorted(set(counts.values())) == [0, 9], counts  # each one whole, or gone whole
    assert 0 < list(counts.values()).count(0) < 6
    assert [p.accept.id for p in store.pending(["Obj"])] == [], "nothing to run again"
    assert store.prune(retention_ms=MINUTE, chunk_rows=4, pause_s=0).chunks > 1
    assert ids(store) == set()


class FailingCursor:
    """Forwards to a DuckDB cursor and raises at its ``fail_at_delete``-th DELETE."""

    def __init__(self, cur: Any, fail_at_delete: int) -> None:
        self.cur, self.left = cur, fail_at_delete

    def execute(self, sql: str, *args: Any) -> Any:
        if sql.startswith("DELETE"):
            self.left -= 1
            if self.left == 0:
                raise RuntimeError("killed")
        return self.cur.execute(sql, *args)


# -- idempotency after pruning, on a real host ---------------------------------------------------


def test_an_idempotency_key_runs_again_after_its_invocation_was_pruned(data_dir: Path) -> None:
    world = World(data_dir)
    req = request("Payments", "echo", arg=7, idempotency_key="k1")

    async def call() -> Outcome | None:  # each time a fresh host: nothing cached in memory
        return await world.host(svc).invoke(
            request("Payments", "echo", arg=7, inv_id=req.id, idempotency_key="k1")
        )

    async def body() -> list[Outcome | None]:
        first = await world.host(svc).invoke(req)
        within = await call()
        await asyncio.to_thread(world.store.prune, 0, now_ms() + 1_000)
        after = await call()
        return [first, within, after]

    assert world.run(body) == [Outcome(True, "7")] * 3
    assert CALLS["echo"] == 2, "once within the retention, once more after it"
    world.store.close()


# -- the setting ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "seconds"),
    [
        (timedelta(hours=24), 86_400.0),
        (timedelta(milliseconds=500), 0.5),
        (90, 90.0),
        (0.25, 0.25),
        (None, None),
    ],
)
def test_retention_setting(given: Any, seconds: float | None) -> None:
    assert retention.retention_seconds(given) == seconds


@pytest.mark.parametrize(
    ("given", "error"),
    [
        (0, ValueError),
        (-1, ValueError),
        (timedelta(0), ValueError),
        (float("nan"), ValueError),
        (float("inf"), ValueError),
        ("24h", TypeError),
        (True, TypeError),
    ],
)
def test_bad_retention_is_refused_before_anything_starts(given: Any, error: type) -> None:
    with pytest.raises(error, match="retention"):
        retention.retention_seconds(given)
    with pytest.raises(error, match="retention"):
        Runtime.start([], retention=given)  # refused before Ray is even initialised


def test_prune_period() -> None:
    assert retention.prune_period(86_400) == 60
    assert retention.prune_period(40) == 10
    assert retention.prune_period(1) == 2


def test_the_journal_prunes_with_the_configured_retention(data_dir: Path) -> None:
    clock = Clock()
    journal = GroupCommitJournal(str(data_dir), clock=clock)

    async def body() -> tuple[Any, ...]:
        await journal.commit(Batch("b1", finished("inv_1")))
        clock.ms += 2 * MINUTE
        journal.set_config({"retention_s": None})
        off = await journal.prune()
        journal.set_config({"retention_s": 60.0})
        on = await journal.prune()
        return off, on

    try:
        off, on = asyncio.run(body())
        assert off is None and on is not None and on.invocations == 1
        assert journal.info()["prunes"] == 1 and journal.retention_s() == 60.0
        journal.set_config({})  # a runtime config from before retention existed: the default
        assert journal.retention_s() == retention.DEFAULT_RETENTION.total_seconds()
    finally:
        journal.store.close()

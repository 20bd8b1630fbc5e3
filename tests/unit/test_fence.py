"""Fencing a journal directory (``journal.fence``): epochs, the write-ahead log's segments of
two writers, and a fenced ``GroupCommitJournal`` that a newer writer's start stops for good.
No Ray: the newer writer's start is ``Fence.acquire`` on the same directory, as
``GroupCommitJournal(..., fenced=True)`` does first."""

from __future__ import annotations

import asyncio
import os
import re
import stat
import threading
from pathlib import Path

import pytest

from journal import actor as journal_actor
from journal import fencing
from journal.actor import GroupCommitJournal, JournalActor
from journal.errors import DataDirError, Fenced, RaystateError
from journal.fence import EPOCH_FILE, Fence, stored_epoch
from journal.records import Accept, Batch, StateWrite
from journal.store import JournalStore
from journal.wal import WAL_DIR, WriteAheadLog, encode_frame


def run(coro: object) -> object:
    return asyncio.run(asyncio.wait_for(coro, 30))  # type: ignore[arg-type]


def rows(first: int, n: int) -> list[tuple]:
    return [(first + i, "entry", f"inv_{first + i}", None, "{}", None) for i in range(n)]


def segments(data_dir: Path) -> dict[str, int]:
    """The write-ahead log's segment files and their sizes."""
    return {p.name: p.stat().st_size for p in sorted((data_dir / WAL_DIR).glob("*.log"))}


def log_count(store: JournalStore, kind: str, id_: str) -> int:
    return store._con.execute(
        "SELECT count(*) FROM log WHERE kind = ? AND id = ?", [kind, id_]
    ).fetchall()[0][0]


def state_of(data_dir: Path, fenced: bool = False) -> dict[str, str]:
    """Object ``Obj/k``'s state, as the next writer to open ``data_dir`` finds it."""
    store = JournalStore(data_dir, fence=Fence.acquire(data_dir) if fenced else None)
    try:
        return store.load_state("Obj", "k")
    finally:
        store.close()


# -- Fence ---------------------------------------------------------------------------------


def test_acquire_takes_the_next_epoch_and_fences_every_earlier_holder(tmp_path: Path) -> None:
    directory = tmp_path / "partition-3"  # made if missing
    first = Fence.acquire(directory)
    assert first.epoch == 1 and stored_epoch(directory) == 1
    first.check()
    epoch_file = directory / EPOCH_FILE
    assert stat.S_IMODE(epoch_file.stat().st_mode) == 0o600
    second = Fence.acquire(directory)
    assert second.epoch == 2 and stored_epoch(directory) == 2
    second.check()
    with pytest.raises(Fenced) as refused:
        first.check()
    e = refused.value
    assert (e.directory, e.held, e.current) == (str(directory), 1, 2)
    assert str(directory) in str(e) and "epoch 1" in str(e) and "epoch 2" in str(e)
    assert isinstance(e, RaystateError) and e.code == 503
    assert sorted(p.name for p in directory.iterdir()) == [EPOCH_FILE]  # no temp file left


def test_two_starts_that_took_the_same_epoch_tell_each_other_apart(tmp_path: Path) -> None:
    """Both read N and wrote N + 1: only one file survives, the other holder is fenced."""
    held = Fence.acquire(tmp_path)
    (tmp_path / EPOCH_FILE).write_text(f"{held.epoch} 0123456789abcdef\n")  # the racer's
    with pytest.raises(Fenced) as refused:
        held.check()
    assert (refused.value.held, refused.value.current) == (held.epoch, held.epoch)


def test_a_write_that_fails_leaves_the_stored_epoch_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The epoch file is replaced, never written in place: a start that dies or fails midway
    leaves the old epoch (and its holder) as they were, and no temporary file."""
    held = Fence.acquire(tmp_path)

    def fail(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(DataDirError, match="No space left"):
        Fence.acquire(tmp_path)
    monkeypatch.undo()
    assert stored_epoch(tmp_path) == 1
    held.check()
    assert sorted(p.name for p in tmp_path.iterdir()) == [EPOCH_FILE]


def test_a_damaged_or_removed_epoch_file(tmp_path: Path) -> None:
    held = Fence.acquire(tmp_path)
    (tmp_path / EPOCH_FILE).unlink()
    with pytest.raises(Fenced) as refused:
        held.check()
    assert refused.value.current is None and "no readable epoch" in str(refused.value)
    (tmp_path / EPOCH_FILE).write_text("not an epoch\n")
    with pytest.raises(DataDirError, match="damaged"):
        Fence.acquire(tmp_path)


# -- the write-ahead log of two writers ------------------------------------------------------


def test_a_stale_writer_never_writes_into_the_newer_writers_log(tmp_path: Path) -> None:
    """Segment names carry the epoch and are made exclusively, and a segment made after the
    newer writer started gets no frame: the newer writer's log holds its own frames only."""
    old = Fence.acquire(tmp_path)
    stale = WriteAheadLog(tmp_path, fence=old)
    stale.append(rows(1, 2))  # acknowledged by the old writer
    assert list(segments(tmp_path)) == ["000000000001-1.log"]

    newer = WriteAheadLog(tmp_path, fence=Fence.acquire(tmp_path))
    assert list(newer.replay()) == rows(1, 2)  # its recovery sees what the old one acknowledged
    newer.reset()
    stale.append(rows(3, 1))  # into the segment the recovery deleted: gone with it
    newer.append(rows(3, 2))
    stale.segment_bytes = 1  # the stale writer's next frame needs a new segment
    with pytest.raises(Fenced):
        stale.append(rows(4, 1))
    assert segments(tmp_path) == {
        "000000000001-2.log": segments(tmp_path)["000000000001-2.log"],
        "000000000002-1.log": 0,  # made, checked, left empty
    }
    newer.close()
    assert list(WriteAheadLog(tmp_path).replay()) == rows(3, 2)


def test_a_fenced_store_moves_nothing_into_duckdb(data_dir: Path) -> None:
    store = JournalStore(data_dir, fence=Fence.acquire(data_dir))
    store.write([Batch("b1", [StateWrite("Obj", "k", "n", "1")])])
    before = store._max_seq()
    Fence.acquire(data_dir)
    with pytest.raises(Fenced):
        store.drain()
    assert store._max_seq() == before
    store.abandon()  # no drain, no segment deleted: the newer writer's recovery has it all
    assert state_of(data_dir, fenced=True) == {"n": "1"}


def test_closing_a_fenced_store_deletes_no_segment_of_the_newer_writer(data_dir: Path) -> None:
    store = JournalStore(data_dir, fence=Fence.acquire(data_dir))
    store.write([Batch("b1", [StateWrite("Obj", "k", "n", "1")])])
    newer = Fence.acquire(data_dir)
    theirs = data_dir / WAL_DIR / f"000000000007-{newer.epoch}.log"
    theirs.write_bytes(encode_frame(rows(100, 1)))
    with pytest.raises(Fenced):
        store.close()  # as Runtime.shutdown's would: no drain, no segment deleted
    assert theirs.exists()
    theirs.unlink()
    assert state_of(data_dir) == {"n": "1"}  # the DuckDB file was released


# -- a fenced GroupCommitJournal -------------------------------------------------------------


def test_a_fenced_journal_refuses_once_a_newer_writer_started(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The newer writer's start fences the old journal: its next group is durable in the log
    but not acknowledged, every later call fails at once, and the DuckDB file is released.
    The newer journal has every acknowledged record. The refused group's frame did reach the
    log before the check: its recovery replays it, as a commit whose reply was lost, and the
    batch id makes the host's re-sent copy (``resent=True``) harmless: written once."""
    monkeypatch.setattr(journal_actor, "DRAIN_DELAY_S", 3600.0)  # drains only when asked
    refused = Batch("b", [StateWrite("Obj", "k", "n", "3"), StateWrite("Obj", "k", "late", "y")])

    async def body() -> None:
        old = GroupCommitJournal(str(data_dir), fenced=True)
        assert old.info()["epoch"] == 1 and old.info()["fenced"] is False
        await old.commit(Batch("a1", [Accept("inv_1", "Obj", "h", "k", 0, "{}")]))
        await old.commit(Batch("a2", [StateWrite("Obj", "k", "n", "1")]))
        assert await old.flush() > 0  # a1 and a2 in DuckDB
        await old.commit(Batch("a3", [StateWrite("Obj", "k", "n", "2")]))  # in the log only
        newer = Fence.acquire(data_dir)  # a newer writer's start

        with pytest.raises(Fenced) as first:
            await old.commit(refused)
        assert (first.value.held, first.value.current) == (1, newer.epoch)
        wal = segments(data_dir)
        with pytest.raises(Fenced):
            await old.commit(Batch("c", [StateWrite("Obj", "k", "n", "4")]))
        assert segments(data_dir) == wal  # refused at once: no frame written
        with pytest.raises(Fenced):
            await old.load_states("Obj", ["k"])
        assert old.info()["fenced"] is True
        assert old._drainer is None or old._drainer.done()

        # The store was closed before the refusal: the DuckDB file is free for the next one.
        new = GroupCommitJournal(str(data_dir), fenced=True)
        try:
            assert new.info()["epoch"] == newer.epoch + 1
            states = await new.load_states("Obj", ["k"])
            assert states == {"k": {"n": "3", "late": "y"}}  # a1..a3, and the replayed frame
            assert await new.accepted("inv_1") is not None
            await new.commit(Batch(refused.batch_id, refused.records, resent=True))
            await new.commit(Batch("d", [StateWrite("Obj", "k", "n", "5")]))
            await new.flush()
            assert log_count(new.store, "batch", "b") == 1
            assert log_count(new.store, "batch", "c") == 0
            assert (await new.load_states("Obj", ["k"]))["k"]["n"] == "5"
        finally:
            new.store.close()

    run(body())


def test_a_drain_that_finds_the_journal_fenced_stops_it(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_actor, "DRAIN_DELAY_S", 0.0)

    entered, release = threading.Event(), threading.Event()

    async def body() -> None:
        j = GroupCommitJournal(str(data_dir), fenced=True)
        drain = j.store.drain

        def held_drain() -> int:  # the drainer, past its first check, waits for the fence
            entered.set()
            release.wait(10)
            return drain()

        j.store.drain = held_drain  # type: ignore[method-assign]
        await j.commit(Batch("a1", [StateWrite("Obj", "k", "n", "1")]))
        assert await asyncio.to_thread(entered.wait, 10)
        Fence.acquire(data_dir)
        release.set()
        while not j.info()["fenced"]:  # bounded by run()'s time limit
            await asyncio.sleep(0.01)
        with pytest.raises(Fenced):
            await j.commit(Batch("a2", [StateWrite("Obj", "k", "n", "2")]))

    run(body())
    assert state_of(data_dir) == {"n": "1"}  # released, and nothing acknowledged is lost


def test_an_idle_fenced_journal_learns_it_was_fenced_and_releases_its_files(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nobody calls the old journal any more: it still checks now and then, so the newer
    writer (which cannot open the DuckDB file while the old one holds it) gets it."""
    monkeypatch.setattr(fencing, "FENCE_WATCH_S", 0.01)

    async def body() -> None:
        j = GroupCommitJournal(str(data_dir), fenced=True)
        await j.commit(Batch("a1", [StateWrite("Obj", "k", "n", "1")]))
        Fence.acquire(data_dir)
        while j._abandoned is None:  # bounded by run()'s time limit
            await asyncio.sleep(0.01)
        await j._abandoned
        assert j.info()["fenced"] is True

    run(body())
    assert state_of(data_dir) == {"n": "1"}


def test_an_unfenced_journal_never_touches_an_epoch(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*args: object) -> None:
        raise AssertionError("an unfenced journal checked a fence")

    monkeypatch.setattr(Fence, "acquire", never)
    monkeypatch.setattr(Fence, "check", never)

    async def body() -> None:
        j = GroupCommitJournal(str(data_dir))
        assert j.info()["epoch"] is None
        await j.commit(Batch("a1", [StateWrite("Obj", "k", "n", "1")]))
        assert all(re.fullmatch(r"\d{12}\.log", name) for name in segments(data_dir))
        assert await j.load_states("Obj", ["k"]) == {"k": {"n": "1"}}
        j.store.close()

    run(body())
    assert not (data_dir / EPOCH_FILE).exists()


def test_each_start_of_a_fenced_journal_takes_the_next_epoch(data_dir: Path) -> None:
    async def start(expected: int, value: str) -> None:
        j = GroupCommitJournal(str(data_dir), fenced=True)
        assert j.info()["epoch"] == expected
        await j.commit(Batch(f"b{value}", [StateWrite("Obj", "k", value, value)]))
        assert list(segments(data_dir)) == [f"000000000001-{expected}.log"]
        j.store.close()

    run(start(1, "x"))
    run(start(2, "y"))
    assert state_of(data_dir) == {"x": "x", "y": "y"}


def test_a_fenced_start_replays_the_log_an_unfenced_journal_left(data_dir: Path) -> None:
    """A data dir used unfenced (one node), then spread: its old segments are replayed."""
    store = JournalStore(data_dir)
    store.write([Batch("b1", [StateWrite("Obj", "k", "n", "1")])])
    assert all(re.fullmatch(r"\d{12}\.log", name) for name in segments(data_dir))
    store.abandon()  # as a killed journal: no drain, the rows are in its log only
    assert state_of(data_dir, fenced=True) == {"n": "1"}


def test_a_fenced_actor_closes_its_socket() -> None:
    """So that callers on its node stop reaching it and go through Ray, to the newer one."""

    class Server:
        closed = False

        def close(self) -> None:
            self.closed = True

    actor = JournalActor.__new__(JournalActor)
    server = Server()
    actor._wire_server = server  # type: ignore[assignment]
    actor._on_fenced()
    assert server.closed

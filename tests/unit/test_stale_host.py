"""A host (or scheduler) that recovered from an older writer of a fenced journal is refused by
a newer one.

After a node loss, a host on the lost node may run on (its node cut off, or back) while Ray
started its successor elsewhere, which recovered from the partition's newer journal writer.
The old host's batches carry the epoch it recovered from (``Batch.epoch``), so the newer writer
refuses them (``StaleHost``) instead of taking a second run of the same invocation; the old host
fails what waits for them and ends itself (``Flusher.on_stale``). No Ray: the journal that a
name resolves to is switched by hand, as Ray's restart of the journal actor does."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from actors.host.object_host import ObjectHost
from journal.actor import GroupCommitJournal
from journal.clock import now_ms
from journal.errors import Fenced, StaleHost
from journal.fence import Fence
from journal.records import Batch, StateWrite, Timer
from scheduler.service import TimerScheduler
from tests.unit.engine_apps import counter, request


class Named:
    """The journal a name resolves to: the current writer, whichever that is."""

    def __init__(self, journal: GroupCommitJournal) -> None:
        self.current = journal

    def __getattr__(self, name: str) -> Any:
        return getattr(self.current, name)

    # bound once by a host (``Flusher``, ``StateLoader``): resolved at each call here
    async def commit(self, batch: Batch) -> None:
        await self.current.commit(batch)

    async def load_states(self, service: str, keys: list[str]) -> dict[str, dict[str, str]]:
        return await self.current.load_states(service, keys)

    async def state_key_filter(self, service: str) -> bytes:
        return await self.current.state_key_filter(service)


async def lose_the_node(named: Named, data_dir: Path) -> None:
    """The current writer's node is lost: a newer writer starts elsewhere (it takes the next
    epoch, and Ray starts the journal actor again, which takes one more), the old writer finds
    itself fenced at its next call and lets go of its files, and the name resolves anew."""
    Fence.acquire(data_dir)
    with pytest.raises(Fenced):
        await named.current.load_states("Obj", ["k"])
    named.current = GroupCommitJournal(str(data_dir), fenced=True)


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_a_newer_writer_refuses_a_batch_from_before_its_epoch(tmp_path: Path) -> None:
    async def body() -> None:
        old = GroupCommitJournal(str(tmp_path), fenced=True)
        assert await old.writer_epoch() == 1
        await old.commit(Batch("a", [StateWrite("Obj", "k", "n", "1")], epoch=1))
        old.store.abandon()  # its node is lost
        new = GroupCommitJournal(str(tmp_path), fenced=True)
        try:
            assert await new.writer_epoch() == 2
            with pytest.raises(StaleHost) as refused:
                await new.commit(Batch("b", [StateWrite("Obj", "k", "n", "2")], epoch=1))
            assert (refused.value.held, refused.value.current) == (1, 2)
            await new.commit(Batch("c", [StateWrite("Obj", "k", "m", "3")], epoch=2))
            await new.commit(Batch("d", [StateWrite("Obj", "k", "o", "4")]))  # not a host's
            assert await new.load_states("Obj", ["k"]) == {"k": {"n": "1", "m": "3", "o": "4"}}
        finally:
            new.store.close()

    run(body())


def test_an_unfenced_journal_has_no_epoch_and_takes_any_batch(tmp_path: Path) -> None:
    async def body() -> None:
        journal = GroupCommitJournal(str(tmp_path))
        try:
            assert await journal.writer_epoch() is None
            await journal.commit(Batch("a", [StateWrite("Obj", "k", "n", "1")], epoch=7))
            assert await journal.load_states("Obj", ["k"]) == {"k": {"n": "1"}}
        finally:
            journal.store.close()

    run(body())


def test_a_host_left_behind_by_a_newer_writer_is_refused_and_ends(tmp_path: Path) -> None:
    """The old host's next commit is refused: ``on_stale`` runs once (the actor's ends the
    process), and its later submissions fail at once; the host that recovered from the newer
    writer runs the key, and the journal holds its runs only."""

    async def body() -> None:
        named = Named(GroupCommitJournal(str(tmp_path), fenced=True))
        old_host = ObjectHost(counter, named, partition=(0, 1))  # type: ignore[arg-type]
        ended: list[StaleHost] = []
        old_host.flusher.on_stale = ended.append
        assert await old_host.invoke(request("Counter", "add", "k", 1)) is not None
        assert old_host.flusher.epoch == 1

        await lose_the_node(named, tmp_path)
        new_host = ObjectHost(counter, named, partition=(0, 1))  # type: ignore[arg-type]
        try:
            assert (await new_host.invoke(request("Counter", "add", "k", 10))).output == "11"
            assert new_host.flusher.epoch == 3

            # the old host, still running, gets a call: refused, it ends (here: is told to)
            call = asyncio.ensure_future(old_host.invoke(request("Counter", "add", "k", 100)))
            while not ended:
                await asyncio.sleep(0.01)
            call.cancel()
            assert len(ended) == 1 and (ended[0].held, ended[0].current) == (1, 3)
            assert old_host.flusher.submit([]).exception() is ended[0]

            assert (await new_host.invoke(request("Counter", "add", "k", 1000))).output == "1011"
            rows = named.current.store.sql(
                "SELECT count(*) AS n FROM sys_invocation WHERE target_service_key = 'k'"
            ).to_pylist()
            assert rows == [{"n": 3}]  # 1, 10 and 1000: not the old host's 100
        finally:  # the journal stays open, as in ``engine_apps.World``: closing races its drainer
            for host in (old_host, new_host):
                await host.close()

    run(body())


def test_a_scheduler_left_behind_by_a_newer_writer_fires_nothing_more(tmp_path: Path) -> None:
    """A scheduler loaded from the older writer: its next firing is refused, ``on_stale`` runs
    (the actor's ends the process), and the newer writer holds no firing of it."""

    async def body() -> None:
        named = Named(GroupCommitJournal(str(tmp_path), fenced=True))
        scheduler = TimerScheduler(named, lambda _host, _items: None)  # type: ignore[arg-type]
        ended: list[StaleHost] = []
        scheduler.on_stale = ended.append
        try:
            await scheduler.loaded.wait()
            assert scheduler.epoch == 1
            await scheduler.add([Timer("inv_a:1", "inv_a", 1, "sleep", now_ms(), "host")])
            while scheduler.fired < 1:
                await asyncio.sleep(0.01)

            await lose_the_node(named, tmp_path)
            await scheduler.add([Timer("inv_b:1", "inv_b", 1, "sleep", now_ms(), "host")])
            while not ended:
                await asyncio.sleep(0.01)
            assert (ended[0].held, ended[0].current) == (1, 3) and scheduler.fired == 1
            fired = named.current.store.sql(
                "SELECT name FROM log WHERE kind = 'fired' ORDER BY name"
            ).to_pylist()
            assert fired == [{"name": "inv_a:1"}]
        finally:
            scheduler.close()

    run(body())

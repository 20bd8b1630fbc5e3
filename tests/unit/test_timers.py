"""TimerQueue: ordering, never early, de-duplication by id (an injected clock, no sleeping)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from actors.host.object_host import ObjectHost
from journal.clock import now_ms
from journal.records import Completion, Entry, Outcome, Timer
from scheduler.service import TimerScheduler, Wake
from scheduler.timers import TimerQueue
from tests.unit.engine_apps import CALLS, World, accept_of, request, saga


class Clock:
    def __init__(self) -> None:
        self.now = 1_000

    def __call__(self) -> int:
        return self.now


def test_pops_only_due_timers_in_due_order() -> None:
    clock = Clock()
    q: TimerQueue[str] = TimerQueue(clock)
    q.add("c", 1_300, "c")
    q.add("a", 1_100, "a")
    q.add("b", 1_200, "b")
    assert q.pop_due() == []
    assert q.next_due_ms() == 1_100
    clock.now = 1_200
    assert q.pop_due() == ["a", "b"]
    clock.now = 1_299
    assert q.pop_due() == []
    clock.now = 5_000
    assert q.pop_due() == ["c"]
    assert len(q) == 0 and q.next_due_ms() is None


def test_same_id_is_kept_once() -> None:
    clock = Clock()
    q: TimerQueue[str] = TimerQueue(clock)
    assert q.add("t", 1_000, "first")
    assert not q.add("t", 900, "again")
    assert q.pop_due() == ["first"]
    assert q.pop_due() == []


def test_discard_and_limit() -> None:
    clock = Clock()
    q: TimerQueue[int] = TimerQueue(clock)
    for i in range(10):
        q.add(str(i), 1_000, i)
    q.discard("3")
    assert q.pop_due(limit=4) == [0, 1, 2, 4]
    assert q.pop_due() == [5, 6, 7, 8, 9]


# -- a timer the scheduler was never told about -------------------------------------------------


def test_a_timer_committed_but_never_handed_over_fires_once_its_host_starts(
    data_dir: Path,
) -> None:
    """A host died between committing a sleep's timer and handing it to the scheduler (found by
    the chaos suite: a sleeper stayed parked for good). The scheduler had loaded its timers
    before the commit; the host that takes over hands the timer over again."""
    CALLS.clear()
    world = World(data_dir)
    req = request("Saga", "book", "k", "trip")
    due = now_ms()
    sleep_timer = Timer(f"{req.id}:1", req.id, 1, "sleep", due, "host")

    async def body() -> Outcome:
        hosts: list[ObjectHost] = []
        wakes: list[asyncio.Future[None]] = []

        def notify(_name: str, items: list[Wake]) -> None:
            wakes.append(asyncio.ensure_future(hosts[0].wake(items)))

        scheduler = TimerScheduler(world.journal, notify)
        await scheduler.loaded.wait()
        world.prewrite(
            accept_of(req),
            Entry(req.id, 0, "run", "reserve", '"trip.reserve-done"'),
            Entry(req.id, 1, "sleep", None, str(due), completed=False),
            sleep_timer,
        )
        try:
            host = ObjectHost(saga, world.journal, partition=(0, 1), scheduler=scheduler)
            hosts.append(host)
            world.hosts.append(host)
            await host.start()
            return await world.journal.await_output(req.id)
        finally:
            scheduler.close()

    assert world.run(body) == Outcome(True, '"slept"')
    assert CALLS == {"trip.body": 1}, "the journaled step did not run again"
    assert scheduler_fired(world, sleep_timer.timer_id) == 1


def scheduler_fired(world: World, timer_id: str) -> int:
    [row] = world.sql(f"SELECT count(*) AS n FROM log WHERE kind = 'fired' AND name = '{timer_id}'")
    return int(row["n"])


class GatedReload:
    """The journal, except that reloading parked invocations waits for ``release``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.release = asyncio.Event()
        self.reloading = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def pending(
        self,
        services: list[str],
        partition: Any = None,
        key: Any = None,
        ids: list[str] | None = None,
    ) -> Any:
        if ids is not None:
            self.reloading.set()
            await self.release.wait()
        return await self.inner.pending(services, partition, key, ids)


def test_a_wake_during_a_reload_is_not_lost(data_dir: Path) -> None:
    """A parked sleeper is being reloaded (for another reason) when its timer fires: the reload
    read the journal before the firing, so the host must keep the completion for it."""
    CALLS.clear()
    world = World(data_dir)
    journal = GatedReload(world.journal)
    req = request("Saga", "book", "k", "trip", mode="send")

    async def body() -> Outcome:
        host = world.host(saga, journal)  # type: ignore[arg-type]
        host.suspend_after = 0  # every wait leaves memory
        await host.invoke(req)
        while host.stats()["parked"] != 1:
            await asyncio.sleep(0.01)
        await host.wake([(req.id, 99, None)])  # something else wakes it: a reload starts
        await journal.reloading.wait()
        sleep_done = Completion(req.id, 1, None, None, None, now_ms())
        await host.wake([(req.id, 1, sleep_done)])  # the timer fires meanwhile
        journal.release.set()
        return await world.journal.await_output(req.id)

    assert world.run(body) == Outcome(True, '"slept"')
    assert CALLS == {"trip.body": 2, "trip.reserve": 1}


def test_a_timer_handed_over_after_it_fired_is_not_fired_again(data_dir: Path) -> None:
    """A host that starts hands over the unfired timers it read; by the time they arrive the
    scheduler may have fired one. Fired once, then the later timer proves the queue moved on."""
    world = World(data_dir)
    first = Timer("inv_a:1", "inv_a", 1, "sleep", now_ms(), "host")

    async def body() -> None:
        scheduler = TimerScheduler(world.journal, lambda _name, _items: None)
        try:
            await scheduler.loaded.wait()
            await scheduler.add([first])
            while scheduler.fired < 1:
                await asyncio.sleep(0.01)
            later = Timer("inv_b:1", "inv_b", 1, "sleep", now_ms() + 20, "host")
            await scheduler.add([first, later])  # the stale hand-over, and a new timer
            while scheduler.fired < 2:
                await asyncio.sleep(0.01)
            assert scheduler.fired == 2
        finally:
            scheduler.close()

    world.run(body)
    assert scheduler_fired(world, first.timer_id) == 1

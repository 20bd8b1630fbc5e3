"""SyncActions (ctx.run's sync functions on threads) and the flusher's wait for them."""

from __future__ import annotations

import asyncio
import threading

from actors.host.actions import SyncActions
from actors.host.flusher import Flusher
from journal.records import Batch, Record, StatusChange


def record(n: int) -> Record:
    return StatusChange(f"inv{n}", "running", 0, None, n)


def test_settle_returns_at_once_when_no_action_runs() -> None:
    async def main() -> None:
        actions = SyncActions(settle_s=60.0)
        await asyncio.wait_for(actions.settle(), 5)

    asyncio.run(main())


def test_settle_waits_for_a_young_action_and_what_its_task_does_next() -> None:
    async def main() -> None:
        actions = SyncActions(settle_s=60.0)
        release = threading.Event()
        seen: list[str] = []

        async def step() -> None:
            await actions.run(release.wait)
            seen.append("next step queued")  # runs before settle's waiter wakes

        task = asyncio.create_task(step())
        await asyncio.sleep(0)  # the action starts
        settled = asyncio.create_task(actions.settle())
        await asyncio.sleep(0.05)
        assert not settled.done() and actions.running == 1
        release.set()
        await asyncio.wait_for(settled, 5)
        assert seen == ["next step queued"]
        await task

    asyncio.run(main())


def test_settle_does_not_wait_for_an_action_older_than_settle_s() -> None:
    async def main() -> None:
        actions = SyncActions(settle_s=0.01)
        release = threading.Event()
        task = asyncio.create_task(actions.run(release.wait))
        while actions.running == 0:
            await asyncio.sleep(0)
        await asyncio.wait_for(actions.settle(), 5)  # capped: returns while it runs
        assert actions.running == 1
        release.set()
        await task

    asyncio.run(main())


def test_flusher_batches_the_steps_of_actions_that_finish_while_it_settles() -> None:
    async def main() -> None:
        actions = SyncActions(settle_s=60.0)
        batches: list[list[Record]] = []

        async def commit(batch: Batch) -> None:
            batches.append(batch.records)

        flusher = Flusher(commit, lambda _: None, actions.settle)
        releases = [threading.Event() for _ in range(3)]

        async def invocation(n: int) -> None:
            await actions.run(releases[n].wait)
            await flusher.submit([record(n)])

        tasks = [asyncio.create_task(invocation(n)) for n in range(3)]
        while actions.running < 3:
            await asyncio.sleep(0)
        releases[0].set()  # its commit waits for the other two young actions
        await asyncio.sleep(0.05)
        assert batches == []
        releases[1].set()
        releases[2].set()
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        assert len(batches) == 1, "one commit for the three steps"
        assert sorted(batches[0], key=repr) == [record(0), record(1), record(2)]

    asyncio.run(main())

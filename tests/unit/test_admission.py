"""The limiter's service without Ray: a rate window read back from the journal before it
admits, admissions journaled before they are answered, and a restarted limiter that admits
nobody (not even on the fast path) until its grace is over."""

from __future__ import annotations

import asyncio

from journal.records import Admitted, Batch
from scheduler.admission import RESTARTING, AdmissionService
from scheduler.limiter import LimitSpec

RATE = LimitSpec("R", rate=2, per_ms=60_000)
CONC = LimitSpec("C", concurrency=1)


class FakeJournal:
    def __init__(self, admitted_at: list[int]) -> None:
        self.admitted_at = admitted_at
        self.batches: list[Batch] = []

    async def commit(self, batch: Batch) -> None:
        self.batches.append(batch)

    async def admissions(self, limit: str, since_ms: int) -> list[int]:
        return [t for t in self.admitted_at if t >= since_ms]


def test_a_rate_window_is_read_back_and_admissions_are_journaled():
    async def run() -> None:
        from journal.clock import now_ms

        journal = FakeJournal([now_ms() - 1_000])  # one admission a second ago
        service = AdmissionService(journal)
        answers = await service.exchange("h", "i1", [], [("a", 1, (RATE,)), ("b", 2, (RATE,))])
        assert answers[0] is None  # the window's second place
        assert answers[1] == "R: rate 2 per 60s"
        records = [r for b in journal.batches for r in b.records]
        assert [(r.invocation_id, r.limit) for r in records if isinstance(r, Admitted)] == [
            ("a", "R")
        ]

    asyncio.run(run())


def test_a_restarted_limiter_admits_nobody_during_its_grace():
    async def run() -> None:
        service = AdmissionService(FakeJournal([]), restarted=True)
        answers = await service.exchange("h", "i1", [], [("a", 1, (CONC,))])
        assert answers == [RESTARTING]
        assert service.limiter.is_waiting("a") and not service.limiter.is_held("a")
        # the host that holds C's slot tells it; the waiting one stays behind it
        service.limits_sync("h2", "j1", [("x", 0, (CONC,))])
        assert service.limiter.is_held("x") and service.limiter.is_waiting("a")

    asyncio.run(run())


def test_the_fast_path_admits_in_place_and_a_release_makes_room():
    async def run() -> None:
        service = AdmissionService(FakeJournal([]))
        assert await service.exchange("h", "i1", [], [("a", 1, (CONC,))]) == [None]
        assert await service.exchange("h", "i1", [], [("b", 2, (CONC,))]) == ["C: concurrency 1"]
        waiting = asyncio.ensure_future(service.admit("h", "i1", "b", 2, (CONC,), True))
        await asyncio.sleep(0)
        assert not waiting.done()
        assert await service.exchange("h", "i1", ["a"], []) == []
        assert await waiting is None and service.limiter.is_held("b")

    asyncio.run(run())

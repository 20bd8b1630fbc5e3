"""A host's side of the limits (``actors.host.admission.Admission``) against the limiter's
service in the same loop (no Ray): an invocation waiting for its first slot that is cancelled
stops waiting (``give_up``) and leaves no place behind, whether it already waits or is still
asking; one killed while it waits gives its place up too."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from actors.host.admission import Admission
from journal.records import Record, Waiting
from scheduler.admission import AdmissionService
from scheduler.limiter import LimitSpec
from tests.unit.test_admission import FakeJournal

ONE = LimitSpec("One", concurrency=1)
PATIENCE_S = 10.0  # a deadline for what must not hang, not a measurement


def inv(invocation_id: str, order: int) -> Any:
    return SimpleNamespace(
        id=invocation_id,
        spec=SimpleNamespace(limits=(ONE,)),
        accept=SimpleNamespace(host_order=order),
    )


class Port:
    """The limiter port over the service, as the scheduler actor serves it (all async)."""

    def __init__(self, service: AdmissionService) -> None:
        self.admit = service.admit
        self.exchange = service.exchange
        self.service = service

    async def limits_sync(self, *args: Any) -> None:
        self.service.limits_sync(*args)

    async def limits_hello(self, *args: Any) -> None:
        self.service.limits_hello(*args)


def host() -> tuple[Admission, AdmissionService, list[Record]]:
    service = AdmissionService(FakeJournal([]))
    records: list[Record] = []

    def record(_: Any, rs: list[Record]) -> asyncio.Future[None]:  # as ``submit``: a future
        records.extend(rs)
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    admission = Admission("h", Port(service), record)
    return admission, service, records


async def settle(service: AdmissionService, admission: Admission) -> None:
    """Until the host's pending releases reached the limiter."""
    while admission._releasing or admission._frees:
        await asyncio.sleep(0.005)


async def a_holds_b_waits() -> tuple[Admission, AdmissionService, list[Record], Any]:
    """``a`` holds the one slot; ``b`` (its ``enter`` task, returned) waits for it."""
    admission, service, records = host()
    await admission.hello()
    assert await admission.enter(inv("a", 1)) is True
    waiting = asyncio.ensure_future(admission.enter(inv("b", 2)))
    while not admission._waits:
        await asyncio.sleep(0.005)
    return admission, service, records, waiting


def test_a_cancelled_waiter_stops_waiting_and_keeps_no_place():
    async def run() -> None:
        admission, service, records, waiting = await a_holds_b_waits()
        admission.give_up("b")
        assert await asyncio.wait_for(waiting, PATIENCE_S) is False
        assert not admission.holds("b")
        assert [r.reason is None for r in records if isinstance(r, Waiting)] == [False, True]
        await settle(service, admission)
        assert not service.limiter.is_waiting("b")
        admission.leave(inv("a", 1))
        assert await asyncio.wait_for(admission.enter(inv("c", 3)), PATIENCE_S) is True
        admission.close()

    asyncio.run(run())


def test_a_waiter_cancelled_while_it_still_asks_does_not_wait():
    async def run() -> None:
        admission, service, _ = host()
        await admission.hello()
        assert await admission.enter(inv("a", 1)) is True
        asking = asyncio.ensure_future(admission.enter(inv("b", 2)))
        await asyncio.sleep(0)  # b has asked; its answer is not back yet
        assert "b" in admission._entering and not admission._waits
        admission.give_up("b")
        assert await asyncio.wait_for(asking, PATIENCE_S) is False
        await settle(service, admission)
        assert not service.limiter.is_waiting("b") and service.limiter.is_held("a")
        admission.close()

    asyncio.run(run())


def test_a_waiter_killed_gives_its_place_up():
    async def run() -> None:
        admission, service, _, waiting = await a_holds_b_waits()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await settle(service, admission)
        assert not service.limiter.is_waiting("b")
        admission.close()

    asyncio.run(run())

"""Ray handles the hosts use: the journal (see ``journal.transport.remote``) and the timer
scheduler."""

from __future__ import annotations

from journal.records import Timer
from journal.transport.remote import UNAVAILABLE, RemoteActor, RemoteJournal
from scheduler.actor import SCHEDULER_ACTOR
from scheduler.limiter import LimitSpec

__all__ = ["UNAVAILABLE", "RemoteJournal", "RemoteScheduler"]


class RemoteScheduler(RemoteActor):
    def __init__(self, namespace: str, name: str = SCHEDULER_ACTOR) -> None:
        super().__init__(name, namespace)

    async def add(self, timers: list[Timer]) -> None:
        await self.call("add", timers)

    async def admit(
        self,
        host: str,
        incarnation: str,
        invocation_id: str,
        order: int,
        limits: tuple[LimitSpec, ...],
        wait: bool,
    ) -> str | None:
        return await self.call("admit", host, incarnation, invocation_id, order, limits, wait)

    async def exchange(
        self,
        host: str,
        incarnation: str,
        frees: list[str],
        asks: list[tuple[str, int, tuple[LimitSpec, ...]]],
    ) -> list[str | None]:
        return await self.call("exchange", host, incarnation, frees, asks)

    async def limits_sync(
        self,
        host: str,
        incarnation: str,
        held: list[tuple[str, int, tuple[LimitSpec, ...]]],
        entering: list[str],
    ) -> None:
        await self.call("limits_sync", host, incarnation, held, entering)

    async def limits_hello(self, host: str, incarnation: str) -> None:
        await self.call("limits_hello", host, incarnation)

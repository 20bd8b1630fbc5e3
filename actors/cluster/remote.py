"""Ray handles the hosts use: the journal (see ``journal.transport.remote``) and the timer
scheduler."""

from __future__ import annotations

from journal.records import Timer
from journal.transport.remote import UNAVAILABLE, RemoteActor, RemoteJournal
from scheduler.actor import SCHEDULER_ACTOR

__all__ = ["UNAVAILABLE", "RemoteJournal", "RemoteScheduler"]


class RemoteScheduler(RemoteActor):
    def __init__(self, namespace: str) -> None:
        super().__init__(SCHEDULER_ACTOR, namespace)

    async def add(self, timers: list[Timer]) -> None:
        await self.call("add", timers)

"""The timer-scheduler actor: a ``TimerScheduler`` made a named, detached, restartable actor
that reaches the journal and the hosts through Ray."""

from __future__ import annotations

import asyncio
from typing import Any

import ray

from journal.remote import UNAVAILABLE, RemoteJournal
from journal.wire import WireServed
from scheduler.service import TimerScheduler, Wake

SCHEDULER_ACTOR = "scheduler"


class SchedulerActor(TimerScheduler, WireServed):
    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._hosts: dict[str, Any] = {}
        super().__init__(RemoteJournal(namespace), self._message)

    def _message(self, host: str, items: list[Wake]) -> None:
        try:
            handle = self._hosts.get(host) or ray.get_actor(host, namespace=self.namespace)
        except ValueError:  # no such host now: it resumes from the journal when it starts
            return
        self._hosts[host] = handle
        ref = handle.wake.remote(items)

        def done(fut: asyncio.Future[Any]) -> None:
            if not fut.cancelled() and isinstance(fut.exception(), UNAVAILABLE):
                self._hosts.pop(host, None)

        asyncio.wrap_future(ref.future()).add_done_callback(done)

"""The timer-scheduler actor: a ``TimerScheduler`` made a named, detached, restartable actor
that reaches the journal and the hosts through Ray."""

from __future__ import annotations

import asyncio
import contextlib
import warnings
from typing import Any

import ray

from journal.fencing import end_stale_process
from journal.partitions import JOURNAL_NAME, SCHEDULER_NAME
from journal.retry import retry
from journal.transport.gctune import tune_gc
from journal.transport.remote import UNAVAILABLE, RemoteJournal
from journal.transport.wire import WireClosed, WireRoute, WireServed
from scheduler.admission import AdmissionService
from scheduler.service import TimerScheduler, Wake

SCHEDULER_ACTOR = SCHEDULER_NAME  # with one partition; ``journal.partitions`` names the others
WAKE_PATIENCE_S = 120.0  # a host restarting takes about a second


class SchedulerActor(TimerScheduler, AdmissionService, WireServed):
    """Fires durable timers and admits invocations under their limits (``AdmissionService``)."""

    def __init__(self, namespace: str, journal_name: str = JOURNAL_NAME) -> None:
        """``journal_name``: the journal of this scheduler's partition (``journal.partitions``)."""
        tune_gc()
        self.namespace = namespace
        self._hosts: dict[str, Any] = {}
        self._routes: dict[str, WireRoute] = {}
        self._waking: set[asyncio.Future[None]] = set()
        journal = RemoteJournal(namespace, name=journal_name)
        TimerScheduler.__init__(self, journal, self._message)
        self.on_stale = end_stale_process  # refused by a newer journal writer: start again
        AdmissionService.__init__(self, journal, _restarted())

    def _message(self, host: str, items: list[Wake]) -> None:
        task = asyncio.ensure_future(self._wake(host, items))
        self._waking.add(task)
        task.add_done_callback(self._waking.discard)

    async def _wake(self, host: str, items: list[Wake]) -> None:
        """Tell a host its timers fired (over its socket on this node, else Ray), again while
        it restarts: a host that read the journal before these fired learns of them only
        here. A host that no longer exists finds them in the journal when it starts."""

        async def once() -> None:
            try:
                handle = self._hosts.get(host) or ray.get_actor(host, namespace=self.namespace)
            except ValueError:  # no such host now: it resumes from the journal when it starts
                return
            self._hosts[host] = handle
            wire = await self._routes.setdefault(host, WireRoute()).client(handle)
            if wire is not None:
                await wire.call("wake", items)
            else:
                await handle.wake.remote(items)

        with contextlib.suppress(*UNAVAILABLE, WireClosed):  # still down: it reads the journal
            await retry(
                once,
                retry_on=(*UNAVAILABLE, WireClosed),
                deadline_s=WAKE_PATIENCE_S,
                on_retry=lambda _: self._hosts.pop(host, None),
            )


def _restarted() -> bool:
    """Whether Ray restarted this actor (then the hosts may hold slots it does not know yet);
    True when that cannot be told."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return bool(ray.get_runtime_context().was_current_actor_reconstructed)
    except Exception:
        return True

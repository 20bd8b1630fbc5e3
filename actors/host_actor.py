"""HostActor: the thin Ray wrapper that makes an ``ObjectHost`` a named, restartable actor.

On (re)start it resumes its unfinished invocations from the journal straight away, so work goes
on after a crash even when no caller comes back to ask.
"""

from __future__ import annotations

import asyncio
import logging

import ray

from actors.definitions import ServiceDefinition
from actors.host import InvokeRequest, ObjectHost
from actors.remote import RemoteJournal
from journal.records import Outcome

log = logging.getLogger("raystate.host")


class HostActor:
    def __init__(
        self,
        definition: ServiceDefinition,
        namespace: str,
        partition: tuple[int, int] | None = None,
        key: str | None = None,
        idle_timeout_s: float = 300.0,
    ) -> None:
        self.host = ObjectHost(definition, RemoteJournal(namespace), partition=partition, key=key)
        self.idle_timeout_s = idle_timeout_s
        self._starter = asyncio.get_running_loop().create_task(self._start())
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _start(self) -> None:
        try:
            await self.host.start()
        except Exception:  # callers' invoke() retries start() and sees the error
            log.exception("recovery of %s failed", self.host.definition.name)

    async def _sweep(self) -> None:
        """Evict idle keys; a dedicated host with nothing to do exits for good."""
        period = max(min(self.idle_timeout_s / 2, 5.0), 0.05)
        while True:
            await asyncio.sleep(period)
            self.host.evict_idle(self.idle_timeout_s)
            if self.host.dedicated_key is not None and self.host.is_idle(self.idle_timeout_s):
                log.info("dedicated host for %s idle; exiting", self.host.dedicated_key)
                ray.kill(ray.get_runtime_context().current_actor, no_restart=True)
                return

    async def invoke(self, req: InvokeRequest) -> Outcome | None:
        return await self.host.invoke(req)

    async def ready(self) -> dict[str, int]:
        await self.host.start()
        return self.host.stats()

    def pid(self) -> int:
        import os

        return os.getpid()

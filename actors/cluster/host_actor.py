"""HostActor: the thin Ray wrapper that makes an ``ObjectHost`` a named, restartable actor.

On (re)start it resumes its unfinished invocations from the journal straight away, so work goes
on after a crash even when no caller comes back to ask.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import ray

from actors.cluster.names import Partitions, host_name
from actors.cluster.remote import RemoteJournal, RemoteScheduler
from actors.cluster.router import Router
from actors.engine.awakeable_ids import AwakeableIds
from actors.host.mailbox import Mailboxes, Result
from actors.host.object_host import ObjectHost
from actors.host.requests import InvokeRequest
from actors.host.watchdog import LoopWatchdog
from actors.sdk.definitions import ServiceDefinition
from actors.sdk.errors import TerminalError
from actors.steps.runner import StepsConfig
from journal import metrics
from journal.config import RuntimeConfig
from journal.errors import StatusCode
from journal.records import Completion, Outcome
from journal.transport.gctune import tune_gc
from journal.transport.wire import WireServed

log = logging.getLogger("raystate.host")


class LazyRouter:
    """The runtime's ``Router``, built from the journal's config on first use (hosts start
    before a driver may have published every definition)."""

    def __init__(self, journal: RemoteJournal) -> None:
        self._journal = journal
        self._router: Router | None = None
        self._config: RuntimeConfig | None = None

    async def refresh(self) -> None:
        self._config = RuntimeConfig.from_dict(await self._journal.call("config"))
        self._router = Router(self._journal.namespace, self._config, HostActor)

    @property
    def config(self) -> RuntimeConfig | None:
        return self._config

    @property
    def awakeables(self) -> AwakeableIds:
        assert self._router is not None
        return self._router.awakeables

    def request(self, *args: Any, **kwargs: Any) -> Any:
        if self._router is None:
            raise TerminalError(
                "the runtime's configuration is not loaded yet", StatusCode.UNAVAILABLE
            )
        return self._router.request(*args, **kwargs)

    async def submit(self, spec: Any, req: InvokeRequest) -> Outcome | None:
        assert self._router is not None
        return await self._router.submit(spec, req)

    async def cancel(self, invocation_id: str, kill: bool = False) -> str:
        assert self._router is not None
        return await self._router.cancel(invocation_id, kill)

    async def resolve_awakeable(
        self, awakeable_id: str, result: str | None, failure: str | None, by: str | None = None
    ) -> None:
        assert self._router is not None
        await self._router.resolve_awakeable(awakeable_id, result, failure, by)


class HostActor(WireServed):
    def __init__(
        self,
        definition: ServiceDefinition,
        namespace: str,
        partition: tuple[int, int] | None = None,
        key: str | None = None,
        idle_timeout_s: float = 300.0,
        suspend_after_s: float = 30.0,
        journal_partition: int = 0,
        partitions: int = 1,
    ) -> None:
        """``partition``: (index, pool size) of a pooled host; ``journal_partition`` of
        ``partitions``: the journal partition whose keys it runs (``journal.partitions``)."""
        tune_gc()
        layout = Partitions(partitions)
        name = (
            host_name(definition.name, key)
            if key is not None
            else host_name(
                definition.name,
                partition[0] if partition else 0,
                journal_partition if partitions > 1 else None,
            )
        )
        journal = RemoteJournal(namespace, name=layout.journal(journal_partition))
        scheduler = RemoteScheduler(namespace, layout.scheduler(journal_partition))
        # the limiter of concurrency and rate is one per runtime: partition 0's scheduler
        limiter = (
            scheduler if journal_partition == 0 else RemoteScheduler(namespace, layout.scheduler(0))
        )
        self.host = ObjectHost(
            definition,
            journal,
            partition=partition,
            key=key,
            name=name,
            scheduler=scheduler,
            limiter=limiter,
            suspend_after=suspend_after_s,
            outbox=LazyRouter(journal),
        )
        self.idle_timeout_s = idle_timeout_s
        # a handler holding the loop is logged; a loop that died ends the process (Ray restarts)
        self.watchdog = LoopWatchdog(
            asyncio.get_running_loop(), threading.current_thread(), name=self.host.name
        ).start()
        self.mailboxes = Mailboxes()
        self._starter = asyncio.get_running_loop().create_task(self._start())
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _start(self) -> None:
        try:
            outbox: LazyRouter = self.host.outbox  # type: ignore[assignment]
            await outbox.refresh()
            self.host.awakeables = outbox.awakeables  # ids signed with the runtime's secret
            self.host.steps = StepsConfig.from_config(outbox.config)  # type: ignore[attr-defined]
            await self.host.start()
        except Exception:  # callers' invoke() retries start() and sees the error
            log.exception("recovery of %s failed", self.host.definition.name)

    async def _sweep(self) -> None:
        """Evict idle keys; a dedicated host with nothing to do exits for good."""
        period = max(min(self.idle_timeout_s / 2, 5.0), 0.05)
        while True:
            await asyncio.sleep(period)
            self.host.evict_idle(self.idle_timeout_s)
            metrics.queued_invocations(self.host.name, self.mailboxes.in_flight())
            self.mailboxes.expire()
            if self.host.dedicated_key is not None and self.host.is_idle(self.idle_timeout_s):
                log.info("dedicated host for %s idle; exiting", self.host.dedicated_key)
                ray.kill(ray.get_runtime_context().current_actor, no_restart=True)
                return

    async def invoke(self, req: InvokeRequest) -> Outcome | None:
        await self._starter
        return await self.host.invoke(req)

    def submit_many(self, token: str, requests: list[InvokeRequest]) -> None:
        """Accept requests of one caller (``actors.cluster.channel``); their results wait in the
        caller's mailbox (``actors.host.mailbox``) for ``poll``."""
        self.mailboxes.submit(token, requests, self.invoke)  # each waits for the start

    async def poll(self, token: str, timeout: float = 10.0) -> dict[str, Result]:
        """Results for the caller ``token`` since its last poll (waits up to ``timeout``)."""
        return await self.mailboxes.poll(token, timeout)

    async def cancel(self, invocation_id: str, kill: bool = False) -> str:
        await self._starter
        return await self.host.cancel(invocation_id, kill)

    async def resolve_awakeable(
        self, awakeable_id: str, result: str | None, failure: str | None, by: str | None = None
    ) -> tuple[bool, str, int]:
        await self._starter
        return await self.host.resolve_awakeable(awakeable_id, result, failure, by)

    async def wake(self, items: list[tuple[str, int, Completion | None]]) -> None:
        await self._starter
        await self.host.wake(items)

    async def ready(self) -> dict[str, int]:
        await self._starter
        await self.host.start()
        return self.host.stats()

    def node(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def pid(self) -> int:
        import os

        return os.getpid()

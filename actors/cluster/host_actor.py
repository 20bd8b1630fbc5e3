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
from journal.fencing import end_stale_process
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
    """One host process: the ``ObjectHost`` of each journal partition it serves (one, unless
    the runtime's partitions are local and share their pooled hosts), dispatched by the
    partition an invocation id names."""

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
        shared: bool = False,
    ) -> None:
        """``partition``: (index, pool size) of a pooled host; ``journal_partition`` of
        ``partitions``: the journal partition whose keys it runs (``journal.partitions``), or,
        ``shared``, every partition's."""
        tune_gc()
        self.layout = layout = Partitions(partitions)
        served = list(layout) if shared and key is None else [journal_partition]
        name = (
            host_name(definition.name, key)
            if key is not None
            else host_name(
                definition.name,
                partition[0] if partition else 0,
                journal_partition if partitions > 1 and not shared else None,
            )
        )
        self.name = name
        # the limiter of concurrency and rate is one per runtime: partition 0's scheduler
        limiter = RemoteScheduler(namespace, layout.scheduler(0))
        self.outbox = LazyRouter(RemoteJournal(namespace, name=layout.journal(served[0])))
        self.hosts: dict[int, ObjectHost] = {
            p: ObjectHost(
                definition,
                RemoteJournal(namespace, name=layout.journal(p)),
                partition=partition,
                key=key,
                name=name,  # timers wake this actor by its name
                owner=name if len(served) == 1 else f"{name}@{p}",  # the limiter's owner
                scheduler=RemoteScheduler(namespace, layout.scheduler(p)),
                limiter=limiter,
                suspend_after=suspend_after_s,
                outbox=self.outbox,
            )
            for p in served
        }
        self.host = self.hosts[served[0]]
        for host in self.hosts.values():  # refused by a newer journal writer: start again
            host.flusher.on_stale = end_stale_process
        self.idle_timeout_s = idle_timeout_s
        # a handler holding the loop is logged; a loop that died ends the process (Ray restarts)
        self.watchdog = LoopWatchdog(
            asyncio.get_running_loop(), threading.current_thread(), name=name
        ).start()
        self.mailboxes = Mailboxes()
        self._starter = asyncio.get_running_loop().create_task(self._start())
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    def _of(self, invocation_id: str) -> ObjectHost:
        """The host of the partition ``invocation_id`` names (a malformed id: the first's,
        which answers it with the error)."""
        return self.hosts.get(self.layout.of_id(invocation_id), self.host)

    async def _start(self) -> None:
        try:
            await self.outbox.refresh()
            steps = StepsConfig.from_config(self.outbox.config)  # type: ignore[arg-type]
            for host in self.hosts.values():
                host.awakeables = self.outbox.awakeables  # ids signed with the runtime's secret
                host.steps = steps  # type: ignore[attr-defined]
            await asyncio.gather(*(host.start() for host in self.hosts.values()))
        except Exception:  # callers' invoke() retries start() and sees the error
            log.exception("recovery of %s failed", self.host.definition.name)

    async def _sweep(self) -> None:
        """Evict idle keys; a dedicated host with nothing to do exits for good."""
        period = max(min(self.idle_timeout_s / 2, 5.0), 0.05)
        while True:
            await asyncio.sleep(period)
            for host in self.hosts.values():
                host.evict_idle(self.idle_timeout_s)
            metrics.queued_invocations(self.name, self.mailboxes.in_flight())
            self.mailboxes.expire()
            if self.host.dedicated_key is not None and self.host.is_idle(self.idle_timeout_s):
                log.info("dedicated host for %s idle; exiting", self.host.dedicated_key)
                ray.kill(ray.get_runtime_context().current_actor, no_restart=True)
                return

    async def invoke(self, req: InvokeRequest) -> Outcome | None:
        await self._starter
        return await self._of(req.id).invoke(req)

    def submit_many(self, token: str, requests: list[InvokeRequest]) -> None:
        """Accept requests of one caller (``actors.cluster.channel``); their results wait in the
        caller's mailbox (``actors.host.mailbox``) for ``poll``."""
        self.mailboxes.submit(token, requests, self.invoke)  # each waits for the start

    async def poll(self, token: str, timeout: float = 10.0) -> dict[str, Result]:
        """Results for the caller ``token`` since its last poll (waits up to ``timeout``)."""
        return await self.mailboxes.poll(token, timeout)

    async def cancel(self, invocation_id: str, kill: bool = False) -> str:
        await self._starter
        return await self._of(invocation_id).cancel(invocation_id, kill)

    async def resolve_awakeable(
        self, awakeable_id: str, result: str | None, failure: str | None, by: str | None = None
    ) -> tuple[bool, str, int]:
        await self._starter
        host = self._of(awakeable_id.removeprefix("awk_"))  # the id names its invocation
        return await host.resolve_awakeable(awakeable_id, result, failure, by)

    async def wake(self, items: list[tuple[str, int, Completion | None]]) -> None:
        await self._starter
        if len(self.hosts) == 1:
            await self.host.wake(items)
            return
        by_host: dict[int, list[tuple[str, int, Completion | None]]] = {}
        for item in items:
            by_host.setdefault(self.layout.of_id(item[0]), []).append(item)
        await asyncio.gather(*(self._of(group[0][0]).wake(group) for group in by_host.values()))

    async def ready(self) -> dict[str, int]:
        await self._starter
        await asyncio.gather(*(host.start() for host in self.hosts.values()))
        totals: dict[str, int] = {}
        for host in self.hosts.values():
            for k, v in host.stats().items():
                totals[k] = totals.get(k, 0) + v
        return totals

    def node(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def pid(self) -> int:
        import os

        return os.getpid()

"""The schedule runner as a Ray actor: ``ScheduleRunner`` with the journal reached through
Ray and ticks submitted through a ``Router`` built from the runtime's config."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from actors.cluster.host_actor import HostActor
from actors.cluster.names import Partitions, route_hash
from actors.cluster.router import Router
from actors.cluster.schedule_runner import ScheduleRunner
from actors.host.requests import InvokeRequest
from journal.clock import now_ms
from journal.config import RuntimeConfig
from journal.kinds import InvokeMode
from journal.records import Outcome
from journal.schedules import Loaded, Progress, ScheduleRow
from journal.transport.gctune import tune_gc
from journal.transport.remote import RemoteJournal
from scheduler.schedules import tick_key


class _Journal:
    """What the runner needs of the journal actor, with retries across its restarts."""

    def __init__(self, remote: RemoteJournal, of: Callable[[str], RemoteJournal]) -> None:
        """``remote``: partition 0's journal (the schedule table); ``of``: an invocation's."""
        self.remote = remote
        self.of = of

    async def load_schedules(self, ids: list[str] | None = None) -> list[Loaded]:
        return list(await self.remote.call("load_schedules", ids))

    async def schedule_progress(self, steps: list[Progress]) -> list[str]:
        return list(await self.remote.call("schedule_progress", steps))

    async def await_output(self, invocation_id: str) -> Outcome:
        return await self.of(invocation_id).await_output(invocation_id)


class ScheduleRunnerActor(ScheduleRunner):
    """The remote form (``ray.remote(ScheduleRunnerActor)``): named ``schedules``, detached,
    restartable (``Runtime.schedule`` and ``Runtime.start`` make it)."""

    def __init__(self, namespace: str, partitions: int = 1) -> None:
        tune_gc()
        self.namespace = namespace
        self.partitions = Partitions(partitions)
        journals = {
            p: RemoteJournal(namespace, name=self.partitions.journal(p)) for p in self.partitions
        }
        self._remote = journals[0]
        self._router: Router | None = None
        super().__init__(
            _Journal(self._remote, lambda inv: journals[self.partitions.of_id(inv)]),
            self._submit,
            place=lambda row, inv: self.partitions.locate(row.service, row.key, inv),
        )

    def info(self) -> dict[str, Any]:
        return {**super().info(), "pid": os.getpid()}

    async def _routes(self, service: str) -> Router:
        """The router, built again from the journal's config when it does not know
        ``service`` (a driver that attached later registered it)."""
        if self._router is None or service not in self._router.definitions:
            config: dict[str, Any] = await self._remote.call("config")
            self._router = Router(self.namespace, RuntimeConfig.from_dict(config), HostActor)
        return self._router

    async def _submit(
        self, row: ScheduleRow, tick_ms: int, invocation_id: str, resubmit: bool
    ) -> Any:
        """Run the tick's invocation as a call: returns once it completed (a service this
        runtime does not know: ``TerminalError`` 404, logged by the runner). The tick key is
        its ``invoked_by`` (``sys_invocation.invoked_by_id``), not an idempotency key: a host
        looks an idempotency key up in the journal at every request, a read per tick; the id
        alone is enough to de-duplicate, and a request sent again is marked ``resubmit`` (the
        host then looks it up)."""
        router = await self._routes(row.service)
        spec = router.resolve(row.target)
        req = InvokeRequest(
            invocation_id,
            row.service,
            row.handler,
            row.key,
            row.input,
            InvokeMode.CALL,
            self.partitions.within(route_hash(row.service, row.key, invocation_id)),
            None,
            tick_key(row.id, tick_ms),
            resubmit,
            now_ms(),
            0,
        )
        return await router.submit(spec, req)

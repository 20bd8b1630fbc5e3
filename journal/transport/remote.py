"""Reaching restartable named actors from other actors and drivers.

System actors are restartable; a call that meets a dead or restarting actor is sent again after
a short back-off to the (re-looked-up) actor. That is safe because every method is idempotent:
commits carry a batch id the journal de-duplicates, invocations and timers carry their ids.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

from journal.errors import Fenced
from journal.partitions import JOURNAL_NAME
from journal.records import Accept, Batch, Completion, Outcome, PendingInvocation, Timer
from journal.retry import retry
from journal.transport.wire import WireClosed, WireRoute

UNAVAILABLE = (ActorDiedError, ActorUnavailableError, RayActorError)
JOURNAL_ACTOR = JOURNAL_NAME  # with one partition; ``journal.partitions`` names the others


class RemoteActor:
    """A named actor in a namespace, called with retries across its restarts. On the actor's
    node, calls go over its Unix socket (``journal.transport.wire``: a tenth of a Ray call's
    cost); a call the socket fails is made again through Ray, as after any failure of the actor."""

    def __init__(self, name: str, namespace: str, patience: float = 120.0) -> None:
        self.name = name
        self.namespace = namespace
        self.patience = patience
        self._handle: Any = None
        self._wire = WireRoute()

    def _actor(self) -> Any:
        if self._handle is None:
            self._handle = ray.get_actor(self.name, namespace=self.namespace)
        return self._handle

    async def call(
        self, method: str, *args: Any, on_retry: Callable[[], None] | None = None
    ) -> Any:
        try:
            wire = await self._wire.client(self._actor())
        except (*UNAVAILABLE, ValueError):  # down: the Ray path waits for it
            self._handle, wire = None, None
        if wire is not None:
            try:
                return await wire.call(method, *args)
            except (WireClosed, Fenced):  # the route asks the successor next time
                self._handle = None  # (a fenced journal is a stale one: Ray knows the live one)
                await self._wire.aclose()
                if on_retry is not None:
                    on_retry()
        return await self._ray_call(method, *args, on_retry=on_retry)

    async def close_wire(self) -> None:
        await self._wire.aclose()

    async def _ray_call(
        self, method: str, *args: Any, on_retry: Callable[[], None] | None = None
    ) -> Any:
        def forget(_: BaseException) -> None:
            self._handle = None
            if on_retry is not None:
                on_retry()

        return await retry(
            lambda: getattr(self._actor(), method).remote(*args),
            retry_on=(*UNAVAILABLE, ValueError),
            when=_down,
            deadline_s=self.patience,
            on_retry=forget,
        )


def _down(e: BaseException) -> bool:
    """A dead or restarting actor, or its name not registered (yet)."""
    return not isinstance(e, ValueError) or "Failed to look up actor" in str(e)


class RemoteJournal(RemoteActor):
    """The journal actor as the port hosts, the scheduler and clients use (``name``: a
    partition's, ``journal.partitions.Partitions.journal``)."""

    def __init__(self, namespace: str, patience: float = 120.0, name: str = JOURNAL_ACTOR) -> None:
        super().__init__(name, namespace, patience)

    async def commit(self, batch: Batch) -> None:
        def mark_resent() -> None:
            batch.resent = True

        await self.call("commit", batch, on_retry=mark_resent)

    async def writer_epoch(self) -> int | None:
        return await self.call("writer_epoch")

    async def outcome(self, invocation_id: str) -> Outcome | None:
        return await self.call("outcome", invocation_id)

    async def accepted(self, invocation_id: str) -> Accept | None:
        return await self.call("accepted", invocation_id)

    async def route(self, invocation_id: str) -> tuple[str, str | None, int] | None:
        return await self.call("route", invocation_id)

    async def completion(self, invocation_id: str, idx: int) -> Completion | None:
        return await self.call("completion", invocation_id, idx)

    async def await_output(self, invocation_id: str) -> Outcome:
        return await self.call("await_output", invocation_id)

    async def pending(
        self,
        services: list[str],
        partition: tuple[int, int] | None = None,
        key: str | None = None,
        ids: list[str] | None = None,
    ) -> list[PendingInvocation]:
        return await self.call("pending", services, partition, key, ids)

    async def pending_timers(self, host: str | None = None) -> list[Timer]:
        return await self.call("pending_timers", host)

    async def fired_open_timers(self) -> list[Timer]:
        return await self.call("fired_open_timers")

    async def admissions(self, limit: str, since_ms: int) -> list[int]:
        return await self.call("admissions", limit, since_ms)

    async def load_states(self, service: str, keys: list[str]) -> dict[str, dict[str, str]]:
        return await self.call("load_states", service, keys)

    async def state_key_filter(self, service: str) -> bytes:
        return await self.call("state_key_filter", service)

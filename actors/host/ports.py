"""The ports a host talks to: the journal, the scheduler and the outbox (other handlers). The
actor wrapper supplies them; unit tests give in-process fakes."""

from __future__ import annotations

from typing import Any, Protocol

from actors.host.requests import InvokeRequest
from journal.kinds import InvokeMode
from journal.records import Batch, Completion, Outcome, PendingInvocation, Timer
from scheduler.limiter import LimitSpec


class JournalPort(Protocol):
    """The journal as a host sees it (the actor, or an in-process store in unit tests)."""

    async def commit(self, batch: Batch) -> None: ...

    async def writer_epoch(self) -> int | None: ...

    async def outcome(self, invocation_id: str) -> Outcome | None: ...

    async def completion(self, invocation_id: str, idx: int) -> Completion | None: ...

    async def pending(
        self,
        services: list[str],
        partition: tuple[int, int] | None = None,
        key: str | None = None,
        ids: list[str] | None = None,
    ) -> list[PendingInvocation]: ...

    async def load_states(self, service: str, keys: list[str]) -> dict[str, dict[str, str]]: ...

    async def state_key_filter(self, service: str) -> bytes: ...

    async def pending_timers(self, host: str | None = None) -> list[Timer]: ...

    async def fired_open_timers(self) -> list[Timer]: ...


class SchedulerPort(Protocol):
    async def add(self, timers: list[Timer]) -> None: ...


class LimiterPort(Protocol):
    """The limiter (``scheduler.admission``; the scheduler actor serves it)."""

    async def admit(
        self,
        host: str,
        incarnation: str,
        invocation_id: str,
        order: int,
        limits: tuple[LimitSpec, ...],
        wait: bool,
    ) -> str | None: ...

    async def exchange(
        self,
        host: str,
        incarnation: str,
        frees: list[str],
        asks: list[tuple[str, int, tuple[LimitSpec, ...]]],
    ) -> list[str | None]: ...

    async def limits_sync(
        self,
        host: str,
        incarnation: str,
        held: list[tuple[str, int, tuple[LimitSpec, ...]]],
        entering: list[str],
    ) -> None: ...

    async def limits_hello(self, host: str, incarnation: str) -> None: ...


class OutboxPort(Protocol):
    """How a host reaches other handlers (the runtime's ``Router`` in an actor)."""

    def request(
        self,
        target: Any,
        key: str | None,
        arg: Any,
        mode: InvokeMode,
        *,
        delay: Any = None,
        invocation_id: str | None = None,
        invoked_by: str | None = None,
    ) -> tuple[Any, InvokeRequest]: ...

    async def submit(self, spec: Any, req: InvokeRequest) -> Outcome | None: ...

    async def cancel(self, invocation_id: str, kill: bool = False) -> str: ...

    async def resolve_awakeable(
        self, awakeable_id: str, result: str | None, failure: str | None, by: str | None = None
    ) -> None: ...

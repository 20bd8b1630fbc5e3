"""HostBase: the state an ``ObjectHost`` and its parts (awakeables, outbound calls, promises,
lifecycle) share, and the small helpers they all use."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from actors.engine.awakeable_ids import AwakeableIds
from actors.engine.invocation import Invocation
from actors.host.actions import SyncActions
from actors.host.admission import Admission
from actors.host.flusher import Flusher
from actors.host.loader import StateLoader
from actors.host.ports import JournalPort, LimiterPort, OutboxPort, SchedulerPort
from actors.host.slots import KeySlot, Parked
from actors.sdk.definitions import ServiceDefinition
from actors.sdk.serde import Serde
from journal.records import Completion, Outcome, Record
from journal.retry import Backoff
from scheduler.service import TimerScheduler

RECENT_OUTCOMES = 10_000
RELOAD_BACKOFF = Backoff(0.1, 2, 5.0)  # journal reloads and calls to other hosts
PASS_ON_BACKOFF = Backoff(0.02, 2, 1.0)  # a cancel waiting for its callee's acceptance


class HostBase:
    """The host's state; the parts are mixins over it, and ``ObjectHost`` puts them together."""

    def __init__(
        self,
        definition: ServiceDefinition,
        journal: JournalPort,
        *,
        partition: tuple[int, int] | None = None,
        key: str | None = None,
        name: str = "host",
        scheduler: SchedulerPort | None = None,
        suspend_after: float = 30.0,
        outbox: OutboxPort | None = None,
        secret: str | None = None,
        limiter: LimiterPort | None = None,
        owner: str | None = None,
    ) -> None:
        """``secret``: the runtime's, which awakeable ids are signed with (a host actor sets
        it from the runtime config before it starts); a random one by default. ``owner``: who
        holds this host's slots at the limiter (default ``name``; one process serving several
        partitions has a host, and an owner, per partition)."""
        self.definition = definition
        self.journal = journal
        self.partition = partition
        self.dedicated_key = key
        self._name = name
        self.scheduler = scheduler
        self.suspend_after = suspend_after
        self.outbox = outbox
        self.actions = SyncActions()
        # the engine's ``ctx.run`` of a sync function: on a thread, counted by ``actions``
        # (bound once: no extra call on the hot path)
        self.run_sync: Callable[..., Awaitable[Any]] = self.actions.run
        self.flusher = Flusher(journal.commit, self._apply_committed, self.actions.settle)
        self.loader = StateLoader(  # a dedicated host loads its one key once: no filter
            partial(journal.load_states, definition.name),
            None if key is not None else partial(journal.state_key_filter, definition.name),
        )
        self._active: dict[str, Invocation] = {}
        self._parked: dict[str, Parked] = {}
        self._outcomes: dict[str, asyncio.Future[Outcome]] = {}
        self._recent: OrderedDict[str, Outcome] = OrderedDict()
        self._slots: dict[str, KeySlot] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._ready: asyncio.Future[None] | None = None
        self._order = 0  # acceptance order, increasing across restarts (wall-clock based)
        self._local_timers: TimerScheduler | None = None
        self._calls: dict[tuple[str, int], asyncio.Task[None]] = {}  # (caller, idx) in flight
        self._delivering: dict[str, int] = {}  # callee id -> its calls in flight (see _pass_on)
        self.awakeables = AwakeableIds(secret or secrets.token_hex(32))
        self._awakeables: dict[str, dict[int, Serde]] = {}  # types of open awakeables
        # resolutions waiting for a recovered invocation's replay to declare an awakeable's type
        self._types_due: dict[tuple[str, int], asyncio.Future[None]] = {}
        # awakeables completed here (first one wins): done once durable, and who completed it
        self._resolved: OrderedDict[tuple[str, int], tuple[asyncio.Future[None], str | None]] = (
            OrderedDict()
        )
        self._resolving: dict[tuple[str, int], asyncio.Future[None]] = {}  # handlers' deliveries
        self.last_activity = time.monotonic()
        # concurrency and rate limits (not enforced without a limiter: unit tests, embedded)
        self.admission = Admission(
            owner or name, limiter, lambda inv, records: self.submit(inv, records)
        )
        self.limited = any(spec.limits for spec in definition.handlers.values())

    @property
    def name(self) -> str:
        return self._name

    def _outcome(self, inv_id: str) -> asyncio.Future[Outcome]:
        fut = self._outcomes.get(inv_id)
        if fut is None:
            fut = self._outcomes[inv_id] = asyncio.get_running_loop().create_future()
        return fut

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _slot(self, key: str) -> KeySlot:
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = KeySlot()
        return slot

    if TYPE_CHECKING:  # defined by ``ObjectHost``; the parts call them

        async def start(self) -> None: ...

        async def wake(self, items: list[tuple[str, int, Completion | None]]) -> None: ...

        def submit(self, invocation: Invocation, records: list[Record]) -> asyncio.Future[None]: ...

        def resume_ahead(self, completion: Completion) -> tuple[asyncio.Future[None], bool]: ...

        async def _complete(self, completion: Completion) -> None: ...

        def _finish(self, inv: Invocation, out: Outcome) -> None: ...

        def _schedule(self, inv: Invocation) -> None: ...

        def _kick(self, key: str, slot: KeySlot) -> None: ...

        def _apply_committed(self, records: list[Record]) -> None: ...

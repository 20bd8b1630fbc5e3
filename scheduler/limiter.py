"""Admission under concurrency and rate limits: which waiting invocation may start now.

Pure bookkeeping (no Ray, no asyncio), so that it is tested on its own; the scheduler actor
(``scheduler.admission``) answers the hosts with it. A limit is named by what it covers
(``"LLM"`` for a service, ``"LLM/complete"`` for one handler); an invocation is admitted only
when every limit it falls under has room, and waiting invocations are admitted in acceptance
order: one that waits for a limit is never overtaken on that limit by a later one.

Hosts are *owners* (``host name``, ``incarnation``): a host that restarts comes back under the
same name with a new incarnation, and what the old one held is released at once when the new
one speaks (its invocations died with it and are replayed, admitted again). A stale owner's
requests are refused, so a slot never leaks to a process that is gone.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from journal.clock import now_ms


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """One limit: at most ``concurrency`` admitted at once, and at most ``rate`` admissions
    in any window of ``per_ms`` (either may be None)."""

    name: str
    concurrency: int | None = None
    rate: int | None = None
    per_ms: int = 0

    def describe(self) -> str:
        parts = []
        if self.concurrency is not None:
            parts.append(f"concurrency {self.concurrency}")
        if self.rate is not None:
            parts.append(f"rate {self.rate} per {self.per_ms / 1000:g}s")
        return f"{self.name}: {', '.join(parts)}"


@dataclass(frozen=True, slots=True)
class Owner:
    """A host process: its actor name and the incarnation it started as."""

    host: str
    incarnation: str


@dataclass(slots=True)
class Request:
    """An invocation asking to start (or to go on after it waited without its slot)."""

    invocation_id: str
    owner: Owner
    order: int  # acceptance order: earlier goes first
    limits: tuple[LimitSpec, ...]


@dataclass(slots=True)
class _Limit:
    spec: LimitSpec
    holders: set[str] = field(default_factory=set)
    admitted: deque[int] = field(default_factory=deque)  # admission times, for the rate
    waiting: int = 0  # requests queued under this limit

    def has_room(self, now: int) -> bool:
        s = self.spec
        if s.concurrency is not None and len(self.holders) >= s.concurrency:
            return False
        if s.rate is not None:
            while self.admitted and self.admitted[0] < now - s.per_ms:
                self.admitted.popleft()
            if len(self.admitted) >= s.rate:
                return False
        return True


class Limiter:
    """The limits, who holds a slot of each, and who waits, in acceptance order."""

    def __init__(self, clock: Callable[[], int] = now_ms) -> None:
        self.clock = clock
        self._limits: dict[str, _Limit] = {}
        self._held: dict[str, Request] = {}  # invocation id -> its admitted request
        self._waiting: dict[str, Request] = {}
        self._queue: list[tuple[int, str]] = []  # (order, invocation id), sorted
        self._owners: dict[str, str] = {}  # host -> its current incarnation
        self._retired: dict[str, set[str]] = {}  # host -> incarnations it had before

    # -- what hosts ask -----------------------------------------------------------------------

    def request(self, req: Request) -> bool:
        """Queue ``req`` (``pump`` then admits whoever can go); False: refused, its owner is
        stale. Asking again is harmless: a held slot stays held, a queued request keeps its
        place."""
        if not self._current(req.owner):
            return False
        for spec in req.limits:
            self._limit(spec)
        held = self._held.get(req.invocation_id)
        if held is not None:
            held.owner = req.owner
        elif req.invocation_id not in self._waiting:
            self._waiting[req.invocation_id] = req
            bisect.insort(self._queue, (req.order, req.invocation_id))
            for spec in req.limits:
                self._limits[spec.name].waiting += 1
        return True

    def release(self, invocation_id: str) -> None:
        """The invocation finished, suspended or waits: its slots are free (or it gave up
        waiting). Call ``pump`` next to admit whoever can go now."""
        req = self._held.pop(invocation_id, None)
        if req is not None:
            for spec in req.limits:
                self._limits[spec.name].holders.discard(invocation_id)
        self._unqueue(invocation_id)

    def sync(
        self,
        owner: Owner,
        held: Iterable[tuple[str, int, tuple[LimitSpec, ...]]],
        entering: Iterable[str] = (),
    ) -> None:
        """What a host holds, as it says (periodically, and so after this limiter restarted):
        slots it holds that are unknown here are adopted, even beyond a limit (a limiter
        before this one admitted them); slots it holds here but names neither as held nor as
        being admitted (``entering``: an answer may be on its way) are released."""
        if not self._current(owner):
            return
        named = set(entering)
        for invocation_id, order, limits in held:
            named.add(invocation_id)
            if invocation_id not in self._held:
                self._unqueue(invocation_id)
                self._admit(Request(invocation_id, owner, order, limits), count_rate=False)
        for invocation_id, req in list(self._held.items()):
            if req.owner == owner and invocation_id not in named:
                self.release(invocation_id)

    def hello(self, owner: Owner) -> None:
        """A host (re)started: what its earlier incarnation held or waited for is dropped."""
        self._current(owner)

    def seed(self, spec: LimitSpec, admitted_at: Iterable[int]) -> None:
        """Admission times recorded before this limiter started (the rate window)."""
        window = self._limit(spec).admitted
        window.extend(sorted(admitted_at))

    def admit_now(self, req: Request) -> bool:
        """The fast path: admit ``req`` at once (True) if it is under concurrency limits only,
        each with room and nobody waiting; else do nothing (False: ``request`` it). The caller
        checked its owner (``current``)."""
        if req.invocation_id in self._held:
            return True
        if req.invocation_id in self._waiting:
            return False
        for spec in req.limits:
            if spec.rate is not None:
                return False
            lim = self._limit(spec)
            if lim.waiting or len(lim.holders) >= (spec.concurrency or 0):
                return False
        self._admit(req, count_rate=False)
        return True

    def current(self, owner: Owner) -> bool:
        """Whether ``owner`` is its host's current process (a newer one replaces it)."""
        return self._current(owner)

    # -- deciding -----------------------------------------------------------------------------

    def pump(self) -> list[Request]:
        """Admit every waiting request that can go now, in acceptance order; a request that
        cannot blocks later ones on its limits (no overtaking)."""
        now = self.clock()
        admitted: list[Request] = []
        blocked: set[str] = set()
        for _order, invocation_id in list(self._queue):
            if len(blocked) == len(self._limits):
                break
            req = self._waiting[invocation_id]
            names = {s.name for s in req.limits}
            if names & blocked or not all(self._limits[n].has_room(now) for n in names):
                blocked |= names
                continue
            self._unqueue(invocation_id)
            self._admit(req, count_rate=True, now=now)
            admitted.append(req)
        return admitted

    def next_room_ms(self) -> int | None:
        """When a rate window frees next, if someone waits on a rate limit."""
        if not self._waiting:
            return None
        due = [
            lim.admitted[0] + lim.spec.per_ms + 1
            for lim in self._limits.values()
            if lim.spec.rate is not None and len(lim.admitted) >= lim.spec.rate
        ]
        return min(due, default=None)

    def waiting_for(self, req: Request) -> str:
        """Which limit keeps ``req`` waiting, in words (for ``sys_waiting``)."""
        now = self.clock()
        for spec in req.limits:
            if not self._limits[spec.name].has_room(now):
                return spec.describe()
        return "; ".join(s.describe() for s in req.limits) + " (earlier invocations first)"

    # -- looking ------------------------------------------------------------------------------

    def holding(self, name: str) -> int:
        lim = self._limits.get(name)
        return 0 if lim is None else len(lim.holders)

    def owner_of(self, invocation_id: str) -> Owner | None:
        req = self._held.get(invocation_id) or self._waiting.get(invocation_id)
        return None if req is None else req.owner

    def is_waiting(self, invocation_id: str) -> bool:
        return invocation_id in self._waiting

    def is_held(self, invocation_id: str) -> bool:
        return invocation_id in self._held

    def by_limit(self) -> dict[str, tuple[int, int]]:
        """Each limit's slots held and requests waiting."""
        return {name: (len(lim.holders), lim.waiting) for name, lim in self._limits.items()}

    def stats(self) -> dict[str, int]:
        return {"limits": len(self._limits), "held": len(self._held), "waiting": len(self._waiting)}

    # -- inside -------------------------------------------------------------------------------

    def _limit(self, spec: LimitSpec) -> _Limit:
        lim = self._limits.get(spec.name)
        if lim is None:
            lim = self._limits[spec.name] = _Limit(spec)
        elif lim.spec != spec:  # a redeployment changed it: the new figures apply from now
            lim.spec = spec
        return lim

    def _admit(self, req: Request, count_rate: bool, now: int | None = None) -> None:
        self._held[req.invocation_id] = req
        for spec in req.limits:
            lim = self._limit(spec)
            lim.holders.add(req.invocation_id)
            if count_rate and spec.rate is not None:
                lim.admitted.append(self.clock() if now is None else now)

    def _unqueue(self, invocation_id: str) -> None:
        req = self._waiting.pop(invocation_id, None)
        if req is not None:
            for spec in req.limits:
                self._limits[spec.name].waiting -= 1
            i = bisect.bisect_left(self._queue, (req.order, invocation_id))
            if i < len(self._queue) and self._queue[i] == (req.order, invocation_id):
                del self._queue[i]

    def _current(self, owner: Owner) -> bool:
        """Whether ``owner`` is its host's current incarnation; a new incarnation replaces
        the old one and frees what the old one held or waited for."""
        known = self._owners.get(owner.host)
        if known == owner.incarnation:
            return True
        if known is not None and owner.incarnation in self._retired.get(owner.host, ()):
            return False
        self._owners[owner.host] = owner.incarnation
        if known is not None:
            self._retired.setdefault(owner.host, set()).add(known)
        for invocation_id, req in list(self._held.items()):
            if req.owner.host == owner.host and req.owner.incarnation != owner.incarnation:
                self.release(invocation_id)
        for invocation_id, req in list(self._waiting.items()):
            if req.owner.host == owner.host and req.owner.incarnation != owner.incarnation:
                self._unqueue(invocation_id)
        return True

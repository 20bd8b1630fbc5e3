"""The durable facts hosts send to the journal, as small picklable dataclasses.

A host groups many of these into one batch (one Ray call); the journal writes many batches in
one transaction. Payloads are JSON text; times are epoch milliseconds.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Accept:
    """An invocation was accepted: it must run to completion from now on.

    ``host_order`` is the order in which the owning host accepted it; recovery resumes a key's
    invocations in that order (commit order can differ: a call's acceptance is committed with
    its first step).
    """

    id: str
    service: str
    handler: str
    key: str | None
    route_hash: int
    input: str
    idempotency_key: str | None = None
    invoked_by: str | None = None
    created_at_ms: int = 0
    host_order: int = 0


@dataclass(frozen=True, slots=True)
class Entry:
    """One step of an invocation's journal, at position ``idx``.

    ``result`` is the JSON of a completed step; a step that failed for good carries
    ``failure`` (message) and ``failure_code`` instead.
    """

    invocation_id: str
    idx: int
    entry_type: str  # a journal.kinds.EntryType (plain str when read back)
    name: str | None
    result: str | None = None
    failure: str | None = None
    failure_code: int | None = None
    created_at_ms: int = 0
    completed: bool = True


@dataclass(frozen=True, slots=True)
class StateWrite:
    """A state change of one object key; ``value`` None clears the entry."""

    service: str
    key: str
    name: str
    value: str | None


@dataclass(frozen=True, slots=True)
class StatusChange:
    """A status an invocation entered (running, backing-off, ...), with its last failure."""

    invocation_id: str
    status: str  # a journal.kinds.InvocationStatus
    retry_count: int = 0
    failure: str | None = None
    at_ms: int = 0


@dataclass(frozen=True, slots=True)
class Output:
    """The invocation finished: successfully with ``output`` JSON, or failed for good."""

    invocation_id: str
    ok: bool
    output: str | None = None
    failure: str | None = None
    failure_code: int | None = None
    completed_at_ms: int = 0


@dataclass(frozen=True, slots=True)
class AttemptFailed:
    """An attempt of an invocation failed (one per failed attempt: ``sys_journal_events``).

    ``related_entry_*``: the journal entry the attempt was at (the ``ctx.run`` that raised,
    say); ``next_retry_at_ms``: when the back-off ends (None: no retry follows)."""

    invocation_id: str
    retry_count: int
    failure: str
    stacktrace: str
    related_entry_index: int | None = None
    related_entry_name: str | None = None
    related_entry_type: str | None = None
    next_retry_at_ms: int | None = None
    at_ms: int = 0


@dataclass(frozen=True, slots=True)
class Waiting:
    """An invocation waits for a slot of a limit (``reason`` names it), or, with ``reason``
    None, waits no more (``sys_waiting``). Written only when it has to wait."""

    invocation_id: str
    reason: str | None
    at_ms: int = 0


@dataclass(frozen=True, slots=True)
class Admitted:
    """An invocation was admitted under a rate limit, at ``at_ms``: a limiter that starts
    reads the last window of these, so a rate holds across restarts."""

    invocation_id: str
    limit: str
    at_ms: int


@dataclass(slots=True)
class Batch:
    """Records one host sends in one call. ``batch_id`` makes a re-sent batch harmless.
    ``epoch``: the epoch of the fenced journal writer the host recovered from (None: not
    fenced, or not a host's); a newer writer refuses it (``StaleHost``)."""

    batch_id: str
    records: list[Record] = field(default_factory=list)
    resent: bool = False
    epoch: int | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an invocation ended, as it crosses Ray boundaries (never an exception object)."""

    ok: bool
    output: str | None = None
    failure: str | None = None
    failure_code: int | None = None

    @staticmethod
    def of(out: Output) -> Outcome:
        return Outcome(out.ok, out.output, out.failure, out.failure_code)


@dataclass(slots=True)
class PendingInvocation:
    """An accepted invocation without output, with what its host needs to resume it:
    its journal, the completions of entries that completed later, and which unfired timer
    (a delayed start or a retry back-off) it waits for, if any."""

    accept: Accept
    entries: list[Entry]
    retry_count: int = 0
    completions: dict[int, Completion] = field(default_factory=dict)
    waiting_for: str | None = None  # TimerKind START or RETRY: an unfired timer to wait for


@dataclass(frozen=True, slots=True)
class Timer:
    """A durable timer: a sleep (``kind='sleep'``, entry ``idx``), a retry back-off
    (``'retry'``) or a delayed start (``'start'``). ``host`` names the actor to wake."""

    timer_id: str
    invocation_id: str
    idx: int
    kind: str  # a journal.kinds.TimerKind
    fire_at_ms: int
    host: str


@dataclass(frozen=True, slots=True)
class TimerFired:
    """The timer ``timer_id`` fired (written once, before its host is messaged)."""

    timer_id: str
    invocation_id: str
    at_ms: int = 0


@dataclass(frozen=True, slots=True)
class Completion:
    """The result of a journal entry that completes later (a sleep, an awakeable, a call).

    ``by`` names who completed an awakeable from a handler (``<invocation id>:<entry index>``
    of its ``complete_awakeable`` entry), so a replayed delivery of the same resolution is
    recognised as the same one instead of being refused as a second."""

    invocation_id: str
    idx: int
    result: str | None = None
    failure: str | None = None
    failure_code: int | None = None
    at_ms: int = 0
    by: str | None = None


Record = (
    Accept
    | Entry
    | StateWrite
    | StatusChange
    | Output
    | Timer
    | TimerFired
    | Completion
    | AttemptFailed
    | Waiting
    | Admitted
)


def _pickled_as_tuples(cls: type) -> None:
    """Pickle ``cls`` as its class and a tuple of its fields: a slots dataclass's default
    pickling looks its fields up on every object, and hosts pickle records for every commit."""
    values = operator.attrgetter(*cls.__slots__)  # type: ignore[attr-defined]

    def reduce(self: object) -> tuple[type, tuple[object, ...]]:
        return cls, values(self)

    cls.__reduce__ = reduce  # type: ignore[method-assign,assignment]


for _cls in (
    Accept,
    Entry,
    StateWrite,
    StatusChange,
    Output,
    AttemptFailed,
    Waiting,
    Admitted,
    Batch,
    Outcome,
    PendingInvocation,
    Timer,
    TimerFired,
    Completion,
):
    _pickled_as_tuples(_cls)

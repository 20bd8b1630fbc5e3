"""The names the journal stores, as enums: entry types, log row kinds, invocation statuses,
timer kinds and invocation modes.

Each is a ``StrEnum``: a member *is* its string (``EntryType.RUN == "run"``), so the rows
already in a journal, the SQL views that compare against these strings and code that still
passes plain strings all keep working. Values read back from DuckDB are plain ``str``;
``EntryType(value)`` turns one into a member where the type matters.
"""

from __future__ import annotations

from enum import StrEnum


class EntryType(StrEnum):
    """What a journal entry records (``sys_journal.entry_type``): one per context operation."""

    RUN = "run"  # ctx.run: a side effect's result
    SLEEP = "sleep"  # ctx.sleep: a durable timer (result: its due time)
    CALL = "call"  # ctx.call / object_client: a request and its response
    SEND = "send"  # ctx.send: a one-way request
    AWAKEABLE = "awakeable"  # ctx.awakeable: completed later from outside
    COMPLETE_AWAKEABLE = "complete_awakeable"  # ctx.resolve/reject_awakeable
    GET_STATE = "get_state"
    SET_STATE = "set_state"
    CLEAR_STATE = "clear_state"
    CLEAR_ALL_STATE = "clear_all_state"
    GET_STATE_KEYS = "get_state_keys"
    PROMISE = "promise"  # a workflow's durable promise, awaited
    PEEK_PROMISE = "peek_promise"
    COMPLETE_PROMISE = "complete_promise"  # resolve or reject
    TIME = "time"  # ctx.time: the journaled clock
    CANCEL = "cancel"  # the invocation was cancelled at this point


class LogKind(StrEnum):
    """The ``kind`` column of the journal's ``log`` table: which record a row holds."""

    ACCEPT = "accept"  # records.Accept
    ENTRY = "entry"  # records.Entry
    COMPLETION = "completion"  # records.Completion
    STATUS = "status"  # records.StatusChange
    OUTPUT = "output"  # records.Output
    STATE = "state"  # records.StateWrite
    TIMER = "timer"  # records.Timer
    FIRED = "fired"  # records.TimerFired
    EVENT = "event"  # records.AttemptFailed (sys_journal_events)
    WAIT = "wait"  # records.Waiting (sys_waiting)
    ADMIT = "admit"  # records.Admitted (a rate limit's window)
    BATCH = "batch"  # a batch id: makes a re-sent batch harmless
    MARK = "mark"  # the journal clock at a commit (retention)


class InvocationStatus(StrEnum):
    """The statuses of ``sys_invocation.status`` (some are written as ``StatusChange``,
    the others derived by the view)."""

    PENDING = "pending"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    SUSPENDED = "suspended"
    BACKING_OFF = "backing-off"
    COMPLETED = "completed"


class TimerKind(StrEnum):
    """What a durable timer (``records.Timer.kind``, ``sys_timers.kind``) wakes."""

    SLEEP = "sleep"  # the sleep entry at its index
    RETRY = "retry"  # the next attempt after a back-off
    START = "start"  # a delayed invocation's first attempt


class InvokeMode(StrEnum):
    """How an invocation was requested: the caller waits for it, or not."""

    CALL = "call"
    SEND = "send"


class Overlap(StrEnum):
    """What a schedule does with a tick while its previous tick's invocation still runs
    (``sys_schedule.overlap``)."""

    SKIP = "skip"  # drop the tick
    BUFFER_ONE = "buffer_one"  # keep at most one; it starts when the previous completes
    ALLOW_ALL = "allow_all"  # start it anyway

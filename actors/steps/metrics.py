"""raystate's Ray metrics: kept in ``journal.metrics`` (the journal and the scheduler emit them
too, and they import nothing of ``actors``); re-exported here for the step machinery."""

from journal.metrics import (
    PREFIX,
    StepKind,
    attempt_latency,
    invocation_done,
    journal_commit,
    queued_invocations,
    step_latency,
    timer_lateness,
)

__all__ = [
    "PREFIX",
    "StepKind",
    "attempt_latency",
    "invocation_done",
    "journal_commit",
    "queued_invocations",
    "step_latency",
    "timer_lateness",
]

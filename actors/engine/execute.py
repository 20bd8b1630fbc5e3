"""execute: run an invocation to its outcome, one attempt after another, from its journal."""

from __future__ import annotations

import asyncio
import time

from actors.engine.context import InvocationContext
from actors.engine.failures import describe, report
from actors.engine.invocation import (
    CANCELLED,
    CANCELLED_CODE,
    KILLED,
    Invocation,
    Suspended,
    cancelled,
    retry_index,
)
from actors.engine.ports import HostPort
from actors.sdk.errors import TerminalError
from journal import metrics
from journal.clock import now_ms
from journal.errors import StatusCode
from journal.kinds import InvocationStatus, TimerKind
from journal.records import Outcome, Output, Record, StatusChange, Timer


async def execute(
    host: HostPort, inv: Invocation, state: dict[str, str] | None
) -> tuple[Outcome, asyncio.Future[None]]:
    """Run ``inv`` to its outcome, retrying failed attempts from the journal per policy.

    Returns the outcome and the future of its commit: the outcome is queued behind every record
    of the invocation, and must not be shown to anyone before that future resolves. Raises
    ``Suspended`` when the invocation left memory to wait (for a sleep, or a retry back-off,
    which is a durable timer too: a restart neither loses a retry nor fires it early).
    """
    spec = inv.spec
    while True:
        inv.attempts += 1
        ctx = InvocationContext(host, inv, state)
        started = time.monotonic()
        out: Outcome | None
        failed: list[Record] = []
        try:
            try:
                args = (spec.input.load(inv.accept.input),) if spec.takes_arg else ()
            except Exception as e:
                raise TerminalError(
                    f"input of {spec.target} does not validate: {e}", StatusCode.BAD_REQUEST
                ) from None
            if inv.killed:
                raise asyncio.CancelledError
            if inv.cancel_pending and not inv.entries:  # cancelled before it started
                raise cancelled()
            result = await spec.fn(ctx, *args)
            await ctx.settle()
            out = Outcome(True, spec.output.output_json(result, spec.target))
        except Suspended:
            await host.submit(
                inv,
                [
                    *ctx.take_records(),
                    StatusChange(
                        inv.id, InvocationStatus.SUSPENDED, inv.retry_count, None, now_ms()
                    ),
                ],
            )
            raise
        except asyncio.CancelledError as e:
            me = asyncio.current_task()
            if inv.killed:
                out = Outcome(False, None, KILLED, CANCELLED_CODE)  # its records still commit
            elif me is None or me.cancelling():
                raise  # the host is closing
            else:  # raised by user code, not by a cancellation of this task: a failure
                out, failed = _attempt_failed(host, inv, ctx, e)
        except TerminalError as e:
            out = Outcome(False, None, e.message, e.status_code)
        except BaseException as e:  # Exception, JournalMismatch, SystemExit ... of user code
            out, failed = _attempt_failed(host, inv, ctx, e)
        metrics.attempt_latency(spec.definition.name, spec.name, time.monotonic() - started)
        if out is None:  # back off; a cancellation request ends that early: the next attempt
            # meets it
            await host.await_completion(
                inv, retry_index(inv.retry_count), [*ctx.take_records(), *failed]
            )
            continue
        records = [
            *ctx.take_records(),
            *failed,
            Output(inv.id, out.ok, out.output, out.failure, out.failure_code, now_ms()),
        ]
        return out, host.submit(inv, records)


def _attempt_failed(
    host: HostPort, inv: Invocation, ctx: InvocationContext, e: BaseException
) -> tuple[Outcome | None, list[Record]]:
    """Count a failed attempt, log it (once, with its traceback) and say what follows: the
    outcome if it ends the invocation, else None and the records of its retry back-off (a
    durable timer) to commit while waiting. Either way the attempt's ``AttemptFailed``."""
    policy = inv.spec.policy
    inv.retry_count += 1
    failure = describe(e)
    out = None
    if policy.exhausted(inv.retry_count):
        out = Outcome(False, None, f"gave up after {inv.retry_count} attempts: {failure}")
    elif inv.cancel_pending:  # it failed before it could see the cancellation
        out = Outcome(
            False, None, f"{CANCELLED} (its last attempt failed: {failure})", CANCELLED_CODE
        )
    if out is not None:
        event = ctx.failure_event(e, inv.retry_count, None)
        report(event, inv.spec.target, e, None)
        return out, [event]
    delay = policy.delay(inv.retry_count)
    fire_at = now_ms() + round(delay * 1000)
    event = ctx.failure_event(e, inv.retry_count, fire_at)
    report(event, inv.spec.target, e, delay)
    timer = Timer(
        f"{inv.id}:retry:{inv.retry_count}",
        inv.id,
        retry_index(inv.retry_count),
        TimerKind.RETRY,
        fire_at,
        host.name,
    )
    status = StatusChange(inv.id, InvocationStatus.BACKING_OFF, inv.retry_count, failure, now_ms())
    return None, [event, status, timer]

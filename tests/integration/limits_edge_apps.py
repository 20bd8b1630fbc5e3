"""Handlers at the edges of the concurrency and rate limits, for ``test_limits_edges``: a
limited object and workflow, nested and self calls under a limit, waiting invocations that are
cancelled or killed, a retry back-off, a service and handler limit side by side, many
short ones. Attempts mark
``enter``/``exit`` in a ledger outside the processes (as ``limits_apps`` does)."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import timedelta
from pathlib import Path

from pydantic import BaseModel

from actors import (
    Context,
    ObjectContext,
    RateLimit,
    RetryPolicy,
    Service,
    VirtualObject,
    Workflow,
    WorkflowContext,
    WorkflowSharedContext,
)
from tests.integration.apps import append
from tests.integration.limits_apps import solo  # its ``nap`` parks under concurrency=1


class Task(BaseModel):
    ledger: str
    n: int
    hold_s: float = 0.1
    gate: str | None = None  # hold the slot until this file exists
    marker: str | None = None  # fail the first attempt (the marker records that it did)


def _mark(ledger: str, what: str, n: int, tag: str = "") -> None:
    append(ledger, f"{what}{tag} {n} {os.getpid()} {time.time_ns()}")


async def _hold(task: Task, tag: str = "") -> int:
    _mark(task.ledger, "enter", task.n, tag)
    await asyncio.sleep(task.hold_s)
    while task.gate is not None and not os.path.exists(task.gate):
        await asyncio.sleep(0.02)
    _mark(task.ledger, "exit", task.n, tag)
    return task.n


# -- an object: exclusive handlers on several keys, two at once over all keys ---------------------

lim_obj = VirtualObject("LimObj", concurrency=2)


@lim_obj.handler()
async def obj_hold(ctx: ObjectContext, task: Task) -> int:
    ctx.set("n", task.n)
    return await _hold(task)


@lim_obj.handler()
async def obj_chain(ctx: ObjectContext, depth: int) -> int:
    """Calls the next key, ``depth`` deep: every caller keeps its key (exclusive) but gives
    its slot back while it awaits, so a chain deeper than the limit completes."""
    if depth == 0:
        return 0
    return 1 + await ctx.object_call(obj_chain, f"{ctx.key()}+", depth - 1)


# -- a workflow: one main at once; a main waiting on its promise holds no slot ----------------

lim_flow = Workflow("LimFlow")


@lim_flow.main(concurrency=1)
async def flow_run(ctx: WorkflowContext, task: Task) -> str:
    await ctx.run("start", append, task.ledger, f"start {ctx.key()}")
    code = await ctx.promise("go", str).value()
    await ctx.run("end", append, task.ledger, f"end {ctx.key()}")
    return f"{ctx.key()}:{code}"


@lim_flow.handler()
async def flow_go(ctx: WorkflowSharedContext, code: str) -> str:
    ctx.promise("go").resolve(code)
    return "ok"


# -- calls under limits: to itself, and to another limited service ----------------------------

nest = Service("Nest", concurrency=1)


@nest.handler()
async def recurse(ctx: Context, depth: int) -> int:
    """Calls itself ``depth`` times under ``concurrency=1``: each caller gives its slot back
    while it awaits the call, else the callee could never start."""
    if depth == 0:
        return 0
    return 1 + await ctx.service_call(recurse, depth - 1)


inner = Service("Inner", concurrency=1)


@inner.handler()
async def inner_work(ctx: Context, task: Task) -> int:
    return await _hold(task, ":inner")


outer = Service("Outer", concurrency=1)


@outer.handler()
async def outer_work(ctx: Context, task: Task) -> int:
    """Awaits a call to another limited service: its own slot is free meanwhile."""
    append(task.ledger, f"calling {task.n}")
    return await ctx.service_call(inner_work, task)


# -- one slot, held until a gate opens (for cancel and kill of the waiting ones) ----------------

gated = Service("Gated", concurrency=1)


@gated.handler()
async def gated_hold(ctx: Context, task: Task) -> int:
    await ctx.run("ran", append, task.ledger, f"ran {task.n}")
    return await _hold(task)


@gated.handler()
async def gated_nap(ctx: Context, task: Task) -> int:
    """Sleeps ``hold_s`` (without its slot), then asks for the slot again to go on."""
    await ctx.run("start", append, task.ledger, f"start {task.n}")
    await ctx.sleep(timedelta(seconds=task.hold_s))
    await _hold(Task(ledger=task.ledger, n=task.n))  # under the slot again
    await ctx.run("after", append, task.ledger, f"after {task.n}")
    return task.n


# -- a failing attempt backs off without its slot -------------------------------------------------

backoff = Service("Backoff", concurrency=1)


LONG_BACKOFF = RetryPolicy(
    initial_interval=timedelta(seconds=60), max_interval=timedelta(seconds=60), max_attempts=3
)


@backoff.handler(retry_policy=LONG_BACKOFF)
async def fail_once(ctx: Context, task: Task) -> int:
    await _hold(task)
    if task.marker is not None and not os.path.exists(task.marker):
        Path(task.marker).touch()
        raise RuntimeError("the first attempt fails")
    await ctx.run("done", append, task.ledger, f"done {task.n}")
    return task.n


# -- concurrency and rate on one service, and a handler's own limit beside it -------------------

combo = Service("Combo", concurrency=2, rate=RateLimit(5, per=timedelta(seconds=1)))


@combo.handler()
async def combo_a(ctx: Context, task: Task) -> int:
    return await _hold(task, ":a")


@combo.handler(concurrency=1)
async def combo_b(ctx: Context, task: Task) -> int:
    return await _hold(task, ":b")


# -- many short ones under a small limit -------------------------------------------------------

many = Service("Many", concurrency=2)


@many.handler()
async def short(ctx: Context, task: Task) -> int:
    _mark(task.ledger, "enter", task.n)
    await asyncio.sleep(0.002)
    _mark(task.ledger, "exit", task.n)
    return task.n


ALL = [lim_obj, lim_flow, nest, inner, outer, gated, backoff, combo, many, solo]

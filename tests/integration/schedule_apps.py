"""Handlers the schedule tests drive: each tick writes its start time and invocation id to a
ledger file (in ``ctx.run``, so once per invocation) outside the processes."""

from __future__ import annotations

import time

from actors import Context, ObjectContext, Service, VirtualObject
from tests.integration.apps import append

ticks = Service("Ticks")


def stamp(ledger: str, invocation_id: str, what: str) -> None:
    append(ledger, f"{what} {time.time_ns() // 1_000_000} {invocation_id}")


@ticks.handler()
async def tick(ctx: Context, ledger: str) -> None:
    await ctx.run("start", stamp, ledger, ctx.invocation_id(), "start")


@ticks.handler()
async def hold(ctx: Context, ledger: str) -> None:
    """Starts, publishes an awakeable and waits for it: a tick that runs until told."""
    awk_id, answer = ctx.awakeable()
    await ctx.run("start", stamp, ledger, ctx.invocation_id(), "start")
    await ctx.run("awk", append, ledger, f"awk {awk_id}")
    await answer


tick_obj = VirtualObject("TickObj")


@tick_obj.handler()
async def obj_tick(ctx: ObjectContext, ledger: str) -> None:
    await ctx.run("start", stamp, ledger, ctx.invocation_id(), "start")


SCHEDULE_APPS = [ticks, tick_obj]

"""The handlers the benchmarks drive (kept apart from the tests' handlers)."""

from __future__ import annotations

from actors import Context, ObjectContext, ObjectSharedContext, Service, VirtualObject

counter = VirtualObject("BenchCounter")


@counter.handler()
async def add(ctx: ObjectContext, delta: int) -> int:
    n = (await ctx.get("count")) or 0
    ctx.set("count", n + delta)
    return n + delta


@counter.handler(kind="shared")
async def get(ctx: ObjectSharedContext) -> int:
    return (await ctx.get("count")) or 0


steps = Service("BenchSteps")


def _inc(x: int) -> int:
    return x + 1


def _double(x: int) -> int:
    return x * 2


def _dec(x: int) -> int:
    return x - 1


@steps.handler()
async def three_steps(ctx: Context, x: int) -> int:
    """Three journaled side effects (plain sync functions, as most users write them)."""
    a = await ctx.run("inc", _inc, x)
    b = await ctx.run("double", _double, a)
    return await ctx.run("dec", _dec, b)


def three_steps_expected(x: int) -> int:
    return (x + 1) * 2 - 1


ALL = [counter, steps]


sleepy = Service("BenchSleepy")


@sleepy.handler()
async def nap_until(ctx: Context, due_epoch_s: float) -> None:
    """One durable timer due at an absolute time (so every timer of a run is pending at once
    however long the submission takes); the benchmark reads lateness from ``sys_timer``."""
    await ctx.sleep(max(due_epoch_s - await ctx.time(), 0))

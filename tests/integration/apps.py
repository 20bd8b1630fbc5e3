"""Handlers the integration tests drive. Side effects are counted in files (ledgers) so a count
survives the processes that made it; crash points are armed by marker files."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from pydantic import BaseModel

from actors import (
    Context,
    ObjectContext,
    ObjectSharedContext,
    RetryPolicy,
    Service,
    TerminalError,
    VirtualObject,
)


def append(path: str, line: str) -> None:
    """Append one line to a ledger file (atomic for short lines with O_APPEND)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def count(path: str, line: str) -> int:
    p = Path(path)
    return p.read_text().splitlines().count(line) if p.exists() else 0


def crash_once(marker: str) -> None:
    """Kill this process the first time (the marker file records that it happened)."""
    if not os.path.exists(marker):
        Path(marker).touch()
        os._exit(1)


async def wait_for_file(path: str) -> None:
    """Block a handler until ``path`` exists (the test opens the gate)."""
    while not os.path.exists(path):
        await asyncio.sleep(0.02)


class Job(BaseModel):
    ledger: str
    marker: str = ""
    gate: str = ""
    tag: str = ""


counter = VirtualObject("Counter")


@counter.handler()
async def add(ctx: ObjectContext, delta: int) -> int:
    n = (await ctx.get("count")) or 0
    ctx.set("count", n + delta)
    return n + delta


@counter.handler(kind="shared")
async def get(ctx: ObjectSharedContext) -> int:
    return (await ctx.get("count")) or 0


@counter.handler(kind="shared")
async def sneaky_set(ctx: ObjectSharedContext) -> None:
    ctx.set("count", 100)  # type: ignore[attr-defined]


@counter.handler()
async def reset(ctx: ObjectContext) -> list[str]:
    keys = await ctx.state_keys()
    ctx.clear_all()
    return keys


steps = VirtualObject("Steps")


@steps.handler()
async def two_steps(ctx: ObjectContext, job: Job) -> int:
    """Step a, then (armed) a crash inside step b, then a state change."""
    append(job.ledger, f"body:{ctx.key()}")
    await ctx.run("a", append, job.ledger, f"a:{ctx.key()}")

    def b() -> None:
        append(job.ledger, f"b:{ctx.key()}")
        if job.marker:
            crash_once(job.marker)

    await ctx.run("b", b)
    n = (await ctx.get("n")) or 0
    ctx.set("n", n + 1)
    return n + 1


@steps.handler()
async def gated(ctx: ObjectContext, job: Job) -> str:
    """Step a is journaled, then step b waits at a gate; used to kill hosts mid-handler."""
    await ctx.run("a", append, job.ledger, f"a:{ctx.key()}:{job.tag}")

    async def b() -> str:
        append(job.ledger, f"b:{ctx.key()}:{job.tag}")
        await wait_for_file(job.gate)
        return "opened"

    return await ctx.run("b", b)


@steps.handler()
async def exclusive(ctx: ObjectContext, job: Job) -> None:
    """Records enter/exit so tests can check exclusive handlers of a key never overlap."""
    append(job.ledger, f"enter:{ctx.key()}:{job.tag}")
    await asyncio.sleep(0.01)
    if job.marker:
        await ctx.run("maybe_crash", crash_once, job.marker)
    append(job.ledger, f"exit:{ctx.key()}:{job.tag}")


@steps.handler()
async def unserializable(ctx: ObjectContext) -> None:
    await ctx.run("obj", lambda: object())


@steps.handler(retry_policy=RetryPolicy(max_attempts=3))
async def diverge(ctx: ObjectContext, job: Job) -> None:
    """The first attempt runs step 'a' then fails; later attempts take another path."""
    if not os.path.exists(job.marker):
        await ctx.run("a", append, job.ledger, "a")
        Path(job.marker).touch()
        raise RuntimeError("first attempt fails")
    await ctx.run("b", append, job.ledger, "b")


@steps.handler(retry_policy=RetryPolicy(max_attempts=2))
async def always_fails(ctx: ObjectContext) -> None:
    raise RuntimeError("boom")


@steps.handler()
async def flaky(ctx: ObjectContext, job: Job) -> int:
    """Fails twice (counted in the ledger), then succeeds; step 'a' must run once."""
    await ctx.run("a", append, job.ledger, "a")
    append(job.ledger, "attempt")
    if count(job.ledger, "attempt") < 3:
        raise RuntimeError("flaky")
    return count(job.ledger, "attempt")


@steps.handler()
async def terminal(ctx: ObjectContext, job: Job) -> None:
    async def charge() -> None:
        append(job.ledger, "charge")
        raise TerminalError("card declined", 402)

    await ctx.run("charge", charge)


workflow_like = Service("Pipeline")


@workflow_like.handler()
async def three_steps(ctx: Context, x: int) -> int:
    a = await ctx.run("one", lambda: x + 1)
    b = await ctx.run("two", lambda: a * 2)
    return await ctx.run("three", lambda: b - 1)


@workflow_like.handler()
async def deterministic(ctx: Context) -> dict:
    return {"rand": ctx.rand.random(), "uuid": str(ctx.rand.uuid4()), "time": await ctx.time(),
            "id": ctx.invocation_id()}


dedicated = VirtualObject("Heavy", placement="dedicated")


@dedicated.handler()
async def bump(ctx: ObjectContext) -> int:
    n = (await ctx.get("n")) or 0
    ctx.set("n", n + 1)
    return n + 1


@dedicated.handler(kind="shared")
async def pid(ctx: ObjectSharedContext) -> int:
    return os.getpid()



@steps.handler()
async def set_then_crash(ctx: ObjectContext, job: Job) -> int:
    """A state change, a journaled step, then a crash inside the next step (once)."""
    n = (await ctx.get("n")) or 0
    ctx.set("n", n + 1)
    await ctx.run("a", append, job.ledger, f"a:{ctx.key()}")
    await ctx.run("b", crash_once, job.marker)
    return n + 1


ALL = [counter, steps, workflow_like, dedicated]


class Nap(BaseModel):
    ledger: str
    seconds: float
    tag: str = ""


sleeper = VirtualObject("Sleeper")


@sleeper.handler()
async def nap(ctx: ObjectContext, job: Nap) -> dict:
    """Journals its start time, sleeps, then journals the wake time (each step counted)."""
    started = await ctx.run("start", lambda: __import__("time").time())
    append(job.ledger, f"before:{ctx.key()}:{job.tag}")
    await ctx.sleep(job.seconds)
    woke = await ctx.run("woke", lambda: __import__("time").time())
    append(job.ledger, f"after:{ctx.key()}:{job.tag}")
    return {"started": started, "woke": woke}


@sleeper.handler()
async def stamp(ctx: ObjectContext, job: Nap) -> float:
    """For delayed sends: records when it ran."""
    t = await ctx.run("now", lambda: __import__("time").time())
    append(job.ledger, f"ran:{ctx.key()}:{job.tag}")
    return t



@steps.handler()
async def fan_out(ctx: ObjectContext, job: Job) -> list[str]:
    """Sends to three children and one delayed stamp, then (armed) crashes: the replay sends
    the same invocations again, and each child must still run once."""
    ids = [ctx.object_send(exclusive, f"{ctx.key()}-child",
                           Job(ledger=job.ledger, tag=f"child{i}")) for i in range(3)]
    ids.append(ctx.object_send("Sleeper/stamp", f"{ctx.key()}-later",
                               Nap(ledger=job.ledger, seconds=0, tag="later"), delay=0.5))
    if job.marker:
        await ctx.run("crash", crash_once, job.marker)
    return ids



@steps.handler()
async def bad_send(ctx: ObjectContext) -> None:
    ctx.service_send("Nope/handler", 1)


ALL.append(sleeper)

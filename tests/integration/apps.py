"""Handlers the integration tests drive. Side effects are counted in files (ledgers) so a count
survives the processes that made it; crash points are armed by marker files."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from actors import (
    AlreadyCompletedError,
    Context,
    ObjectContext,
    ObjectSharedContext,
    RetryPolicy,
    Service,
    TerminalError,
    VirtualObject,
    Workflow,
    WorkflowContext,
    WorkflowSharedContext,
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


async def crash_once_after(marker: str, ledger: str, lines: list[str]) -> None:
    """``crash_once``, but first wait (30 s at most) until ``ledger`` holds all of ``lines``,
    and record how many it held (``crash:<n>/<all>``)."""
    if os.path.exists(marker):
        return
    deadline = time.monotonic() + 30
    while not all(count(ledger, line) for line in lines) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    append(ledger, f"crash:{sum(count(ledger, line) > 0 for line in lines)}/{len(lines)}")
    crash_once(marker)


def enter_link(ledger: str, key: str) -> None:
    """Records a chain link's entry, and which host actor ran it."""
    import ray

    append(ledger, f"enter:{key}")
    append(ledger, f"host:{key}:{ray.get_runtime_context().get_actor_name()}")


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
async def step_then_exit(ctx: ObjectContext, job: Job) -> int:
    """Guarantee 1: step a returned, then the process exits in plain code (once, armed by the
    marker) before anything else is journaled; step a must not run again. Tag "sleep-first":
    a durable sleep before step a, so that under ``RAYSTATE_ALWAYS_REPLAY`` step a runs in a
    replayed attempt."""
    if job.tag == "sleep-first":
        await ctx.sleep(0)
    await ctx.run("a", append, job.ledger, f"a:{ctx.key()}")
    if job.marker:
        crash_once(job.marker)
    await ctx.run("b", append, job.ledger, f"b:{ctx.key()}")
    return count(job.ledger, f"a:{ctx.key()}")


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
    return {
        "rand": ctx.rand.random(),
        "uuid": str(ctx.rand.uuid4()),
        "time": await ctx.time(),
        "id": ctx.invocation_id(),
    }


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
    """Sends to three children, one delayed stamp and a service, then (armed) crashes once all
    of them have run: the replay sends the same invocations again, and each must run once."""
    ids = [
        ctx.object_send(exclusive, f"{ctx.key()}-child", Job(ledger=job.ledger, tag=f"child{i}"))
        for i in range(3)
    ]
    ids.append(
        ctx.object_send(
            "Sleeper/stamp",
            f"{ctx.key()}-later",
            Nap(ledger=job.ledger, seconds=0, tag="later"),
            delay=0.5,
        )
    )
    ids.append(ctx.service_send("Pipeline/note", Job(ledger=job.ledger, tag="svc")))
    if job.marker:
        delivered = [f"exit:{ctx.key()}-child:child{i}" for i in range(3)]
        delivered += [f"ran:{ctx.key()}-later:later", "note:svc"]
        await ctx.run("crash", crash_once_after, job.marker, job.ledger, delivered)
    return ids


@steps.handler()
async def bad_send(ctx: ObjectContext) -> None:
    ctx.service_send("Nope/handler", 1)


@steps.handler()
async def bad_key_send(ctx: ObjectContext) -> None:
    ctx.object_send("Steps/bad_send", "\ud800")


ALL.append(sleeper)


# -- RPC: awaited calls between handlers -------------------------------------------------------


class Hop(BaseModel):
    ledger: str
    markers: str = ""  # a directory: crash points are armed by it, one marker file each
    keys: list[str] = []
    gate: str = ""


caller = VirtualObject("Caller")


@caller.handler()
async def chain(ctx: ObjectContext, hop: Hop) -> list[str]:
    """One link of a call chain: a journaled step, (armed) a crash, a call to the next key, a
    crash after the call returned, then a state change. Returns the keys the chain visited."""
    me = ctx.key()
    await ctx.run("enter", enter_link, hop.ledger, me)
    if hop.markers:
        await ctx.run("crash-before", crash_once, f"{hop.markers}/{me}-before")
    rest: list[str] = []
    if hop.keys:
        nxt = hop.model_copy(update={"keys": hop.keys[1:]})
        rest = await ctx.object_call(chain, hop.keys[0], nxt)
    if hop.markers:
        await ctx.run("crash-after", crash_once, f"{hop.markers}/{me}-after")
    ctx.set("visits", ((await ctx.get("visits")) or 0) + 1)
    return [me, *rest]


@caller.handler()
async def call_gated(ctx: ObjectContext, job: Job) -> str:
    """Calls ``Steps/gated`` (another service, so another host) and journals the answer."""
    answer = await ctx.object_call(gated, f"{ctx.key()}-callee", job)
    await ctx.run("got", append, job.ledger, f"got:{answer}")
    return answer


@caller.handler()
async def catch_terminal(ctx: ObjectContext, job: Job) -> str:
    try:
        await ctx.object_call(terminal, f"{ctx.key()}-callee", job)
    except TerminalError as e:
        return f"caught {e.status_code} {e.message}"
    return "not raised"


@caller.handler()
async def self_call(ctx: ObjectContext) -> int:
    return await ctx.object_call(self_call, ctx.key())


@caller.handler()
async def via_proxies(ctx: ObjectContext) -> list[int]:
    n = await ctx.object_client(counter, ctx.key()).add(2)
    m = await ctx.object_client("Counter", ctx.key()).get()
    s = await ctx.service_call(three_steps, 5)
    return [n, m, s]


class Nest(BaseModel):
    ledger: str
    child_key: str = ""
    seconds: float = 3600


@caller.handler()
async def parent(ctx: ObjectContext, nest: Nest) -> str:
    """Waits on a child that sleeps; compensates (once) when cancelled."""
    try:
        return await ctx.object_call(child, nest.child_key, nest)
    except TerminalError:
        await ctx.run("compensate", append, nest.ledger, f"compensate:parent:{ctx.key()}")
        raise


@caller.handler()
async def child(ctx: ObjectContext, nest: Nest) -> str:
    await ctx.run("enter", append, nest.ledger, f"enter:child:{ctx.key()}")
    try:
        await ctx.sleep(nest.seconds)
    except TerminalError:
        await ctx.run("compensate", append, nest.ledger, f"compensate:child:{ctx.key()}")
        raise
    return "slept"


@caller.handler()
async def hold(ctx: ObjectContext, nest: Nest) -> str:
    """Holds its key: a step, then a long sleep (or a gate)."""
    await ctx.run("enter", append, nest.ledger, f"enter:hold:{ctx.key()}")
    try:
        await ctx.sleep(nest.seconds)
    finally:
        await ctx.run("finally", append, nest.ledger, f"finally:hold:{ctx.key()}")
    return "held"


ALL.append(caller)


# -- awakeables and workflows ------------------------------------------------------------------


class Wait(BaseModel):
    ledger: str
    gate: str = ""  # if set, the handler waits for this file before awaiting the awakeable


approval = VirtualObject("Approval")


@approval.handler()
async def await_approval(ctx: ObjectContext, w: Wait) -> str:
    """Publishes an awakeable id (in the ledger), then waits for it (typed: str)."""
    awk_id, answer = ctx.awakeable(str)
    await ctx.run("publish", append, w.ledger, f"awk:{ctx.key()}:{awk_id}")
    if w.gate:
        await ctx.run("gate", wait_for_file, w.gate)
    try:
        value = await answer
    except TerminalError as e:
        value = f"rejected:{e.message}"
    await ctx.run("got", append, w.ledger, f"got:{ctx.key()}:{value}")
    return value


@approval.handler()
async def approve(ctx: ObjectContext, awk_id: str) -> None:
    ctx.resolve_awakeable(awk_id, "from-handler")


class Resolve(BaseModel):
    awk: str
    value: str = "from-handler"
    times: int = 1
    reject: bool = False


@approval.handler()
async def resolve_awaited(ctx: ObjectContext, r: Resolve) -> list[str]:
    """Resolves (or rejects) an awakeable ``times`` times, awaiting each verdict."""
    verdicts = []
    for _ in range(r.times):
        try:
            if r.reject:
                await ctx.reject_awakeable(r.awk, r.value)
            else:
                await ctx.resolve_awakeable(r.awk, r.value)
            verdicts.append("delivered")
        except AlreadyCompletedError as e:
            verdicts.append(f"already:{e.status_code}")
        except TerminalError as e:
            verdicts.append(f"refused:{e.status_code}")
    return verdicts


class Signup(BaseModel):
    email: str
    ledger: str


signup = Workflow("Signup")


@signup.main()
async def signup_run(ctx: WorkflowContext, req: Signup) -> str:
    await ctx.run("mail", append, req.ledger, f"mail:{ctx.key()}")
    ctx.set("stage", "waiting")
    code = await ctx.promise("confirmed", str).value()
    ctx.set("stage", "done")
    await ctx.run("done", append, req.ledger, f"done:{ctx.key()}")
    return f"{req.email} confirmed with {code}"


@signup.handler()
async def confirm(ctx: WorkflowSharedContext, code: str) -> str:
    ctx.promise("confirmed").resolve(code)
    return "ok"


@signup.handler()
async def refuse(ctx: WorkflowSharedContext, why: str) -> None:
    ctx.promise("confirmed").reject(why)


@signup.handler()
async def stage(ctx: WorkflowSharedContext) -> dict:
    return {"stage": await ctx.get("stage"), "peek": await ctx.promise("confirmed").peek()}


ALL += [approval, signup]


# -- RPC to workflows and services ---------------------------------------------------------------


report = Workflow("Report")


@report.main()
async def report_run(ctx: WorkflowContext, job: Job) -> str:
    """A workflow run that finishes on its own: one counted step, (gated) then a state."""
    await ctx.run("write", append, job.ledger, f"report:{ctx.key()}")
    if job.gate:
        await ctx.run("gate", wait_for_file, job.gate)
    ctx.set("stage", "done")
    return f"report {ctx.key()}"


@report.handler()
async def report_stage(ctx: WorkflowSharedContext) -> str | None:
    return await ctx.get("stage")


@caller.handler()
async def run_report(ctx: ObjectContext, job: Job) -> list[str | None]:
    """Calls the main of workflow ``job.tag``, then its shared handler."""
    out = await ctx.workflow_call(report_run, job.tag, job)
    return [out, await ctx.workflow_call(report_stage, job.tag)]


@caller.handler()
async def start_report(ctx: ObjectContext, job: Job) -> list[str]:
    """Sends to the main of workflow ``job.tag`` and to its shared handler; returns the ids."""
    return [ctx.workflow_send(report_run, job.tag, job), ctx.workflow_send(report_stage, job.tag)]


@workflow_like.handler()
async def gated_service(ctx: Context, job: Job) -> str:
    """A service handler that records its entry, then waits at a gate."""
    await ctx.run("enter", append, job.ledger, f"enter:svc:{job.tag}")
    await ctx.run("gate", wait_for_file, job.gate)
    return job.tag


@workflow_like.handler()
async def note(ctx: Context, job: Job) -> str:
    await ctx.run("note", append, job.ledger, f"note:{job.tag}")
    return job.tag


ALL.append(report)


@steps.handler()
async def wrong_output(ctx: ObjectContext) -> int:
    """Returns a string although annotated ``-> int``: a recorded 500, never a success."""
    return "not an int"  # type: ignore[return-value]


@counter.handler()
async def remember(ctx: ObjectContext, value: Any) -> Any:
    """Stores any JSON value (NaN and Infinity must never reach here)."""
    ctx.set("remembered", value)
    return value

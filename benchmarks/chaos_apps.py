"""The chaos workload's handlers. Every side effect is written to a ledger file outside the
processes (one line per execution; the format is in ``benchmarks.chaos_checks``), and crash
points consume "crash tokens" that the fault injector drops into a directory: whichever handler
takes one exits its process at once. Two kinds of token: ``token-*`` is taken at crash points
in a handler's code (inside a ``ctx.run``, or right after a ``ctx.set`` before it commits);
``await-*`` only while a handler awaits a sleep or a call (a timer armed before the await)."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import ray
from pydantic import BaseModel

from actors import (
    Context,
    ObjectContext,
    ObjectSharedContext,
    RetryPolicy,
    Service,
    VirtualObject,
)

RESOLVER = "chaos-resolver"


def append(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


CRASH_TOKEN = "token-"
AWAIT_TOKEN = "await-"


def take_crash_token(crash_dir: str, prefix: str = CRASH_TOKEN) -> bool:
    """Exit this process if a crash token of this kind is waiting (each is taken once)."""
    for name in sorted(os.listdir(crash_dir)) if os.path.isdir(crash_dir) else []:
        if name.startswith(prefix):
            try:
                os.rename(Path(crash_dir) / name, Path(crash_dir) / f"taken-{name}-{os.getpid()}")
            except OSError:
                continue  # someone else took it
            append(str(Path(crash_dir).parent / "ledger.txt"), f"dead {os.getpid()}")
            os._exit(17)
    return False


def exit_while_waiting(job: Job, after: float) -> Callable[[], None]:
    """Arm an exit of this process ``after`` seconds from now, taken only if the handler is
    still waiting then and an await token is there; returns the disarming function (call it
    once the wait is over). A handler that leaves memory to wait stays armed: the process may
    then die with the invocation parked mid-sleep."""
    waiting = True

    def fire() -> None:
        if waiting:
            take_crash_token(job.crash_dir, AWAIT_TOKEN)

    handle = asyncio.get_running_loop().call_later(after, fire)

    def disarm() -> None:
        nonlocal waiting
        waiting = False
        handle.cancel()

    return disarm


def record_run(ledger: str, invocation: str, step: str, attempt: str) -> str:
    """A journaled side effect: one ledger line per execution, tagged with this process and
    attempt and with a fresh nonce that the journal keeps as the step's result (so the checker
    can tell the journaled execution from the others)."""
    nonce = uuid.uuid4().hex[:12]
    append(ledger, f"run {invocation} {step} {nonce} {os.getpid()} {attempt}")
    return nonce


class Job(BaseModel):
    ledger: str
    crash_dir: str
    namespace: str = ""
    seconds: float = 0.0
    target: str = ""


async def crash_point(ctx: Context, job: Job, name: str) -> None:
    await ctx.run(name, take_crash_token, job.crash_dir)


counter = VirtualObject("ChaosCounter")


def enter(ctx: ObjectContext, job: Job) -> Callable[[], None]:
    """Write this exclusive handler's enter line; returns the function writing its exit line
    (the checker proves from them that a key's handlers never overlap)."""
    me, key, pid = ctx.invocation_id(), ctx.key(), os.getpid()
    append(job.ledger, f"enter {key} {me} {pid}")
    return lambda: append(job.ledger, f"exit {key} {me} {pid}")


@counter.handler()
async def add(ctx: ObjectContext, job: Job) -> int:
    """An increment; with ``job.seconds`` it first sleeps (a relay's call, so that the caller
    waits a while). Crash points: in a ``ctx.run``, and after the ``set`` before it commits."""
    leave = enter(ctx, job)
    await crash_point(ctx, job, "crash")
    if job.seconds:
        await ctx.sleep(job.seconds)
    n = (await ctx.get("n")) or 0
    ctx.set("n", n + 1)
    take_crash_token(job.crash_dir)  # not journaled: the set and the output are not durable
    leave()
    return n + 1


@counter.handler(kind="shared")
async def value(ctx: ObjectSharedContext) -> int:
    return (await ctx.get("n")) or 0


@counter.handler()
async def relay(ctx: ObjectContext, job: Job) -> int:
    """One call and one send, each an increment of its own key, around a crash point; the call
    sleeps ``job.seconds`` in the callee, and an exit may come while the caller waits."""
    leave = enter(ctx, job)
    disarm = exit_while_waiting(job, job.seconds / 2)
    n = await ctx.object_call(add, f"call-{job.target}", job)
    disarm()
    await crash_point(ctx, job, "crash")
    ctx.object_send(add, f"send-{job.target}", job.model_copy(update={"seconds": 0.0}))
    leave()
    return n


steps = Service("ChaosSteps")


@steps.handler()
async def ping(ctx: Context) -> None:
    """Nothing: brings the service's hosts up before the measured run."""


@steps.handler()
async def three(ctx: Context, job: Job) -> list[str]:
    attempt = uuid.uuid4().hex[:8]  # not journaled: tells this attempt's executions apart
    out = []
    for i in range(3):
        out.append(
            await ctx.run(
                f"step{i}", record_run, job.ledger, ctx.invocation_id(), f"step{i}", attempt
            )
        )
        await crash_point(ctx, job, f"crash{i}")
    return out


@steps.handler()
async def nap(ctx: Context, job: Job) -> float:
    """Sleeps; returns the journaled wake-up time (the checker compares it with the timer)."""
    await crash_point(ctx, job, "crash")
    disarm = exit_while_waiting(job, job.seconds / 2)
    await ctx.sleep(job.seconds)
    disarm()
    return await ctx.time()


def outside(namespace: str) -> str:
    """The namespace of the actors that play the outside world: not the runtime's, so a full
    runtime restart (which stops every actor of its namespace) leaves them running."""
    return f"{namespace}-outside"


def ask_resolver(namespace: str, awakeable_id: str) -> None:
    """Hand the resolver the id, and return once it has it: a fire-and-forget ``.remote()``
    still inside this process when a fault kills it would be lost with it, although the
    ``ctx.run`` that sent it may already be journaled (a side effect must be done, not just
    started, when its action returns)."""
    ray.get(
        ray.get_actor(RESOLVER, namespace=outside(namespace)).ask.remote(awakeable_id), timeout=60
    )


@steps.handler()
async def approval(ctx: Context, job: Job) -> str:
    awk_id, answer = ctx.awakeable(str)
    await ctx.run("ask", ask_resolver, job.namespace, awk_id)
    await crash_point(ctx, job, "crash")
    return await answer


class Resolver:
    """Outside the handlers: resolves every awakeable it is asked about (again after a lost
    acknowledgement: a second resolution is refused, which counts as done)."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.resolved = 0
        self.refused = 0
        self._rt = None
        self._tasks: set[asyncio.Future[None]] = set()

    async def ask(self, awakeable_id: str) -> None:
        """Take the id (and return at once); resolve it in the background."""
        task = asyncio.ensure_future(self._resolve(awakeable_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve(self, awakeable_id: str) -> None:
        from actors import AlreadyCompletedError, Runtime
        from journal.retry import Backoff, retry

        if self._rt is None:
            self._rt = Runtime.connect(namespace=self.namespace)
        rt = self._rt
        try:
            await retry(
                lambda: rt.resolve_awakeable_async(awakeable_id, f"ok:{awakeable_id}"),
                when=lambda e: not isinstance(e, AlreadyCompletedError),
                backoff=Backoff(0.1, 2.0, 2.0),
            )
        except AlreadyCompletedError:
            self.refused += 1
            return
        self.resolved += 1

    def counts(self) -> dict[str, int]:
        return {"resolved": self.resolved, "refused_second": self.refused}


# -- poison: handlers whose user code raises what is not an Exception ---------------------------

POISON_KINDS = ("exit", "interrupt", "bare", "run-exit")


class Poison(BaseException):
    """A bare ``BaseException`` subclass, as a careless library might raise one."""


class Dose(BaseModel):
    work_dir: str
    kind: str  # one of POISON_KINDS
    failing: int  # attempts that fail; a huge number: every one (the injector kills it)


@steps.handler(
    retry_policy=RetryPolicy(
        initial_interval=timedelta(milliseconds=10), max_interval=timedelta(milliseconds=200)
    )
)
async def poisoned(ctx: Context, dose: Dose) -> int:
    """Fails its first ``dose.failing`` attempts with ``SystemExit``, ``KeyboardInterrupt``, a
    bare ``BaseException`` or ``sys.exit()`` in a ``ctx.run``'s thread; each must be a failed
    attempt (retried) while the host serves on. Returns the attempts it took (counted in a
    file of its own, outside the processes)."""
    attempts_file = Path(dose.work_dir) / f"poison-{ctx.invocation_id()}"
    append(str(attempts_file), "attempt")
    attempts = len(attempts_file.read_text().splitlines())
    if attempts <= dose.failing:
        if dose.kind == "run-exit":
            await ctx.run("poison", sys.exit, 3)
        elif dose.kind == "exit":
            raise SystemExit(3)
        elif dose.kind == "interrupt":
            raise KeyboardInterrupt
        raise Poison("poisoned")
    return attempts


def poison_attempts(work_dir: str, invocation_id: str) -> int:
    path = Path(work_dir) / f"poison-{invocation_id}"
    return len(path.read_text().splitlines()) if path.exists() else 0


ALL = [counter, steps]

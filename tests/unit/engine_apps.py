"""Handlers and a small harness the engine unit tests drive (no Ray).

Side effects are counted in module-level collections that ``test_engine`` resets before each
test; ``EVENTS`` and ``BLOCKING`` let a test hold a handler or a step at a known point.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from actors.cluster.names import new_invocation_id, route_hash
from actors.host.object_host import ObjectHost
from actors.host.ports import JournalPort
from actors.host.requests import InvokeRequest
from actors.sdk.contexts import Context, ObjectContext, ObjectSharedContext
from actors.sdk.definitions import Service, VirtualObject, spec_of
from actors.sdk.errors import RetryPolicy, TerminalError
from journal.actor import GroupCommitJournal
from journal.records import Accept, Batch, Outcome, PendingInvocation, Timer

FAST = RetryPolicy(initial_interval=timedelta(0))
TWO_ATTEMPTS = RetryPolicy(initial_interval=timedelta(0), max_attempts=2)
TIMEOUT = 10.0

CALLS: Counter[str] = Counter()  # executions of handler bodies and side effects
LOG: list[tuple[str, str]] = []  # (event, name) in the order things happened
SEEN: list[dict[str, Any]] = []  # values handlers observed, per attempt
EVENTS: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
BLOCKING: set[str] = set()  # names of steps that block until their "release:" event
FLAKY: list[FlakyJournal] = []


# -- handlers driven by the host ----------------------------------------------------------------

counter = VirtualObject("Counter", retry_policy=FAST)


@counter.handler()
async def add(ctx: ObjectContext, delta: int) -> int:
    n = (await ctx.get("count")) or 0
    ctx.set("count", n + delta)
    return n + delta


@counter.handler(kind="shared")
async def get(ctx: ObjectSharedContext) -> int:
    return (await ctx.get("count")) or 0


@counter.handler(kind="shared")
async def sneaky(ctx: ObjectSharedContext, op: str) -> None:
    if op == "set":
        ctx.set("count", 99)  # type: ignore[attr-defined]
    elif op == "clear":
        ctx.clear("count")  # type: ignore[attr-defined]
    else:
        ctx.clear_all()  # type: ignore[attr-defined]


@counter.handler()
async def reset(ctx: ObjectContext) -> list[str]:
    before = await ctx.state_keys()
    ctx.clear_all()
    return before


@counter.handler()
async def add_then_wait(ctx: ObjectContext, delta: int) -> int:
    n = (await ctx.get("count")) or 0
    ctx.set("count", n + delta)
    EVENTS["add_then_wait:entered"].set()
    await EVENTS["add_then_wait:release"].wait()
    return n + delta


steps = VirtualObject("Steps", retry_policy=FAST)


def step(name: str) -> str:
    CALLS[name] += 1
    return f"{name}-done"


async def async_step(name: str) -> str:
    CALLS[name] += 1
    EVENTS[f"in:{name}"].set()
    if name in BLOCKING:
        await EVENTS[f"release:{name}"].wait()
    return f"{name}-done"


@steps.handler()
async def two_steps(ctx: ObjectContext) -> list[str]:
    CALLS["two_steps"] += 1
    a = await ctx.run("a", step, "a")
    b = await ctx.run("b", async_step, "b")
    return [a, b]


@steps.handler()
async def flaky(ctx: ObjectContext) -> int:
    CALLS["flaky"] += 1
    n = (await ctx.get("n")) or 0
    ctx.set("n", n + 1)
    await ctx.run("side", step, "side")
    if CALLS["flaky"] == 1:
        raise RuntimeError("first attempt fails")
    return n + 1


@steps.handler()
async def randomish(ctx: ObjectContext) -> dict[str, Any]:
    CALLS["randomish"] += 1
    seen = {
        "r": ctx.rand.random(),
        "u": str(ctx.rand.uuid4()),
        "t": await ctx.time(),
        "id": ctx.invocation_id(),
        "key": ctx.key(),
    }
    SEEN.append(seen)
    await ctx.run("side", step, "side")
    if CALLS["randomish"] == 1:
        raise RuntimeError("replay me")
    return {**seen, "r2": ctx.rand.random(), "t2": await ctx.time()}


@steps.handler(retry_policy=TWO_ATTEMPTS)
async def diverge(ctx: ObjectContext) -> str:
    CALLS["diverge"] += 1
    return await ctx.run("b", step, "b")


@steps.handler(retry_policy=TWO_ATTEMPTS)
async def set_new(ctx: ObjectContext) -> None:
    ctx.set("x", "new")
    await ctx.run("after", step, "after")


@steps.handler()
async def retried_step(ctx: ObjectContext, failures: int) -> str:
    def sometimes() -> str:
        CALLS["sometimes"] += 1
        if CALLS["sometimes"] <= failures:
            raise ConnectionError(f"failure {CALLS['sometimes']}")
        return "finally"

    return await ctx.run(
        "sometimes",
        sometimes,
        retry_policy=RetryPolicy(initial_interval=timedelta(0), max_attempts=3),
    )


svc = Service("Payments", retry_policy=FAST)


def decline(amount: int) -> str:
    CALLS["decline"] += 1
    raise TerminalError(f"card declined for {amount}", 402)


@svc.handler()
async def charge(ctx: Context, amount: int) -> str:
    CALLS["charge"] += 1
    return await ctx.run("charge", decline, amount)


def make_object() -> Any:
    CALLS["make_object"] += 1
    return object()


@svc.handler()
async def bad_result(ctx: Context) -> None:
    await ctx.run("obj", make_object)


@svc.handler()
async def keyless_state(ctx: Context) -> Any:
    return await ctx.get("x")  # type: ignore[attr-defined]


@svc.handler()
async def echo(ctx: Context, n: int) -> int:
    CALLS["echo"] += 1
    return n


gate = VirtualObject("Gate", retry_policy=FAST)


@gate.handler()
async def hold(ctx: ObjectContext, name: str) -> str:
    LOG.append(("enter", name))
    EVENTS[f"entered:{name}"].set()
    await EVENTS[f"release:{name}"].wait()
    LOG.append(("exit", name))
    return name


@gate.handler(kind="shared")
async def peek(ctx: ObjectSharedContext, name: str) -> str:
    LOG.append(("shared-enter", name))
    EVENTS[f"entered:{name}"].set()
    await EVENTS[f"release:{name}"].wait()
    LOG.append(("shared-exit", name))
    return name


@gate.handler()
async def ordered(ctx: ObjectContext, name: str) -> str:
    LOG.append(("enter", name))
    EVENTS[f"entered:{name}"].set()
    if name in BLOCKING:
        await EVENTS[f"release:{name}"].wait()
    await ctx.run("one", step, f"{name}.one")
    await ctx.run("two", async_step, f"{name}.two")
    LOG.append(("exit", name))
    return name


flaky_obj = VirtualObject("FlakyObj", retry_policy=FAST)


def arm_commit_failure() -> None:
    FLAKY[0].fail_next = 1


@flaky_obj.handler()
async def set_then_steps(ctx: ObjectContext) -> Any:
    ctx.set("x", 1)
    await ctx.run("a", arm_commit_failure)
    await ctx.run("b", step, "b")
    return await ctx.get("x")


# -- harness ------------------------------------------------------------------------------------


class FlakyJournal:
    """A JournalPort whose next ``fail_next`` commits (``fail_pending`` recovery reads) fail:
    the journal was unreachable."""

    def __init__(self, inner: GroupCommitJournal) -> None:
        self.inner = inner
        self.fail_next = 0
        self.fail_pending = 0

    async def commit(self, batch: Batch) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionError("journal unreachable")
        await self.inner.commit(batch)

    async def writer_epoch(self) -> int | None:
        return await self.inner.writer_epoch()

    async def outcome(self, invocation_id: str) -> Outcome | None:
        return await self.inner.outcome(invocation_id)

    async def pending(
        self, services: list[str], partition: tuple[int, int] | None = None, key: str | None = None
    ) -> list[PendingInvocation]:
        if self.fail_pending:
            self.fail_pending -= 1
            raise ConnectionError("journal unreachable")
        return await self.inner.pending(services, partition, key)

    async def load_states(self, service: str, keys: list[str]) -> dict[str, dict[str, str]]:
        return await self.inner.load_states(service, keys)

    async def state_key_filter(self, service: str) -> bytes:
        return await self.inner.state_key_filter(service)

    async def pending_timers(self, host: str | None = None) -> list[Timer]:
        return await self.inner.pending_timers(host)

    async def fired_open_timers(self) -> list[Timer]:
        return await self.inner.fired_open_timers()


class World:
    """A journal on a data dir and the hosts a test makes on it."""

    def __init__(self, data_dir: Path) -> None:
        self.journal = GroupCommitJournal(str(data_dir))
        self.store = self.journal.store
        self.hosts: list[ObjectHost] = []

    def host(self, definition: Any, port: JournalPort | None = None) -> ObjectHost:
        h = ObjectHost(
            definition, port or self.journal, partition=(0, 1), secret=self.journal.secret
        )
        self.hosts.append(h)
        return h

    def run(self, body: Callable[[], Awaitable[Any]]) -> Any:
        async def main() -> Any:
            try:
                return await asyncio.wait_for(body(), TIMEOUT)
            finally:
                for h in self.hosts:
                    await h.close()

        return asyncio.run(main())

    def sql(self, query: str) -> list[dict[str, Any]]:
        return self.store.sql(query).to_pylist()

    def invocation(self, inv_id: str) -> dict[str, Any]:
        [row] = self.sql(f"SELECT * FROM sys_invocation WHERE id = '{inv_id}'")
        return row

    def journal_of(self, inv_id: str) -> list[tuple[int, str, str | None]]:
        return [
            (r["index"], r["entry_type"], r["name"])
            for r in self.sql(
                f"SELECT * FROM sys_journal WHERE invocation_id = '{inv_id}' ORDER BY index"
            )
        ]

    def prewrite(self, *records: Any) -> None:
        """Make a journal prefix durable directly, as if a host had crashed after writing it."""
        self.store.write([Batch(new_invocation_id(), list(records))])


def request(
    service: str,
    handler: str,
    key: str | None = None,
    arg: Any = None,
    *,
    inv_id: str | None = None,
    mode: str = "call",
    **kw: Any,
) -> InvokeRequest:
    inv_id = inv_id or new_invocation_id()
    return InvokeRequest(
        inv_id,
        service,
        handler,
        key,
        json.dumps(arg),
        mode,  # type: ignore[arg-type]
        route_hash=route_hash(service, key, inv_id),
        created_at_ms=int(time.time() * 1000),
        **kw,
    )


def accept_of(req: InvokeRequest) -> Accept:
    return Accept(
        req.id,
        req.service,
        req.handler,
        req.key,
        req.route_hash,
        req.input,
        created_at_ms=req.created_at_ms,
    )


# -- cancellation -------------------------------------------------------------------------------

saga = VirtualObject("Saga", retry_policy=FAST)


@saga.handler()
async def book(ctx: ObjectContext, name: str) -> str:
    """A step, a long sleep, and compensation when cancelled."""
    CALLS[f"{name}.body"] += 1
    await ctx.run("reserve", step, f"{name}.reserve")
    try:
        await ctx.sleep(3600)
    except TerminalError:
        await ctx.run("undo", step, f"{name}.undo")
        ctx.set("undone", name)
        raise
    return "slept"


@saga.handler()
async def ask(ctx: ObjectContext, name: str) -> str:
    """Creates an awakeable, hands its id out in a step, then waits for it."""
    awk_id, answer = ctx.awakeable(str)
    await ctx.run("ask", step, f"{name}.ask")
    EVENTS[f"asked:{name}"].set()
    SEEN.append({"awk": awk_id})
    return await answer


def outbox_request(
    target: Any,
    key: str | None,
    arg: Any,
    mode: str,
    *,
    delay: Any = None,
    invocation_id: str | None = None,
    invoked_by: str | None = None,
) -> tuple[Any, InvokeRequest]:
    """An outbox's ``request`` for in-process hosts: the handler's spec and the request."""
    spec = spec_of(target)
    assert spec is not None
    return spec, request(
        spec.definition.name,
        spec.name,
        key,
        arg,
        inv_id=invocation_id,
        mode=mode,
        invoked_by=invoked_by,
    )

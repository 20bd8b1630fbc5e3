"""A waiting invocation resumed with a completion before that completion is durable
(``ObjectHost.resume_ahead``), on one host against a real journal (no Ray): the records it
queues next share the completion's commit, and nothing it does is seen outside first. The
journal port holds every commit that carries a completion until the test opens it, so the
window between resuming and durability stays open as long as the test needs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors.host.object_host import ObjectHost
from actors.host.requests import InvokeRequest
from actors.sdk.contexts import Context, ObjectContext
from actors.sdk.definitions import Service, VirtualObject
from journal.actor import GroupCommitJournal
from journal.records import Batch, Completion, Entry, Outcome
from tests.unit.engine_apps import EVENTS, World, outbox_request, request

ahead = VirtualObject("Ahead")
ACTED: list[bool] = []  # per run of the step after the wait: was the completion durable?
COMMITTED = {"completion": False}


def hand_out(awakeable_id: str) -> str:
    return awakeable_id


def act() -> str:
    ACTED.append(COMMITTED["completion"])
    return "acted"


@ahead.handler()
async def wait_then_act(ctx: ObjectContext, name: str) -> str:
    awk_id, answer = ctx.awakeable(str)
    await ctx.run("hand out", hand_out, awk_id)
    EVENTS[f"asked:{name}"].set()
    value: str = await answer
    EVENTS[f"resumed:{name}"].set()
    ctx.set("answer", value)
    await ctx.run("act", act)
    return value


notes = Service("AheadNotes")


@notes.handler()
async def note(ctx: Context, value: str) -> None:
    pass


@ahead.handler()
async def wait_then_send(ctx: ObjectContext, name: str) -> str:
    awk_id, answer = ctx.awakeable(str)
    await ctx.run("hand out", hand_out, awk_id)
    EVENTS[f"asked:{name}"].set()
    value: str = await answer
    ctx.service_send(note, value)
    EVENTS[f"sent:{name}"].set()  # after the delivery's task was made: it runs first
    return value


class SendLog:
    """An outbox that keeps each send delivered: its callee's service, its argument, and
    whether the completion was durable by then. It outlives the hosts that send through it."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, bool]] = []

    request = staticmethod(outbox_request)

    async def submit(self, spec: Any, req: InvokeRequest) -> Outcome | None:
        self.sent.append((req.service, req.input, COMMITTED["completion"]))
        return None


class HeldJournal:
    """Holds a commit that carries a completion until ``open`` is set."""

    def __init__(self, inner: GroupCommitJournal) -> None:
        self.inner = inner
        self.held = asyncio.Event()
        self.open = asyncio.Event()
        self.batches: list[Batch] = []

    async def commit(self, batch: Batch) -> None:
        self.batches.append(batch)
        has_completion = any(type(r) is Completion for r in batch.records)
        if has_completion:
            self.held.set()
            await self.open.wait()
        await self.inner.commit(batch)
        if has_completion:
            COMMITTED["completion"] = True

    def __getattr__(self, name: str):  # reads go to the real journal
        return getattr(self.inner, name)


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    ACTED.clear()
    COMMITTED["completion"] = False
    EVENTS.clear()
    yield


async def _waiting(host: ObjectHost, req: InvokeRequest) -> None:
    """Until ``req`` waits for its awakeable (the step that handed it out committed)."""
    await EVENTS[f"asked:{json.loads(req.input)}"].wait()
    while req.id not in host._active or 0 not in host._active[req.id].waiters:
        await asyncio.sleep(0)


async def _resolved_while_waiting(
    host: ObjectHost, req: InvokeRequest, value: str
) -> tuple[asyncio.Future[Any], asyncio.Future[Any], str]:
    """Start ``req``, and resolve its awakeable with ``value`` once it waits: (the call, the
    resolution, the awakeable's id)."""
    call = asyncio.ensure_future(host.invoke(req))
    await _waiting(host, req)
    awk_id = host.awakeables.make(req.id, 0)
    return call, asyncio.ensure_future(host.resolve_awakeable(awk_id, value, None)), awk_id


async def _recovered_and_resolved(
    world: World, req: InvokeRequest, awk_id: str, value: str, outbox: SendLog | None = None
) -> None:
    """After the crash: a new host recovers ``req``, which waits for its awakeable again; it is
    resolved with ``value``, and the invocation returns it."""
    port = HeldJournal(world.journal)
    port.open.set()
    fresh = world.host(ahead, port)
    if outbox is not None:
        fresh.outbox = outbox  # type: ignore[assignment]
    await fresh.start()
    await _waiting(fresh, req)
    ok, message, code = await fresh.resolve_awakeable(awk_id, value, None)
    assert ok, (message, code)
    out = await fresh.invoke(
        request(
            req.service, req.handler, req.key, json.loads(req.input), inv_id=req.id, resubmit=True
        )
    )
    assert out is not None and out.ok and out.output == value


def test_resumed_before_durable_acts_only_after_and_shares_the_commit(data_dir: Path) -> None:
    world = World(data_dir)

    async def body() -> None:
        port = HeldJournal(world.journal)
        host = world.host(ahead, port)
        await host.start()
        req = request("Ahead", "wait_then_act", "k", "x")
        outcome, resolving, _ = await _resolved_while_waiting(host, req, '"yes"')
        await EVENTS["resumed:x"].wait()  # resumed while its completion is not durable
        await port.held.wait()
        assert not resolving.done(), "the resolver was answered before the commit"
        port.open.set()
        ok, message, code = await resolving
        assert ok, (message, code)
        out = await outcome
        assert out is not None and out.ok and out.output == '"yes"'
        held = next(b for b in port.batches if any(type(r) is Completion for r in b.records))
        kinds = [r.entry_type for r in held.records if type(r) is Entry]
        assert "set_state" in kinds, f"the state write after the wait got its own commit: {kinds}"

    world.run(body)
    assert ACTED == [True], "the step after the wait ran before the completion was durable"
    rows = world.sql(
        "SELECT value->>'$' AS v FROM state WHERE service_name = 'Ahead' AND key = 'answer'"
    )
    assert rows == [{"v": "yes"}]


def test_host_dying_before_the_commit_loses_nothing_and_acts_once(data_dir: Path) -> None:
    """The host dies (closed: its tasks, the held commit among them, are cancelled) after the
    handler resumed ahead and before its completion was durable: the resolver was never
    answered, so it resolves again on a new host, and the step after the wait runs once."""
    world = World(data_dir)
    req = request("Ahead", "wait_then_act", "k", "y")

    async def body() -> None:
        port = HeldJournal(world.journal)
        host = world.host(ahead, port)
        await host.start()
        # the call dies with the host
        first_call, resolving, awk_id = await _resolved_while_waiting(host, req, '"yes"')
        await EVENTS["resumed:y"].wait()
        await port.held.wait()
        await host.close()  # the crash
        first_call.cancel()
        assert not (resolving.done() and not resolving.cancelled()), "answered before durable"
        assert ACTED == [], "the step after the wait ran before the completion was durable"

        EVENTS.clear()
        await _recovered_and_resolved(world, req, awk_id, '"yes"')

    world.run(body)
    assert ACTED == [True], "the step after the wait ran twice, or before its completion"


def test_a_send_after_resuming_ahead_waits_for_the_completion_to_be_durable(data_dir: Path) -> None:
    """A send is delivered at once, before its own entry is durable (a replay sends the same
    request again, and the callee knows its id). Not so after resuming ahead: the value it
    resumed with is not durable yet, and a replay after a crash could resume with another one."""
    world = World(data_dir)

    async def body() -> None:
        port = HeldJournal(world.journal)
        host = world.host(ahead, port)
        outbox = host.outbox = SendLog()  # type: ignore[assignment]
        await host.start()
        req = request("Ahead", "wait_then_send", "k", "z")
        outcome, resolving, _ = await _resolved_while_waiting(host, req, '"yes"')
        await EVENTS["sent:z"].wait()
        await port.held.wait()
        assert outbox.sent == [], "the send was delivered before the completion was durable"
        port.open.set()
        ok, message, code = await resolving
        assert ok, (message, code)
        out = await outcome
        assert out is not None and out.ok and out.output == '"yes"'
        assert outbox.sent == [("AheadNotes", '"yes"', True)]

    world.run(body)


def test_host_dying_before_the_commit_sends_only_what_its_journal_holds(data_dir: Path) -> None:
    """The host dies after the handler resumed ahead with one value, before that value was
    durable; on a new host the awakeable is resolved with another. The one send that went out
    carries the second value (sent at once, the first would have gone out too)."""
    world = World(data_dir)
    req = request("Ahead", "wait_then_send", "k", "w")
    outbox = SendLog()

    async def body() -> None:
        port = HeldJournal(world.journal)
        host = world.host(ahead, port)
        host.outbox = outbox  # type: ignore[assignment]
        await host.start()
        first_call, _, awk_id = await _resolved_while_waiting(host, req, '"first"')
        await EVENTS["sent:w"].wait()
        await port.held.wait()
        await host.close()  # the crash, with the first value's commit held
        first_call.cancel()

        EVENTS.clear()
        await _recovered_and_resolved(world, req, awk_id, '"second"', outbox)

    world.run(body)
    assert outbox.sent == [("AheadNotes", '"second"', True)]

"""A waiting invocation resumed with a completion before that completion is durable
(``ObjectHost.resume_ahead``), on one host against a real journal (no Ray): the records it
queues next share the completion's commit, and nothing it does is seen outside first. The
journal port holds every commit that carries a completion until the test opens it, so the
window between resuming and durability stays open as long as the test needs."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors.contexts import Context, ObjectContext
from actors.definitions import Service, VirtualObject
from actors.host import InvokeRequest
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
    """An outbox that keeps, for each send delivered, whether the completion was durable."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bool]] = []

    request = staticmethod(outbox_request)

    async def submit(self, spec: Any, req: InvokeRequest) -> Outcome | None:
        self.sent.append((req.service, COMMITTED["completion"]))
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


def test_resumed_before_durable_acts_only_after_and_shares_the_commit(data_dir: Path) -> None:
    world = World(data_dir)

    async def body() -> None:
        port = HeldJournal(world.journal)
        host = world.host(ahead, port)
        await host.start()
        req = request("Ahead", "wait_then_act", "k", "x")
        outcome = asyncio.ensure_future(host.invoke(req))
        await EVENTS["asked:x"].wait()
        while 0 not in host._active[req.id].waiters:  # until it waits (its step committed)
            await asyncio.sleep(0)
        awk_id = host.awakeables.make(req.id, 0)
        resolving = asyncio.ensure_future(host.resolve_awakeable(awk_id, '"yes"', None))
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
    rows = world.sql("SELECT value->>'$' AS v FROM state WHERE service_name = 'Ahead'"
                     " AND key = 'answer'")
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
        first_call = asyncio.ensure_future(host.invoke(req))  # dies with the host
        await EVENTS["asked:y"].wait()
        while 0 not in host._active[req.id].waiters:
            await asyncio.sleep(0)
        awk_id = host.awakeables.make(req.id, 0)
        resolving = asyncio.ensure_future(host.resolve_awakeable(awk_id, '"yes"', None))
        await EVENTS["resumed:y"].wait()
        await port.held.wait()
        await host.close()  # the crash
        first_call.cancel()
        assert not (resolving.done() and not resolving.cancelled()), "answered before durable"
        assert ACTED == [], "the step after the wait ran before the completion was durable"

        EVENTS.clear()
        fresh_port = HeldJournal(world.journal)
        fresh_port.open.set()
        fresh = world.host(ahead, fresh_port)
        await fresh.start()  # recovers the invocation, which waits for the awakeable again
        await EVENTS["asked:y"].wait()
        while req.id not in fresh._active or 0 not in fresh._active[req.id].waiters:
            await asyncio.sleep(0)
        ok, message, code = await fresh.resolve_awakeable(awk_id, '"yes"', None)
        assert ok, (message, code)
        out = await fresh.invoke(request("Ahead", "wait_then_act", "k", "y", inv_id=req.id,
                                         resubmit=True))
        assert out is not None and out.ok and out.output == '"yes"'

    world.run(body)
    assert ACTED == [True], "the step after the wait ran twice, or before its completion"


def test_a_send_after_resuming_ahead_waits_for_the_completion_to_be_durable(
        data_dir: Path) -> None:
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
        outcome = asyncio.ensure_future(host.invoke(req))
        await EVENTS["asked:z"].wait()
        while 0 not in host._active[req.id].waiters:
            await asyncio.sleep(0)
        awk_id = host.awakeables.make(req.id, 0)
        resolving = asyncio.ensure_future(host.resolve_awakeable(awk_id, '"yes"', None))
        await EVENTS["sent:z"].wait()
        await port.held.wait()
        assert outbox.sent == [], "the send was delivered before the completion was durable"
        port.open.set()
        ok, message, code = await resolving
        assert ok, (message, code)
        out = await outcome
        assert out is not None and out.ok and out.output == '"yes"'
        assert outbox.sent == [("AheadNotes", True)]

    world.run(body)

"""Cancel and kill on one host against a real journal (no Ray): compensation runs once, also
when every wait evicts the invocation (the replay meets the cancellation at the same place);
kill stops at once and frees the key."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors.host.object_host import ObjectHost
from actors.host.requests import InvokeRequest
from actors.sdk.contexts import ObjectContext
from actors.sdk.definitions import VirtualObject
from actors.sdk.errors import TerminalError
from journal.records import Outcome
from tests.unit.engine_apps import CALLS, EVENTS, FAST, World, book, outbox_request, request, saga


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    CALLS.clear()
    EVENTS.clear()
    yield


async def _sleeping(world: World, host, req) -> None:  # type: ignore[no-untyped-def]
    """Submit ``req`` and wait until its sleep entry is durable."""
    await host.invoke(req)
    for _ in range(500):
        if "sleep" in [t for _, t, _ in world.journal_of(req.id)]:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the invocation never reached its sleep")


@pytest.mark.parametrize("suspend_after", [30.0, 0.0], ids=["in-memory", "evicted"])
def test_cancel_runs_compensation_once(data_dir: Path, suspend_after: float) -> None:
    world = World(data_dir)
    host = world.host(saga)
    host.suspend_after = suspend_after
    req = request("Saga", "book", "k", "trip", mode="send")

    async def body() -> None:
        await _sleeping(world, host, req)
        assert await host.cancel(req.id) == "cancelled"
        out = await host.invoke(request("Saga", "book", "k", "trip", inv_id=req.id, resubmit=True))
        assert out is not None and not out.ok and out.failure == "cancelled"
        assert out.failure_code == 409
        assert await host.cancel(req.id) == "completed"

    world.run(body)
    assert CALLS["trip.reserve"] == 1
    assert CALLS["trip.undo"] == 1
    assert [t for _, t, _ in world.journal_of(req.id)] == [
        "run",
        "sleep",
        "cancel",
        "run",
        "set_state",
    ]
    [state] = world.sql("SELECT value FROM state WHERE key = 'undone'")
    assert state["value"] == '"trip"'


def test_cancel_before_start_never_runs_the_body(data_dir: Path) -> None:
    world = World(data_dir)
    host = world.host(saga)
    first = request("Saga", "book", "k", "first", mode="send")
    queued = request("Saga", "book", "k", "queued", mode="send")

    async def body() -> None:
        await _sleeping(world, host, first)
        await host.invoke(queued)
        assert await host.cancel(queued.id) == "cancelled"
        assert await host.cancel(first.id) == "cancelled"
        out = await host.invoke(
            request("Saga", "book", "k", inv_id=queued.id, resubmit=True, arg="queued")
        )
        assert out is not None and out.failure == "cancelled"

    world.run(body)
    assert CALLS["queued.body"] == 0
    assert CALLS["first.undo"] == 1


@pytest.mark.parametrize("suspend_after", [30.0, 0.0], ids=["in-memory", "evicted"])
def test_kill_stops_without_compensation_and_frees_the_key(
    data_dir: Path, suspend_after: float
) -> None:
    world = World(data_dir)
    host = world.host(saga)
    host.suspend_after = suspend_after
    req = request("Saga", "book", "k", "trip", mode="send")
    nxt = request("Saga", "book", "k", "next", mode="send")

    async def body() -> None:
        await _sleeping(world, host, req)
        await host.invoke(nxt)
        assert await host.cancel(req.id, kill=True) == "killed"
        out = await host.invoke(request("Saga", "book", "k", "trip", inv_id=req.id, resubmit=True))
        assert out is not None and out.failure == "killed"
        await _sleeping(world, host, nxt)  # the next invocation of the key got to run

    world.run(body)
    assert CALLS["trip.undo"] == 0
    assert CALLS["next.reserve"] == 1


def test_cancel_of_unknown_invocation(data_dir: Path) -> None:
    world = World(data_dir)
    host = world.host(saga)

    async def body() -> None:
        assert await host.cancel("inv_nope") == "unknown"

    world.run(body)


# -- a cancellation passed on to a callee -------------------------------------------------------

trips = VirtualObject("Trips", retry_policy=FAST)


@trips.handler()
async def plan(ctx: ObjectContext, name: str) -> str:
    """Calls ``Saga/book`` (key ``name``), which sleeps until cancelled."""
    return await ctx.object_call(book, name, name)


class GatedOutbox:
    """Routes calls between in-process hosts. A delivery waits for ``gate`` (the callee's
    acceptance is late); ``cancel`` answers 404 for what the journal has not accepted, as
    ``Router.cancel`` does."""

    def __init__(self, world: World, hosts: list[ObjectHost]) -> None:
        self.world = world
        self.hosts = {h.definition.name: h for h in hosts}
        self.gate = asyncio.Event()
        self.refused = 0

    request = staticmethod(outbox_request)

    async def submit(self, spec: Any, req: InvokeRequest) -> Outcome | None:
        await self.gate.wait()
        return await self.hosts[req.service].invoke(req)

    async def cancel(self, invocation_id: str, kill: bool = False) -> str:
        accept = await self.world.journal.accepted(invocation_id)
        if accept is None:
            self.refused += 1
            raise TerminalError(f"unknown invocation {invocation_id!r}", 404)
        return await self.hosts[accept.service].cancel(invocation_id, kill)

    async def resolve_awakeable(
        self, awakeable_id: str, result: str | None, failure: str | None
    ) -> None:
        raise NotImplementedError


async def _until(condition: Any, what: str) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{what} did not happen")


@pytest.mark.parametrize("kill", [False, True], ids=["cancel", "kill"])
def test_cancel_reaches_a_callee_accepted_after_it(data_dir: Path, kill: bool) -> None:
    """The parent is cancelled after its call is journaled but before the callee's acceptance
    is durable: the request is passed on once the callee exists, not dropped."""
    world = World(data_dir)
    caller, callee = world.host(trips), world.host(saga)
    outbox = caller.outbox = GatedOutbox(world, [caller, callee])
    req = request("Trips", "plan", "p", "trip", mode="send")

    async def body() -> None:
        await caller.invoke(req)
        await _until(
            lambda: "call" in [t for _, t, _ in world.journal_of(req.id)], "the call entry"
        )
        assert await caller.cancel(req.id, kill=kill) == ("killed" if kill else "cancelled")
        await _until(lambda: outbox.refused > 0, "the pass-on meeting an unknown callee")
        outbox.gate.set()
        [row] = world.sql(
            f"SELECT result FROM sys_journal WHERE invocation_id = '{req.id}' "
            "AND entry_type = 'call'"
        )
        child = request(
            "Saga", "book", "trip", "trip", inv_id=json.loads(row["result"]), resubmit=True
        )
        try:
            out = await asyncio.wait_for(callee.invoke(child), 5.0)
        except TimeoutError:
            raise AssertionError("the callee was never cancelled") from None
        assert out is not None and out.failure == ("killed" if kill else "cancelled")

    world.run(body)
    assert CALLS["trip.reserve"] == 1
    assert CALLS["trip.undo"] == (0 if kill else 1)

"""Cancel and kill on one host against a real journal (no Ray): compensation runs once, also
when every wait evicts the invocation (the replay meets the cancellation at the same place);
kill stops at once and frees the key."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.engine_apps import CALLS, EVENTS, World, request, saga


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
        out = await host.invoke(request("Saga", "book", "k", "trip", inv_id=req.id,
                                        resubmit=True))
        assert out is not None and not out.ok and out.failure == "cancelled"
        assert out.failure_code == 409
        assert await host.cancel(req.id) == "completed"

    world.run(body)
    assert CALLS["trip.reserve"] == 1
    assert CALLS["trip.undo"] == 1
    assert [t for _, t, _ in world.journal_of(req.id)] == ["run", "sleep", "cancel", "run",
                                                           "set_state"]
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
        out = await host.invoke(request("Saga", "book", "k", inv_id=queued.id, resubmit=True,
                                        arg="queued"))
        assert out is not None and out.failure == "cancelled"

    world.run(body)
    assert CALLS["queued.body"] == 0
    assert CALLS["first.undo"] == 1


@pytest.mark.parametrize("suspend_after", [30.0, 0.0], ids=["in-memory", "evicted"])
def test_kill_stops_without_compensation_and_frees_the_key(data_dir: Path,
                                                           suspend_after: float) -> None:
    world = World(data_dir)
    host = world.host(saga)
    host.suspend_after = suspend_after
    req = request("Saga", "book", "k", "trip", mode="send")
    nxt = request("Saga", "book", "k", "next", mode="send")

    async def body() -> None:
        await _sleeping(world, host, req)
        await host.invoke(nxt)
        assert await host.cancel(req.id, kill=True) == "killed"
        out = await host.invoke(request("Saga", "book", "k", "trip", inv_id=req.id,
                                        resubmit=True))
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

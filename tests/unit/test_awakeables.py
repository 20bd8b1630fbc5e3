"""Awakeables on one host against a real journal (no Ray): a recovered invocation whose last
durable entry is an awakeable is replayed, not parked (the code that hands out the id may never
have run), and a resolution is refused as a second one only once the first is durable."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from journal.records import Entry
from tests.unit.engine_apps import CALLS, EVENTS, SEEN, World, accept_of, request, saga


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    CALLS.clear()
    EVENTS.clear()
    SEEN.clear()
    yield


def test_recovered_awakeable_replays_the_code_after_it(data_dir: Path) -> None:
    world = World(data_dir)
    req = request("Saga", "ask", "k", "trip")
    # a host died after the awakeable entry was durable, before its id was handed out
    world.prewrite(accept_of(req), Entry(req.id, 0, "awakeable", None, completed=False))
    host = world.host(saga)

    async def body() -> None:
        await host.start()
        await asyncio.wait_for(EVENTS["asked:trip"].wait(), 5)
        ok, message, code = await host.resolve_awakeable(SEEN[-1]["awk"], '"yes"', None)
        assert ok, (message, code)
        again = await host.resolve_awakeable(SEEN[-1]["awk"], '"no"', None)
        assert again[0] is False and again[2] == 409
        out = await host.invoke(request("Saga", "ask", "k", "trip", inv_id=req.id,
                                        resubmit=True))
        assert out is not None and out.ok and out.output == '"yes"'

    world.run(body)
    assert CALLS["trip.ask"] == 1

"""Handlers of the partition tests: a chain of calls whose links live in different partitions,
and an awakeable resolved from another partition. Side effects go to ledger files."""

from __future__ import annotations

from pydantic import BaseModel

from actors import ObjectContext, VirtualObject
from tests.integration.apps import append, crash_once


class Chain(BaseModel):
    keys: list[str]  # the links still to call, this one first
    ledger: str
    markers: str  # a directory: one crash marker per link and crash point


link = VirtualObject("Link")


@link.handler()
async def hop(ctx: ObjectContext, c: Chain) -> list[str]:
    """Record a step, crash once before calling the next link and once after its answer came
    back: the chain still runs every step once and answers once."""
    me = ctx.key()
    await ctx.run("step", append, c.ledger, f"step:{me}")
    crash_once(f"{c.markers}/before-{me}")
    rest: list[str] = []
    if len(c.keys) > 1:
        rest = await ctx.object_call(hop, c.keys[1], Chain(keys=c.keys[1:], **_same(c)))
    crash_once(f"{c.markers}/after-{me}")
    await ctx.run("done", append, c.ledger, f"done:{me}")
    return [me, *rest]


def _same(c: Chain) -> dict[str, str]:
    return {"ledger": c.ledger, "markers": c.markers}


class Pass(BaseModel):
    awk: str
    value: str
    marker: str


relay = VirtualObject("Relay")


@relay.handler()
async def pass_on(ctx: ObjectContext, p: Pass) -> str:
    """Resolve another partition's awakeable, then crash once: the replay resolves nothing
    again (the resolution is an entry of this handler's journal)."""
    await ctx.resolve_awakeable(p.awk, p.value)
    crash_once(p.marker)
    return "passed"


APPS = [link, relay]

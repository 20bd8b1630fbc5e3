"""Handlers for the failure tests: user code raising what is not an ``Exception``
(``SystemExit``, ``KeyboardInterrupt``, a bare ``BaseException``), in the handler or in a
``ctx.run``, on its first attempt (counted in a ledger outside the processes)."""

from __future__ import annotations

import os
import sys
import time
from datetime import timedelta

from pydantic import BaseModel

from actors import ObjectContext, ObjectSharedContext, RetryPolicy, VirtualObject
from tests.integration.apps import append, count

FAST = RetryPolicy(
    initial_interval=timedelta(milliseconds=10), max_interval=timedelta(milliseconds=100)
)

poison = VirtualObject("Poison", retry_policy=FAST)


class Bare(BaseException):
    """A bare BaseException subclass (neither Exception nor one of Python's own)."""


class Dose(BaseModel):
    ledger: str
    kind: str  # "<handler|run>:<exit|interrupt|bare|value|none>"
    failing: int = 1  # attempts that fail (a large number: every one)


def poisonous(kind: str) -> None:
    if kind == "exit":
        sys.exit(3)
    if kind == "interrupt":
        raise KeyboardInterrupt
    if kind == "bare":
        raise Bare("bare")
    if kind == "value":
        raise ValueError("a bug in a handler")


@poison.handler()
async def dose(ctx: ObjectContext, d: Dose) -> int:
    """Fails its first ``failing`` attempts as ``kind`` says; returns the attempts it took."""
    line = f"attempt:{ctx.key()}"
    append(d.ledger, line)
    where, _, what = d.kind.partition(":")
    if count(d.ledger, line) <= d.failing:
        if where == "run":
            await ctx.run("poison", poisonous, what)  # a sync fn: on a worker thread
        else:
            poisonous(what)
    return count(d.ledger, line)


@poison.handler(kind="shared")
async def pid(ctx: ObjectSharedContext) -> int:
    return os.getpid()


@poison.handler()
async def hold_loop(ctx: ObjectContext, seconds: float) -> None:
    """What a careless handler does: blocks its host's event loop."""
    time.sleep(seconds)

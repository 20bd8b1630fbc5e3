"""Failures you can see, and failures that cannot take a host down (no Ray): a failed attempt
is logged once with its traceback and recorded (``sys_invocation.last_failure_*``,
``sys_journal_events``); ``SystemExit``, ``KeyboardInterrupt`` and bare ``BaseException``s from
a handler or a ``ctx.run`` fail the attempt like exceptions; ``ctx.logger`` is silent during
replay. A ``SystemExit`` that escaped to the event loop would end ``asyncio.run`` here."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from actors.sdk.contexts import ObjectContext
from actors.sdk.definitions import VirtualObject
from actors.sdk.errors import RetryPolicy
from journal.records import Outcome
from tests.unit.engine_apps import World, request

FAST = RetryPolicy(initial_interval=timedelta(0))
ATTEMPTS: dict[str, int] = {}

poison = VirtualObject("Poison", retry_policy=FAST)


class Bare(BaseException):
    """Neither an Exception nor one of Python's own: a bare BaseException subclass."""


def _raise(kind: str) -> None:
    if kind == "none":
        return
    if kind == "exit":
        sys.exit(3)
    if kind == "interrupt":
        raise KeyboardInterrupt
    if kind == "bare":
        raise Bare("bare base exception")
    if kind == "cancelled":
        raise asyncio.CancelledError
    raise ValueError("card reader on fire")


@poison.handler()
async def first_attempt_fails(ctx: ObjectContext, kind: str) -> int:
    """Step 'a', then (first attempt only) a failure in the handler or in step 'charge'."""
    key = ctx.key()
    ctx.logger.info("start %s", key)
    await ctx.run("a", lambda: None)
    ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
    where, _, what = kind.partition(":")
    if ATTEMPTS[key] == 1:
        if where == "run":
            await ctx.run("charge", _raise, what)
        else:
            _raise(what)
    ctx.logger.info("end %s", key)
    return ATTEMPTS[key]


@poison.handler(
    retry_policy=RetryPolicy(
        initial_interval=timedelta(seconds=60), max_interval=timedelta(seconds=60)
    )
)
async def always_exits(ctx: ObjectContext) -> None:
    await ctx.run("a", lambda: None)
    sys.exit(1)


@poison.handler()
async def exits_in_a_retried_step(ctx: ObjectContext) -> None:
    await ctx.run(
        "x", sys.exit, 3, retry_policy=RetryPolicy(initial_interval=timedelta(0), max_attempts=2)
    )


@pytest.fixture
def world(data_dir: Path) -> Iterator[World]:
    ATTEMPTS.clear()
    w = World(data_dir)
    yield w
    w.store.close()


KINDS = [
    "handler:exit",
    "handler:interrupt",
    "handler:bare",
    "handler:cancelled",
    "run:exit",
    "run:interrupt",
    "run:bare",
]


@pytest.mark.parametrize("kind", KINDS)
def test_base_exceptions_of_user_code_are_failed_attempts(world: World, kind: str) -> None:
    host = world.host(poison)
    req = request("Poison", "first_attempt_fails", "k", kind)

    async def body() -> list[Outcome | None]:
        first = await host.invoke(req)
        other = await host.invoke(request("Poison", "first_attempt_fails", "other", "handler:none"))
        return [first, other]

    assert world.run(body) == [Outcome(True, "2"), Outcome(True, "1")]
    inv = world.invocation(req.id)
    expected = {
        "exit": "SystemExit: 3",
        "interrupt": "KeyboardInterrupt: ",
        "bare": "Bare: bare base exception",
        "cancelled": "CancelledError: ",
    }
    assert inv["retry_count"] == 1
    assert inv["last_failure"] == expected[kind.partition(":")[2]]
    # the action that raised, or (raised by the handler itself) the last entry it reached
    in_run = kind.startswith("run")
    assert inv["last_failure_related_entry_index"] == (1 if in_run else 0)
    assert inv["last_failure_related_entry_name"] == ("charge" if in_run else "a")


def test_failed_attempt_is_logged_once_and_recorded(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    host = world.host(poison)
    req = request("Poison", "first_attempt_fails", "k", "run:value")
    with caplog.at_level(logging.WARNING, logger="raystate.host"):
        assert world.run(lambda: host.invoke(req)) == Outcome(True, "2")
    logged = [r for r in caplog.records if req.id in r.getMessage()]
    assert len(logged) == 1, "one log line per failed attempt"
    assert "journal entry 1 (run 'charge')" in logged[0].getMessage()
    assert logged[0].exc_info is not None and "card reader on fire" in caplog.text
    inv = world.invocation(req.id)
    assert inv["last_failure"] == "ValueError: card reader on fire"
    assert "Traceback" in inv["last_failure_stacktrace"]
    assert "in _raise" in inv["last_failure_stacktrace"]
    assert inv["next_retry_at"] is None, "completed: no retry pending"
    [event] = world.sql(f"SELECT * FROM sys_journal_events WHERE invocation_id = '{req.id}'")
    assert event["event_type"] == "TransientError"
    data = json.loads(event["event_json"])
    assert data["failure"] == "ValueError: card reader on fire"
    assert data["retry_count"] == 1 and "in _raise" in data["stacktrace"]
    assert (
        data["related_entry_index"],
        data["related_entry_name"],
        data["related_entry_type"],
    ) == (1, "charge", "run")


def test_backing_off_shows_next_retry_and_a_poisoned_invocation_can_be_killed(world: World) -> None:
    host = world.host(poison)
    req = request("Poison", "always_exits", "k", mode="send")

    async def body() -> tuple[str, Outcome | None]:
        await host.invoke(req)
        while world.invocation(req.id)["status"] != "backing-off":
            await asyncio.sleep(0.01)
        killed = await host.cancel(req.id, kill=True)
        return killed, await host.invoke(request("Poison", "always_exits", "k", inv_id=req.id))

    assert world.run(body) == ("killed", Outcome(False, None, "killed", 409))
    [event] = world.sql(f"SELECT * FROM sys_journal_events WHERE invocation_id = '{req.id}'")
    data = json.loads(event["event_json"])
    assert data["failure"] == "SystemExit: 1"
    assert data["next_retry_at_ms"] > time.time() * 1000 + 30_000, "the 60 s back-off"


def test_next_retry_at_is_shown_while_backing_off(world: World) -> None:
    host = world.host(poison)
    req = request("Poison", "always_exits", "k", mode="send")

    async def body() -> dict:
        await host.invoke(req)
        while (row := world.invocation(req.id))["status"] != "backing-off":
            await asyncio.sleep(0.01)
        return row

    row = world.run(body)
    assert (row["next_retry_at"] - row["modified_at"]).total_seconds() > 30
    assert row["last_failure_related_entry_name"] == "a"


def test_ctx_logger_is_silent_while_replaying(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    host = world.host(poison)
    req = request("Poison", "first_attempt_fails", "k", "handler:value")
    with caplog.at_level(logging.INFO, logger="raystate.handler"):
        assert world.run(lambda: host.invoke(req)) == Outcome(True, "2")
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("raystate.handler")]
    assert lines == ["start k", "end k"], "the retry replays 'start' silently"
    assert all(
        getattr(r, "invocation_id", None) == req.id
        for r in caplog.records
        if r.name.startswith("raystate.handler")
    )
    assert caplog.records[0].name == "raystate.handler.Poison.first_attempt_fails"


def test_a_base_exception_in_a_step_with_a_retry_policy_is_retried_in_place(world: World) -> None:
    host = world.host(poison)
    out = world.run(lambda: host.invoke(request("Poison", "exits_in_a_retried_step", "k")))
    assert out == Outcome(False, None, "ctx.run('x') failed 2 times: SystemExit: 3", 500)

"""The replay engine without Ray: ``JournalCursor`` alone, then ``ObjectHost`` driving real
handlers (``engine_apps``) against a ``GroupCommitJournal`` on a tmp_path data dir.

Side effects are counted in module-level collections (reset before each test); "crashes" are
made by closing a host mid-invocation (its tasks are cancelled) or by writing a journal prefix
straight into the store, then letting a new host recover. Synchronisation uses asyncio events
only, never sleeps.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.engine.cursor import JournalCursor
from actors.sdk.errors import JournalMismatch, TerminalError
from journal.records import Entry, Outcome, StateWrite
from tests.unit.engine_apps import (
    BLOCKING,
    CALLS,
    EVENTS,
    FLAKY,
    LOG,
    SEEN,
    FlakyJournal,
    World,
    accept_of,
    counter,
    flaky_obj,
    gate,
    request,
    steps,
    svc,
)


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    CALLS.clear()
    LOG.clear()
    SEEN.clear()
    EVENTS.clear()
    BLOCKING.clear()
    FLAKY.clear()
    yield


# -- JournalCursor ------------------------------------------------------------------------------


def _entries() -> list[Entry]:
    return [
        Entry("inv_1", 0, "run", "a", '"A"'),
        Entry("inv_1", 1, "time", None, "5"),
        Entry("inv_1", 2, "get_state", "x", None),
    ]


def test_cursor_replays_recorded_entries_in_order() -> None:
    entries = _entries()
    cursor = JournalCursor("inv_1", entries)
    assert cursor.replaying
    assert cursor.replay("run", "a") is entries[0]
    assert cursor.replay("time", None) is entries[1]
    assert cursor.replay("get_state", "x") is entries[2]
    assert not cursor.replaying
    assert cursor.replay("run", "b") is None, "past the end: run for real"
    assert cursor.buffer == []


@pytest.mark.parametrize(
    ("entry_type", "name", "actual"),
    [
        ("run", "b", "run('b')"),
        ("sleep", "a", "sleep('a')"),
        ("time", None, "time"),
    ],
)
def test_cursor_mismatch_names_everything(entry_type: str, name: str | None, actual: str) -> None:
    cursor = JournalCursor("inv_1", _entries())
    with pytest.raises(JournalMismatch) as info:
        cursor.replay(entry_type, name)
    e = info.value
    assert (e.invocation_id, e.index, e.journaled, e.actual) == ("inv_1", 0, "run('a')", actual)
    assert "inv_1" in str(e) and "index 0" in str(e)
    assert cursor.index == 0, "a mismatch does not advance"


def test_cursor_mismatch_at_a_later_index() -> None:
    cursor = JournalCursor("inv_7", _entries())
    cursor.replay("run", "a")
    with pytest.raises(JournalMismatch) as info:
        cursor.replay("run", "b")
    assert (info.value.index, info.value.journaled, info.value.actual) == (1, "time", "run('b')")


def test_cursor_records_into_the_buffer_and_take_empties_it() -> None:
    entries = [Entry("inv_1", 0, "run", "a", '"A"')]
    cursor = JournalCursor("inv_1", entries)
    cursor.replay("run", "a")
    write = StateWrite("Obj", "k", "x", "1")
    first = cursor.record("set_state", "x", result="1", extra=(write,))
    second = cursor.record("run", "b", failure=TerminalError("no", 409))
    assert (first.invocation_id, first.idx, first.entry_type, first.name, first.result) == (
        "inv_1",
        1,
        "set_state",
        "x",
        "1",
    )
    assert (second.idx, second.result, second.failure, second.failure_code) == (2, None, "no", 409)
    assert first.created_at_ms > 0
    assert entries == [entries[0], first, second], "recorded entries join the journal"
    assert cursor.index == 3
    assert cursor.unflushed_run
    assert cursor.buffer == [first, write, second]
    assert cursor.take() == [first, write, second]
    assert cursor.buffer == [] and not cursor.unflushed_run
    assert cursor.take() == []


@pytest.fixture
def world(data_dir: Path) -> Iterator[World]:
    w = World(data_dir)
    yield w
    w.store.close()


# -- (a) a counter ------------------------------------------------------------------------------


def test_counter_returns_output_and_state_persists(world: World) -> None:
    host = world.host(counter)
    first = request("Counter", "add", "alice", 5)

    async def body() -> list[Outcome | None]:
        return [
            await host.invoke(first),
            await host.invoke(request("Counter", "add", "alice", 3)),
            await host.invoke(request("Counter", "add", "bob", 1)),
            await host.invoke(request("Counter", "get", "alice")),
        ]

    assert world.run(body) == [
        Outcome(True, "5"),
        Outcome(True, "8"),
        Outcome(True, "1"),
        Outcome(True, "8"),
    ]
    assert world.store.load_state("Counter", "alice") == {"count": "8"}
    assert world.store.load_state("Counter", "bob") == {"count": "1"}
    assert world.store.outcome(first.id) == Outcome(True, "5")
    inv = world.invocation(first.id)
    assert (
        inv["target"],
        inv["status"],
        inv["completion_result"],
        inv["output"],
        inv["retry_count"],
    ) == ("Counter/alice/add", "completed", "success", "5", 0)
    assert world.journal_of(first.id) == [(0, "get_state", "count"), (1, "set_state", "count")]
    assert world.sql("SELECT count(*) AS n FROM sys_invocation WHERE status = 'completed'") == [
        {"n": 4}
    ]


def test_state_survives_a_new_host(world: World) -> None:
    async def body() -> Outcome | None:
        await world.host(counter).invoke(request("Counter", "add", "alice", 2))
        return await world.host(counter).invoke(request("Counter", "add", "alice", 40))

    assert world.run(body) == Outcome(True, "42")


def test_send_returns_once_durable_then_the_output_can_be_awaited(world: World) -> None:
    host = world.host(steps)
    BLOCKING.add("b")
    req = request("Steps", "two_steps", "k", mode="send")

    async def body() -> Outcome:
        assert await host.invoke(req) is None
        stored = world.store.accepted(req.id)
        assert stored is not None, "durable when send returns"
        assert dataclasses.replace(stored, host_order=0) == accept_of(req)
        await EVENTS["in:b"].wait()
        EVENTS["release:b"].set()
        return await world.journal.await_output(req.id)

    assert world.run(body) == Outcome(True, '["a-done","b-done"]')


def test_same_id_runs_once(world: World) -> None:
    host = world.host(svc)
    req = request("Payments", "echo", arg=7)

    async def body() -> list[Outcome | None]:
        both = await asyncio.gather(host.invoke(req), host.invoke(req))
        again = await host.invoke(req)
        resubmitted = await world.host(svc).invoke(
            request("Payments", "echo", arg=7, inv_id=req.id, resubmit=True)
        )
        return [*both, again, resubmitted]

    assert world.run(body) == [Outcome(True, "7")] * 4
    assert CALLS["echo"] == 1


def test_unknown_handler_is_404(world: World) -> None:
    host = world.host(counter)
    req = request("Counter", "nope", "k")

    async def body() -> Outcome | None:
        return await host.invoke(req)

    out = world.run(body)
    assert out is not None and not out.ok and out.failure_code == 404
    assert world.store.accepted(req.id) is None


def test_recovered_invocation_of_a_removed_handler_fails_404(world: World) -> None:
    req = request("Counter", "removed", "k")
    world.prewrite(accept_of(req))

    async def body() -> Outcome:
        await world.host(counter).start()
        return await world.journal.await_output(req.id)

    out = world.run(body)
    assert (out.ok, out.failure_code) == (False, 404)
    assert "Counter/removed" in (out.failure or "")


def test_input_that_does_not_validate_is_terminal_400(world: World) -> None:
    req = request("Counter", "add", "k", "abc")  # not an int

    async def body() -> Outcome | None:
        return await world.host(counter).invoke(req)

    out = world.run(body)
    assert out is not None and (out.ok, out.failure_code) == (False, 400)
    assert world.store.load_state("Counter", "k") == {}


def test_state_keys_and_clear_all(world: World) -> None:
    host = world.host(counter)

    async def body() -> Outcome | None:
        await host.invoke(request("Counter", "add", "k", 1))
        return await host.invoke(request("Counter", "reset", "k"))

    assert world.run(body) == Outcome(True, '["count"]')
    assert world.store.load_state("Counter", "k") == {}
    assert world.sql("SELECT * FROM state") == []


# -- (b) recovery does not re-run a journaled step ----------------------------------------------


def test_recovery_from_a_written_journal_prefix(world: World) -> None:
    req = request("Steps", "two_steps", "k")
    world.prewrite(accept_of(req), Entry(req.id, 0, "run", "a", '"a-from-journal"'))

    async def body() -> Outcome:
        await world.host(steps).start()
        return await world.journal.await_output(req.id)

    assert world.run(body) == Outcome(True, '["a-from-journal","b-done"]')
    assert CALLS == {"two_steps": 1, "b": 1}, "step a was journaled: never run again"
    assert world.journal_of(req.id) == [(0, "run", "a"), (1, "run", "b")]


def test_recovery_after_a_host_crash_mid_invocation(world: World) -> None:
    """The canonical durability test: body twice, the journaled step once."""
    req = request("Steps", "two_steps", "k")
    BLOCKING.add("b")

    async def body() -> Outcome:
        first = world.host(steps)
        call = asyncio.ensure_future(first.invoke(req))
        await EVENTS["in:b"].wait()  # a ran and is durable; b is running
        await first.close()  # the host dies here
        call.cancel()
        BLOCKING.clear()
        await world.host(steps).start()
        return await world.journal.await_output(req.id)

    assert world.run(body) == Outcome(True, '["a-done","b-done"]')
    assert CALLS == {"two_steps": 2, "a": 1, "b": 2}
    assert world.journal_of(req.id) == [(0, "run", "a"), (1, "run", "b")]


# -- (c) retries --------------------------------------------------------------------------------


def test_retry_does_not_rerun_steps_or_reapply_state(world: World) -> None:
    host = world.host(steps)
    req = request("Steps", "flaky", "k")

    async def body() -> list[Outcome | None]:
        return [await host.invoke(req), await host.invoke(request("Steps", "flaky", "k"))]

    assert world.run(body) == [Outcome(True, "1"), Outcome(True, "2")]
    assert CALLS["flaky"] == 3 and CALLS["side"] == 2, "one step per invocation"
    assert world.store.load_state("Steps", "k") == {"n": "2"}
    assert world.sql(
        "SELECT data AS value FROM log WHERE kind = 'state' AND id = 'Steps/k' ORDER BY seq"
    ) == [
        {"value": "1"},
        {"value": "2"},
    ], "each ctx.set applied once"
    assert world.journal_of(req.id) == [
        (0, "get_state", "n"),
        (1, "set_state", "n"),
        (2, "run", "side"),
    ]
    inv = world.invocation(req.id)
    assert (inv["status"], inv["completion_result"], inv["retry_count"]) == (
        "completed",
        "success",
        1,
    )
    assert inv["last_failure"] == "RuntimeError: first attempt fails"


def test_run_with_retry_policy_retries_in_place(world: World) -> None:
    host = world.host(steps)
    ok = request("Steps", "retried_step", "k", 2)
    exhausted = request("Steps", "retried_step", "k2", 5)

    async def body() -> list[Outcome | None]:
        first = await host.invoke(ok)
        CALLS["sometimes"] = 0
        return [first, await host.invoke(exhausted)]

    done, failed = world.run(body)
    assert done == Outcome(True, '"finally"')
    assert failed is not None and not failed.ok and failed.failure_code == 500
    assert "failed 3 times" in (failed.failure or "")
    assert "ConnectionError" in (failed.failure or "")
    assert CALLS["sometimes"] == 3, "max_attempts=3 in all"
    assert world.invocation(ok.id)["retry_count"] == 0, "retried in place, not the invocation"
    [entry] = world.sql(f"SELECT result FROM sys_journal WHERE invocation_id = '{exhausted.id}'")
    assert json.loads(entry["result"])["code"] == 500


# -- (d) TerminalError from ctx.run -------------------------------------------------------------


def test_terminal_error_from_run_is_journaled_and_fails_the_invocation(world: World) -> None:
    req = request("Payments", "charge", arg=30)

    async def body() -> Outcome | None:
        return await world.host(svc).invoke(req)

    assert world.run(body) == Outcome(False, None, "card declined for 30", 402)
    assert CALLS == {"charge": 1, "decline": 1}, "never retried"
    [entry] = world.sql(f"SELECT * FROM sys_journal WHERE invocation_id = '{req.id}'")
    assert (entry["entry_type"], entry["name"], entry["completed"]) == ("run", "charge", True)
    assert json.loads(entry["result"]) == {"failure": "card declined for 30", "code": 402}
    inv = world.invocation(req.id)
    assert (
        inv["status"],
        inv["completion_result"],
        inv["completion_failure"],
        inv["retry_count"],
    ) == ("completed", "failure", "card declined for 30", 0)
    assert inv["target"] == "Payments/charge" and inv["target_service_key"] is None


def test_journaled_terminal_error_is_raised_again_on_replay(world: World) -> None:
    req = request("Payments", "charge", arg=30)
    world.prewrite(accept_of(req), Entry(req.id, 0, "run", "charge", None, "declined earlier", 402))

    async def body() -> Outcome:
        await world.host(svc).start()
        return await world.journal.await_output(req.id)

    assert world.run(body) == Outcome(False, None, "declined earlier", 402)
    assert CALLS == {"charge": 1}, "the step is not run again"


# -- (e) divergent replay -----------------------------------------------------------------------


def test_divergent_replay_fails_with_journal_mismatch(world: World) -> None:
    req = request("Steps", "diverge", "k")
    world.prewrite(accept_of(req), Entry(req.id, 0, "run", "a", '"A"'))

    async def body() -> Outcome:
        await world.host(steps).start()
        return await world.journal.await_output(req.id)

    out = world.run(body)
    assert not out.ok
    assert "gave up after 2 attempts" in (out.failure or "")
    assert "JournalMismatch" in (out.failure or "")
    assert CALLS == {"diverge": 2}, "the divergent step never ran"
    inv = world.invocation(req.id)
    assert inv["retry_count"] == 1
    last = inv["last_failure"]
    assert last.startswith("JournalMismatch: ")
    assert req.id in last and "index 0" in last
    assert "run('a')" in last and "run('b')" in last
    assert inv["completion_result"] == "failure" and "JournalMismatch" in inv["completion_failure"]
    assert world.journal_of(req.id) == [(0, "run", "a")]


def test_replayed_state_write_with_another_value_is_a_mismatch(world: World) -> None:
    req = request("Steps", "set_new", "k")
    world.prewrite(
        accept_of(req),
        Entry(req.id, 0, "set_state", "x", '"old"'),
        StateWrite("Steps", "k", "x", '"old"'),
    )

    async def body() -> Outcome:
        await world.host(steps).start()
        return await world.journal.await_output(req.id)

    out = world.run(body)
    assert not out.ok and "JournalMismatch" in (out.failure or "")
    assert "set_state('x', \"old\")" in (out.failure or "")
    assert "set_state('x', \"new\")" in (out.failure or "")
    assert CALLS["after"] == 0
    assert world.store.load_state("Steps", "k") == {"x": '"old"'}


# -- (f) shared handlers may not write ----------------------------------------------------------


def test_state_write_in_shared_handler_is_terminal(world: World) -> None:
    host = world.host(counter)
    ops = ["set", "clear", "clear_all"]
    reqs = [request("Counter", "sneaky", "k", op) for op in ops]

    async def body() -> list[Outcome | None]:
        return [
            await host.invoke(request("Counter", "add", "k", 1)),
            *[await host.invoke(r) for r in reqs],
            await host.invoke(request("Counter", "get", "k")),
        ]

    added, *refused, after = world.run(body)
    assert added == Outcome(True, "1") and after == Outcome(True, "1")
    assert refused == [
        Outcome(
            False, None, f"ctx.{op}: handler Counter/sneaky is shared and may only read state", 500
        )
        for op in ops
    ]
    assert world.store.load_state("Counter", "k") == {"count": "1"}
    assert world.sql("SELECT count(*) AS n FROM log WHERE kind = 'state'") == [{"n": 1}]
    for r in reqs:
        assert world.journal_of(r.id) == []
        assert world.invocation(r.id)["retry_count"] == 0, "terminal: not retried"


def test_state_in_a_service_handler_is_terminal(world: World) -> None:
    async def body() -> Outcome | None:
        return await world.host(svc).invoke(request("Payments", "keyless_state"))

    out = world.run(body)
    assert out is not None and not out.ok
    assert "belongs to a Service" in (out.failure or "")


# -- (g) one exclusive invocation per key at a time ---------------------------------------------


def test_exclusive_in_order_one_at_a_time_and_shared_beside_them(world: World) -> None:
    host = world.host(gate)

    async def body() -> list[Outcome | None]:
        calls = [
            asyncio.ensure_future(host.invoke(request("Gate", "hold", "k", n)))
            for n in ("A", "B", "C")
        ]
        other_key = asyncio.ensure_future(host.invoke(request("Gate", "hold", "other", "X")))
        await EVENTS["entered:A"].wait()
        await EVENTS["entered:X"].wait()  # another key is not held up by k
        shared = [
            asyncio.ensure_future(host.invoke(request("Gate", "peek", "k", n)))
            for n in ("S1", "S2")
        ]
        await EVENTS["entered:S1"].wait()
        await EVENTS["entered:S2"].wait()  # both shared run while A holds the key
        EVENTS["release:S1"].set()
        EVENTS["release:S2"].set()
        assert [await s for s in shared] == [Outcome(True, '"S1"'), Outcome(True, '"S2"')]
        assert not EVENTS["entered:B"].is_set() and not EVENTS["entered:C"].is_set()

        EVENTS["release:C"].set()  # C may go as soon as it is its turn, not before
        EVENTS["release:A"].set()
        await EVENTS["entered:B"].wait()
        assert not EVENTS["entered:C"].is_set()
        EVENTS["release:B"].set()
        EVENTS["release:X"].set()
        return [await c for c in calls] + [await other_key]

    assert world.run(body) == [Outcome(True, f'"{n}"') for n in ("A", "B", "C", "X")]
    exclusive_k = [e for e in LOG if e[1] in ("A", "B", "C")]
    assert exclusive_k == [
        ("enter", "A"),
        ("exit", "A"),
        ("enter", "B"),
        ("exit", "B"),
        ("enter", "C"),
        ("exit", "C"),
    ]
    assert LOG.index(("shared-enter", "S1")) < LOG.index(("exit", "A"))
    assert LOG.index(("shared-enter", "S2")) < LOG.index(("shared-exit", "S1"))


def test_shared_handler_sees_committed_state_only(world: World) -> None:
    host = world.host(counter)

    async def body() -> list[Outcome | None]:
        await host.invoke(request("Counter", "add", "k", 1))
        writer = asyncio.ensure_future(host.invoke(request("Counter", "add_then_wait", "k", 10)))
        await EVENTS["add_then_wait:entered"].wait()  # set, but not committed yet
        during = await host.invoke(request("Counter", "get", "k"))
        EVENTS["add_then_wait:release"].set()
        return [during, await writer, await host.invoke(request("Counter", "get", "k"))]

    assert world.run(body) == [Outcome(True, "1"), Outcome(True, "11"), Outcome(True, "11")]


def test_recovery_keeps_acceptance_order_of_a_key(world: World) -> None:
    a = request("Gate", "ordered", "k", "A")
    b = request("Gate", "ordered", "k", "B", mode="send")
    BLOCKING.update({"A", "A.two"})

    async def body() -> list[Outcome]:
        first = world.host(gate)
        call = asyncio.ensure_future(first.invoke(a))
        await EVENTS["entered:A"].wait()  # A was accepted first and is running
        assert await first.invoke(b) is None  # B queued behind A, durable
        EVENTS["release:A"].set()
        await EVENTS["in:A.two"].wait()  # A's step one is durable, A is inside step two
        await first.close()  # crash
        call.cancel()
        LOG.clear()
        BLOCKING.clear()
        await world.host(gate).start()
        return [await world.journal.await_output(a.id), await world.journal.await_output(b.id)]

    assert world.run(body) == [Outcome(True, '"A"'), Outcome(True, '"B"')]
    assert CALLS["A.one"] == 1
    assert LOG == [("enter", "A"), ("exit", "A"), ("enter", "B"), ("exit", "B")], (
        "B ran in between A's steps"
    )


# -- (h) determinism ----------------------------------------------------------------------------


def test_rand_and_time_are_stable_across_replay(world: World) -> None:
    req = request("Steps", "randomish", "k")
    other = request("Steps", "randomish", "k")
    before = time.time()

    async def body() -> list[Outcome | None]:
        host = world.host(steps)
        return [await host.invoke(req), await host.invoke(other)]

    out, out_other = world.run(body)
    assert out is not None and out.ok and out.output is not None
    first, second, third = SEEN
    assert first == second, "the retry saw the same random numbers and time"
    result = json.loads(out.output)
    assert {k: result[k] for k in first} == first
    assert first["id"] == req.id and first["key"] == "k"
    assert result["r2"] != first["r"]
    assert before - 1 <= first["t"] <= result["t2"] <= time.time() + 1
    assert first["u"][14] == "4", "uuid4 is a version 4 UUID"
    assert (third["r"], third["u"]) != (first["r"], first["u"]), "seeded per invocation"
    assert CALLS["side"] == 2, "once per invocation"
    assert out_other is not None and out_other.ok


def test_time_comes_from_the_journal_on_recovery(world: World) -> None:
    req = request("Steps", "randomish", "k")
    world.prewrite(accept_of(req), Entry(req.id, 0, "time", None, "1234567"))
    CALLS["randomish"] = 1  # the recovered attempt is not the failing first one

    async def body() -> Outcome:
        await world.host(steps).start()
        return await world.journal.await_output(req.id)

    out = world.run(body)
    assert out.ok and out.output is not None
    assert json.loads(out.output)["t"] == 1234.567
    assert SEEN[0]["t"] == 1234.567


# -- (i) results that are not JSON --------------------------------------------------------------


def test_unserializable_run_result_is_terminal_and_not_journaled(world: World) -> None:
    req = request("Payments", "bad_result")

    async def body() -> Outcome | None:
        return await world.host(svc).invoke(req)

    out = world.run(body)
    assert out is not None and (out.ok, out.failure_code) == (False, 500)
    assert "ctx.run('obj') returned a value that is not JSON-serializable (object)" in (
        out.failure or ""
    )
    assert CALLS["make_object"] == 1
    assert world.journal_of(req.id) == []
    assert world.invocation(req.id)["completion_result"] == "failure"


# -- a journal that fails a commit --------------------------------------------------------------


def test_a_failed_commit_loses_no_state(world: World) -> None:
    flaky_port = FlakyJournal(world.journal)
    FLAKY.append(flaky_port)
    req = request("FlakyObj", "set_then_steps", "k")

    async def body() -> Outcome | None:
        return await world.host(flaky_obj, flaky_port).invoke(req)

    out = world.run(body)
    assert world.store.load_state("FlakyObj", "k") == {"x": "1"}
    assert out == Outcome(True, "1")
    assert [i for i, _, _ in world.journal_of(req.id)] == list(range(4))


def test_a_failed_start_is_tried_again_by_the_next_caller(world: World) -> None:
    """The journal was unreachable while the host recovered: the next request retries the
    recovery instead of failing for good."""
    flaky_port = FlakyJournal(world.journal)
    flaky_port.fail_pending = 1
    req = request("Steps", "two_steps", "k")
    world.prewrite(accept_of(req), Entry(req.id, 0, "run", "a", '"a-from-journal"'))

    async def body() -> Outcome:
        host = world.host(steps, flaky_port)
        with pytest.raises(ConnectionError):
            await host.start()
        await host.start()
        return await world.journal.await_output(req.id)

    assert world.run(body) == Outcome(True, '["a-from-journal","b-done"]')
    assert CALLS == {"two_steps": 1, "b": 1}

"""GroupCommitJournal (the journal actor's logic, no Ray): group commit, output waiters, SQL."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from journal.actor import GroupCommitJournal
from journal.records import Accept, Batch, Entry, Outcome, Output, StateWrite
from journal.secret import SECRET
from journal.sqlguard import SqlRefused


@pytest.fixture
def journal(data_dir: Path) -> Iterator[GroupCommitJournal]:
    j = GroupCommitJournal(str(data_dir))
    yield j
    j.store.close()


def run(coro: object) -> object:
    return asyncio.run(asyncio.wait_for(coro, 10))  # type: ignore[arg-type]


def test_concurrent_commits_share_one_transaction(journal: GroupCommitJournal) -> None:
    batches = [Batch(f"b{n}", [StateWrite("Obj", "k", f"n{n}", str(n))]) for n in range(20)]

    async def body() -> None:
        await asyncio.gather(*(journal.commit(b) for b in batches))

    run(body())
    assert journal.transactions == 1
    assert journal.store.load_state("Obj", "k") == {f"n{n}": str(n) for n in range(20)}


def test_reads_see_what_was_committed_before_them(journal: GroupCommitJournal) -> None:
    async def body() -> tuple[object, ...]:
        commit = asyncio.ensure_future(
            journal.commit(
                Batch(
                    "b1",
                    [
                        Accept("inv_1", "Obj", "h", "k", 0, "{}"),
                        Entry("inv_1", 0, "run", "a", '"A"'),
                        StateWrite("Obj", "k", "x", "1"),
                    ],
                )
            )
        )
        await asyncio.sleep(0)  # let the commit queue up (no timing involved)
        state = (await journal.load_states("Obj", ["k"]))["k"]
        pending = await journal.pending(["Obj"])
        keys = await journal.pending_keys("Obj")
        accepted = await journal.accepted("inv_1")
        await commit
        return state, [p.accept.id for p in pending], keys, accepted is not None

    assert run(body()) == ({"x": "1"}, ["inv_1"], ["k"], True)


def test_await_output_before_and_after_the_output(journal: GroupCommitJournal) -> None:
    async def body() -> list[Outcome]:
        await journal.commit(Batch("b0", [Accept("inv_1", "Obj", "h", "k", 0, "{}")]))
        early = asyncio.ensure_future(journal.await_output("inv_1"))
        await asyncio.sleep(0)
        assert not early.done()
        await journal.commit(Batch("b1", [Output("inv_1", False, None, "no", 409)]))
        return [await early, await journal.await_output("inv_1")]

    assert run(body()) == [Outcome(False, None, "no", 409)] * 2
    assert journal._waiters == {}


def test_await_output_of_an_unknown_invocation_fails_at_once(journal: GroupCommitJournal) -> None:
    """Never accepted, or pruned after the retention: a 404, not a wait forever."""
    out = run(journal.await_output("inv_nobody"))
    assert isinstance(out, Outcome) and (out.ok, out.failure_code) == (False, 404)
    assert "unknown invocation inv_nobody" in (out.failure or "")
    assert journal._waiters == {}


def test_a_failed_write_fails_its_callers_and_the_next_one_works(
    journal: GroupCommitJournal,
) -> None:
    bad = Batch("bad", [Entry("inv_1", "x", "run", "a")])  # type: ignore[arg-type]

    async def body() -> None:
        with pytest.raises(Exception):  # noqa: B017 - whatever DuckDB raises for the bad value
            await journal.commit(bad)
        await journal.commit(Batch("good", [StateWrite("Obj", "k", "x", "1")]))

    run(body())
    assert journal.store.load_state("Obj", "k") == {"x": "1"}


def test_sql_or_error_returns_refusals_as_data(journal: GroupCommitJournal) -> None:
    async def body() -> tuple[object, object, object]:
        return (
            await journal.sql_or_error("SELECT 1 AS one"),
            await journal.sql_or_error("DROP TABLE log"),
            await journal.sql_or_error("SELECT * FROM read_csv('/etc/passwd')"),
        )

    table, refused, denied = run(body())
    assert table.to_pylist() == [{"one": 1}]  # type: ignore[attr-defined]
    assert isinstance(refused, SqlRefused) and "not DROP" in str(refused)
    assert isinstance(denied, SqlRefused) and "read_csv() is not allowed" in str(denied)


def test_info_and_config(journal: GroupCommitJournal, data_dir: Path) -> None:
    journal.set_config({"pool_size": 4})
    assert journal.config() == {"pool_size": 4, SECRET: journal.secret}
    info = journal.info()
    assert info["data_dir"] == str(data_dir.resolve()) and info["transactions"] == 0


def test_route_of_a_recent_invocation_needs_no_read(journal: GroupCommitJournal) -> None:
    async def body() -> list[object]:
        await journal.commit(Batch("b0", [Accept("inv_1", "Obj", "h", "k", 7, "{}")]))
        undrained = journal.store.undrained  # a store read would drain these into DuckDB
        got: list[object] = [
            await journal.route("inv_1"),
            undrained,
            journal.store.undrained,
            await journal.route("inv_nobody"),
        ]
        journal._routes.clear()  # as after a prune, or a restart: the store answers
        got.append(await journal.route("inv_1"))
        return got

    route = ("Obj", "k", 7)
    undrained = run(body())
    assert undrained[0] == route and undrained[4] == route
    assert undrained[1] == undrained[2] != 0, "answered from memory, without draining"
    assert undrained[3] is None

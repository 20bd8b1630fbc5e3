"""Awakeables on one host against a real journal (no Ray): a recovered invocation whose last
durable entry is an awakeable is replayed, not parked (the code that hands out the id may never
have run), and a resolution is refused as a second one only once the first is durable."""

from __future__ import annotations

import asyncio
import pickle
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.engine.awakeable_ids import AwakeableIds
from actors.sdk.errors import TerminalError
from journal.actor import CONFIG_FILE, GroupCommitJournal
from journal.records import Entry
from journal.secret import SECRET, SECRET_FILE, runtime_secret
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
        out = await host.invoke(request("Saga", "ask", "k", "trip", inv_id=req.id, resubmit=True))
        assert out is not None and out.ok and out.output == '"yes"'

    world.run(body)
    assert CALLS["trip.ask"] == 1


def test_ids_are_signed_with_the_secret() -> None:
    ids = AwakeableIds("s3cret")
    awk = ids.make("inv_abc", 3)
    assert ids.parse(awk) == ("inv_abc", 3)
    assert AwakeableIds("s3cret").parse(awk) == ("inv_abc", 3)  # same secret, same verdict
    for forged in [
        AwakeableIds("other").make("inv_abc", 3),
        awk.replace("_3_", "_4_"),
        ids.make("inv_abd", 3).replace("inv_abd", "inv_abc"),
    ]:
        with pytest.raises(TerminalError, match="malformed") as e:
            ids.parse(forged)
        assert e.value.status_code == 400


def test_the_secret_is_made_once_per_data_dir_and_private(tmp_path: Path) -> None:
    first = runtime_secret(tmp_path)
    assert len(first) == 64 and runtime_secret(tmp_path) == first
    mode = stat.S_IMODE((tmp_path / SECRET_FILE).stat().st_mode)
    assert mode == 0o600, oct(mode)
    (tmp_path / "other").mkdir()
    assert runtime_secret(tmp_path / "other") != first


def test_the_journal_hands_out_the_secret_but_keeps_it_out_of_the_config_file(
    data_dir: Path,
) -> None:
    journal = GroupCommitJournal(str(data_dir))
    assert journal.config() == {}, "no secret before a runtime set its config"
    journal.set_config({"pool_size": 2, SECRET: "ignored"})
    assert journal.config() == {"pool_size": 2, SECRET: journal.secret}
    assert pickle.loads((data_dir / CONFIG_FILE).read_bytes()) == {"pool_size": 2}
    secret = journal.secret
    journal.store.close()
    again = GroupCommitJournal(str(data_dir))
    assert again.secret == secret  # a restart keeps it
    again.store.close()


def test_a_handlers_resolution_delivered_again_is_the_same_one(data_dir: Path) -> None:
    """A resolving handler that crashed before journaling its verdict delivers again on
    replay; the owner recognises the resolution by its entry (``by``) and answers delivered,
    while anyone else still gets 409: before and after the awaiting invocation finished, and
    from the journal after a host restart."""
    world = World(data_dir)
    req = request("Saga", "ask", "k", "trip")
    host = world.host(saga)
    by = "inv_resolver:2"

    async def body() -> None:
        task = asyncio.ensure_future(host.invoke(req))
        await asyncio.wait_for(EVENTS["asked:trip"].wait(), 5)
        awk = SEEN[-1]["awk"]
        assert (await host.resolve_awakeable(awk, '"yes"', None, by))[0]
        assert (await host.resolve_awakeable(awk, '"yes"', None, by))[0], "same one again"
        assert (await host.resolve_awakeable(awk, '"no"', None, "inv_other:2"))[2] == 409
        assert (await host.resolve_awakeable(awk, '"no"', None))[2] == 409
        out = await task
        assert out is not None and out.output == '"yes"'
        fresh = world.host(saga)  # knows nothing in memory: the journal decides
        assert (await fresh.resolve_awakeable(awk, '"yes"', None, by))[0]
        assert (await fresh.resolve_awakeable(awk, '"no"', None, "inv_other:2"))[2] == 409

    world.run(body)
    [row] = world.sql(
        "SELECT count(*) AS n FROM sys_journal WHERE entry_type = 'awakeable' AND completed"
    )
    assert row["n"] == 1


def test_a_wrong_value_is_refused_while_a_recovered_invocation_replays(data_dir: Path) -> None:
    """Right after a host (re)starts, its recovered invocation has not replayed to
    ``ctx.awakeable`` yet: the resolution waits for the type instead of writing a value of the
    wrong type."""
    world = World(data_dir)
    req = request("Saga", "ask", "k", "trip")
    world.prewrite(
        accept_of(req),
        Entry(req.id, 0, "awakeable", None, completed=False),
        Entry(req.id, 1, "run", "ask", '"trip.ask"'),
    )
    host = world.host(saga)
    awk = AwakeableIds(world.journal.secret).make(req.id, 0)

    async def body() -> None:
        await host.start()  # the replay is scheduled, not run yet
        wrong = await host.resolve_awakeable(awk, '{"not": "a string"}', None)
        assert wrong[0] is False and wrong[2] == 400, wrong
        ok, message, code = await host.resolve_awakeable(awk, '"yes"', None)
        assert ok, (message, code)
        out = await host.invoke(request("Saga", "ask", "k", "trip", inv_id=req.id, resubmit=True))
        assert out is not None and out.ok and out.output == '"yes"'

    world.run(body)
    assert CALLS["trip.ask"] == 0, "the journaled step was not run again"

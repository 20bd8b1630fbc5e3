"""Durable schedules on a real runtime: every tick once, never early, none missed within the
catch-up window while the schedule runner, the timer scheduler and the journal are killed;
pause and resume; overlap "skip"; a whole runtime stopped and started on the same data dir;
the CLI; bad input refused before anything is written.

Each tick's handler writes "start <ms> <invocation id>" to a ledger file outside the processes
(in ``ctx.run``: once per invocation); the tick's time comes from the journal
(``sys_invocation.invoked_by_id``, ``scheduler.schedules.tick_key``)."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest
import ray
from typer.testing import CliRunner

from actors import Runtime, TerminalError
from actors.client.cli import app
from actors.cluster.names import SCHEDULER, SCHEDULES
from journal.store import DB_FILE
from scheduler.schedules import tick_time_ms
from tests.conftest import assert_eventually
from tests.integration import apps
from tests.integration.helpers import journal_of, kill_and_restart, wait_serving
from tests.integration.schedule_apps import SCHEDULE_APPS, hold, obj_tick, tick

SECOND = timedelta(seconds=1)
SERVICES = [*SCHEDULE_APPS, apps.approval]


def starts(ledger: Path) -> dict[str, list[int]]:
    """Invocation id -> the start times the ledger holds for it."""
    out: dict[str, list[int]] = {}
    if ledger.exists():
        for line in ledger.read_text().splitlines():
            what, *rest = line.split(" ")
            if what == "start":
                out.setdefault(rest[1], []).append(int(rest[0]))
    return out


def ticks(rt: Runtime, schedule_id: str) -> dict[str, tuple[int, str]]:
    """Invocation id -> (tick time, status) of the schedule's ticks, from the journal."""
    table = rt.sql(
        "SELECT id, invoked_by_id, status FROM sys_invocation"
        f" WHERE starts_with(invoked_by_id, 'schedule:{schedule_id}@')"
    )
    out = {}
    for r in table.to_pylist():
        parsed = tick_time_ms(r["invoked_by_id"])
        assert parsed is not None and parsed[0] == schedule_id
        out[r["id"]] = (parsed[1], r["status"])
    return out


def check_ticks(rt: Runtime, schedule_id: str, ledger: Path, every_ms: int = 1_000) -> list[int]:
    """For a paused schedule, once every tick the journal holds completed: each ran once,
    none early, and none was missed between the first and the last. Returns the tick times."""
    [last] = [s.last_invocation_id for s in rt.schedules() if s.id == schedule_id]
    assert_eventually(lambda: last in ticks(rt, schedule_id), message="the last tick accepted")
    assert_eventually(
        lambda: all(s == "completed" for _, s in ticks(rt, schedule_id).values()),
        timeout=60,
        message="every tick's invocation completed",
    )
    journal = ticks(rt, schedule_id)
    ran = starts(ledger)
    assert set(ran) == set(journal), "a tick ran that the journal does not hold, or not at all"
    for inv, (tick_ms, _) in journal.items():
        assert len(ran[inv]) == 1, f"tick {tick_ms} ran {len(ran[inv])} times"
        assert ran[inv][0] >= tick_ms, f"tick {tick_ms} started {tick_ms - ran[inv][0]} ms early"
    times = sorted(t for t, _ in journal.values())
    assert times == list(range(times[0], times[-1] + 1, every_ms)), "a tick was missed"
    return times


def count_ticks(rt: Runtime, schedule_id: str) -> int:
    return len(ticks(rt, schedule_id))


def _opens_read_only(path: Path) -> bool:
    try:
        duckdb.connect(str(path), read_only=True).close()
    except duckdb.IOException:
        return False
    return True


def runner_of(rt: Runtime):
    return ray.get_actor(SCHEDULES, namespace=rt.namespace)


def test_every_second_ticks_once_never_early_through_kills(start_runtime, tmp_path) -> None:
    rt = start_runtime(SERVICES)
    ledger = tmp_path / "ledger"
    rt.schedule("every", tick, arg=str(ledger), every=SECOND, overlap="allow_all")
    seen = 2
    assert_eventually(lambda: count_ticks(rt, "every") >= seen, message="first ticks")
    for name in (SCHEDULES, SCHEDULER):
        actor = ray.get_actor(name, namespace=rt.namespace)
        kill_and_restart(actor)
        wait_serving(actor)
        seen += 2
        assert_eventually(
            lambda n=seen: count_ticks(rt, "every") >= n, message=f"ticks after {name}"
        )
    kill_and_restart(journal_of(rt))
    wait_serving(journal_of(rt))
    seen += 2
    assert_eventually(lambda: count_ticks(rt, "every") >= seen, message="ticks after the journal")
    rt.pause_schedule("every")
    times = check_ticks(rt, "every", ledger)
    assert len(times) >= seen


def test_pause_stops_ticks_and_resume_does_not_burst(start_runtime, tmp_path) -> None:
    rt = start_runtime(SERVICES)
    ledger = tmp_path / "ledger"
    rt.schedule("p", tick, arg=str(ledger), every=SECOND, catchup=timedelta(minutes=5))
    # a witness: ticks of its own while "p" is paused show that ticks' time went by
    rt.schedule("w", tick, arg=str(tmp_path / "witness"), every=SECOND)
    assert_eventually(lambda: count_ticks(rt, "p") >= 1, message="a first tick")
    rt.pause_schedule("p")
    paused = next(s for s in rt.schedules() if s.id == "p")
    assert paused.paused and paused.next_fire_at is None
    # the last tick recorded before the pause may still be on its way to its host
    assert_eventually(lambda: paused.last_invocation_id in ticks(rt, "p"), message="last tick")
    before, witnessed = count_ticks(rt, "p"), count_ticks(rt, "w")
    assert_eventually(lambda: count_ticks(rt, "w") >= witnessed + 3, message="witness ticks")
    assert count_ticks(rt, "p") == before, "a paused schedule ticked"
    resumed_at_ms = time.time_ns() // 1_000_000
    rt.resume_schedule("p")
    assert_eventually(lambda: count_ticks(rt, "p") >= before + 2, message="ticks after resume")
    rt.pause_schedule("p")
    journal = ticks(rt, "p")
    after = sorted(t for t, _ in journal.values())[before:]
    assert all(t > resumed_at_ms for t in after), "resume caught up the paused ticks"
    assert after == list(range(after[0], after[-1] + 1, 1_000)), "a burst or a gap after resume"


def test_skip_skips_ticks_while_the_previous_runs(start_runtime, tmp_path) -> None:
    rt = start_runtime(SERVICES)
    ledger = tmp_path / "ledger"
    rt.schedule("skip", hold, arg=str(ledger), every=SECOND, overlap="skip")
    assert_eventually(lambda: "awk " in (ledger.read_text() if ledger.exists() else ""))
    [first] = ticks(rt, "skip").values()

    def skipped_two() -> bool:
        [s] = rt.schedules()
        return s.next_fire_at is not None and s.next_fire_at.timestamp() * 1000 >= first[0] + 3_000

    assert_eventually(skipped_two, message="the runner moving past two ticks")
    assert count_ticks(rt, "skip") == 1, "a tick started while the previous one ran"
    awk = next(line.split(" ")[1] for line in ledger.read_text().splitlines() if "awk" in line)
    rt.resolve_awakeable(awk)
    assert_eventually(lambda: count_ticks(rt, "skip") == 2, message="a tick after completion")
    later = max(t for t, _ in ticks(rt, "skip").values())
    assert later >= first[0] + 3_000, "a skipped tick ran later"
    assert_eventually(lambda: ledger.read_text().count("awk ") == 2)
    rt.delete_schedule("skip")  # while its second tick runs: that one completes, no more come
    assert rt.schedules() == []
    awk = [line.split(" ")[1] for line in ledger.read_text().splitlines() if "awk" in line][1]
    rt.resolve_awakeable(awk)

    def both_completed() -> bool:
        return [s for _, s in ticks(rt, "skip").values()] == ["completed"] * 2

    assert_eventually(both_completed, message="the running tick completed after the delete")


def test_whole_runtime_restart_keeps_the_schedule(start_runtime, tmp_path) -> None:
    data, ledger = tmp_path / "data", tmp_path / "ledger"
    rt = start_runtime(SERVICES, data_dir=data)
    rt.schedule("keep", obj_tick, key="k", arg=str(ledger), every=SECOND, overlap="allow_all")
    assert_eventually(lambda: count_ticks(rt, "keep") >= 2, message="ticks before the stop")
    rt.shutdown()
    rt2 = start_runtime(SERVICES, data_dir=data)  # a new namespace: new actors, same data
    [kept] = rt2.schedules()
    assert (kept.id, kept.target, kept.key) == ("keep", "TickObj/obj_tick", "k")
    assert_eventually(lambda: runner_of(rt2), message="the runner started with the runtime")
    assert_eventually(lambda: count_ticks(rt2, "keep") >= 4, message="ticks after the restart")
    rt2.pause_schedule("keep")
    check_ticks(rt2, "keep", ledger)  # the catch-up window (1 min) covers the stop
    rt2.delete_schedule("keep")


def test_cli_lists_pauses_resumes_deletes(start_runtime, tmp_path) -> None:
    data = tmp_path / "data"
    rt = start_runtime(SERVICES, data_dir=data)
    rt.schedule("nightly", tick, arg="x", cron="0 3 * * *", timezone="Europe/Berlin")
    cli = CliRunner()
    ns = ["--namespace", rt.namespace]

    def listed(*extra: str) -> list[dict]:
        result = cli.invoke(app, ["schedules", "-f", "json", *extra])
        assert result.exit_code == 0, result.output
        return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]

    [row] = listed(*ns)
    assert (row["target"], row["spec"], row["timezone"], row["overlap"], row["paused"]) == (
        "Ticks/tick",
        "0 3 * * *",
        "Europe/Berlin",
        "skip",
        False,
    )
    assert row["next_fire_at"].endswith(("01:00:00.000Z", "02:00:00.000Z"))  # 03:00 in Berlin
    for what, paused in (("pause", True), ("resume", False)):
        result = cli.invoke(app, ["schedule", what, "nightly", *ns])
        assert result.exit_code == 0 and f"nightly: {what}d" in result.stdout, result.output
        assert listed(*ns)[0]["paused"] is paused
    missing = cli.invoke(app, ["schedule", "pause", "nope", *ns])
    assert missing.exit_code == 1 and "unknown schedule 'nope'" in missing.stderr
    rt.shutdown()
    assert_eventually(
        lambda: _opens_read_only(data / DB_FILE), timeout=60, message="the journal let go"
    )
    assert listed("--db", str(data))[0]["id"] == "nightly", "read offline"
    rt = start_runtime(SERVICES, data_dir=data)
    result = cli.invoke(app, ["schedule", "delete", "nightly", "--namespace", rt.namespace])
    assert result.exit_code == 0, result.output
    assert rt.schedules() == []


def test_bad_input_is_refused_before_anything_is_written(start_runtime) -> None:
    rt = start_runtime(SERVICES)
    cases = [
        (dict(cron="0 3 * *"), 400, "malformed cron"),
        (dict(cron="0 3 * * *", timezone="Europe/Nowhere"), 400, "unknown time zone"),
        (dict(every=timedelta(0)), 400, "every must be positive"),
        (dict(every=-1.0), 400, "every must be positive"),
        (dict(), 400, "exactly one"),
        (dict(cron="0 3 * * *", every=SECOND), 400, "exactly one"),
        (dict(every=SECOND, overlap="sometimes"), 400, "overlap must be one of"),
        (dict(every=SECOND, catchup=timedelta(seconds=-1)), 400, "catchup must not be negative"),
    ]
    for kwargs, code, message in cases:
        with pytest.raises(TerminalError, match=message) as e:
            rt.schedule("bad", tick, arg="x", **kwargs)  # type: ignore[arg-type]
        assert e.value.status_code == code
    with pytest.raises(TerminalError, match="unknown service") as e:
        rt.schedule("bad", "Nope/x", every=SECOND)
    assert e.value.status_code == 404
    with pytest.raises(TerminalError, match="pass key=") as e:
        rt.schedule("bad", obj_tick, arg="x", every=SECOND)
    assert e.value.status_code == 400
    with pytest.raises(TerminalError, match="takes no key"):
        rt.schedule("bad", tick, key="k", arg="x", every=SECOND)
    with pytest.raises(TerminalError, match="input of"):
        rt.schedule("bad", apps.await_approval, key="k", arg={"nonsense": 1}, every=SECOND)
    assert rt.schedules() == []
    with pytest.raises(ValueError):  # nothing written, so no runner process either
        runner_of(rt)
    rt.schedule("dup", tick, arg="x", cron="0 3 * * *")
    with pytest.raises(TerminalError, match="exists") as e:
        rt.schedule("dup", tick, arg="y", every=SECOND)
    assert e.value.status_code == 409
    [dup] = rt.schedules()
    assert (dup.spec, dup.input) == ("0 3 * * *", '"x"'), "the first definition stays"
    with pytest.raises(TerminalError, match="unknown schedule") as e:
        rt.delete_schedule("nope")
    assert e.value.status_code == 404

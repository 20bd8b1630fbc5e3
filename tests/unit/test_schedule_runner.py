"""The schedule runner against a real ``JournalStore`` and a fake submit, with an injected
clock (no Ray): overlap policies, catch-up at load, a tick recorded but never submitted, pause
and delete racing a tick; and the journal's schedule rows (duplicates, resume)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from actors.cluster.schedule_runner import ScheduleRunner
from actors.sdk.errors import TerminalError
from journal.records import Accept, Batch, Outcome
from journal.schedules import Loaded, Progress, ScheduleRow
from journal.store import JournalStore
from scheduler.schedules import tick_time_ms

EVERY = 1_000
T0 = 1_000_000


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


class StoreJournal:
    def __init__(self, store: JournalStore) -> None:
        self.store = store
        self.outputs: dict[str, asyncio.Future[Outcome]] = {}

    async def load_schedules(self, ids: list[str] | None = None) -> list[Loaded]:
        return self.store.load_schedules(ids)

    async def schedule_progress(self, steps: list[Progress]) -> list[str]:
        return self.store.schedule_progress(steps)

    async def await_output(self, invocation_id: str) -> Outcome:
        fut = self.outputs.setdefault(invocation_id, asyncio.get_running_loop().create_future())
        return await fut


class Submits:
    """Records submitted ticks; each runs until the test completes it."""

    def __init__(self) -> None:
        self.ticks: list[tuple[str, int, str]] = []
        self.resubmitted: list[str] = []
        self.running: dict[str, asyncio.Future[None]] = {}

    async def __call__(
        self, row: ScheduleRow, tick: int, invocation_id: str, resubmit: bool
    ) -> None:
        self.ticks.append((row.id, tick, invocation_id))
        if resubmit:
            self.resubmitted.append(invocation_id)
        fut = self.running[invocation_id] = asyncio.get_running_loop().create_future()
        await fut

    def finish(self, invocation_id: str) -> None:
        self.running[invocation_id].set_result(None)


def row(schedule_id: str = "s", overlap: str = "skip", catchup_ms: int = 60_000) -> ScheduleRow:
    return ScheduleRow(
        schedule_id, "Svc", "h", None, "null", "@every 1s", None, EVERY, "UTC", overlap,
        catchup_ms, False, T0, T0, T0 + EVERY,
    )  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> JournalStore:
    s = JournalStore(tmp_path / "data")
    yield s  # type: ignore[misc]
    s.close()


async def until(fn: Callable[[], object], what: str = "condition") -> None:
    for _ in range(500):
        if fn():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{what} did not hold")


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(main())


async def step(runner: ScheduleRunner, clock: Clock, to_ms: int) -> None:
    """Move the clock and let the runner decide what fell due."""
    clock.now = to_ms
    runner._wakeup.set()
    await until(lambda: runner.queue.next_due_ms() is None or runner.queue.next_due_ms() > to_ms)
    await asyncio.sleep(0.02)


def start(store: JournalStore, clock: Clock, submits: Submits) -> ScheduleRunner:
    return ScheduleRunner(StoreJournal(store), submits, clock)


def test_skip_drops_ticks_while_the_previous_runs(store: JournalStore) -> None:
    async def main() -> None:
        clock, submits = Clock(), Submits()
        store.create_schedule(row(overlap="skip"))
        runner = start(store, clock, submits)
        await runner.loaded.wait()
        await step(runner, clock, T0 + EVERY)
        assert [t for _, t, _ in submits.ticks] == [T0 + EVERY]
        await step(runner, clock, T0 + 3 * EVERY)  # two ticks while it runs: skipped
        assert len(submits.ticks) == 1 and runner.skipped == 2
        submits.finish(submits.ticks[0][2])
        await until(lambda: runner.live["s"].running is None)
        await step(runner, clock, T0 + 4 * EVERY)
        assert [t for _, t, _ in submits.ticks] == [T0 + EVERY, T0 + 4 * EVERY]
        runner.close()

    run(main)


def test_buffer_one_starts_one_waiting_tick_when_the_previous_completes(
    store: JournalStore,
) -> None:
    async def main() -> None:
        clock, submits = Clock(), Submits()
        store.create_schedule(row(overlap="buffer_one"))
        runner = start(store, clock, submits)
        await runner.loaded.wait()
        await step(runner, clock, T0 + EVERY)
        await step(runner, clock, T0 + 2 * EVERY)  # buffered
        await step(runner, clock, T0 + 3 * EVERY)  # the buffer is full: skipped
        assert len(submits.ticks) == 1 and runner.live["s"].buffered_ms == T0 + 2 * EVERY
        submits.finish(submits.ticks[0][2])
        await until(lambda: len(submits.ticks) == 2, "the buffered tick started")
        assert submits.ticks[1][1] == T0 + 2 * EVERY, "it keeps its own tick time (and id)"
        [loaded] = store.load_schedules()
        assert loaded.row.last_invocation_id == submits.ticks[1][2]
        assert loaded.row.buffered_at_ms is None
        runner.close()

    run(main)


def test_allow_all_fires_every_tick(store: JournalStore) -> None:
    async def main() -> None:
        clock, submits = Clock(), Submits()
        store.create_schedule(row(overlap="allow_all"))
        runner = start(store, clock, submits)
        await runner.loaded.wait()
        for n in range(1, 4):
            await step(runner, clock, T0 + n * EVERY)
        assert [t for _, t, _ in submits.ticks] == [T0 + n * EVERY for n in range(1, 4)]
        assert len({i for _, _, i in submits.ticks}) == 3
        runner.close()

    run(main)


@pytest.mark.parametrize(("catchup_ms", "fired"), [(0, 0), (3_000, 3)])
def test_ticks_missed_while_down_run_per_catchup(
    store: JournalStore, catchup_ms: int, fired: int
) -> None:
    async def main() -> None:
        clock, submits = Clock(), Submits()
        store.create_schedule(row(overlap="allow_all", catchup_ms=catchup_ms))
        clock.now = T0 + 100 * EVERY + 500  # the runner starts 100 ticks late
        runner = start(store, clock, submits)
        await runner.loaded.wait()
        await step(runner, clock, clock.now)
        got = [t for _, t, _ in submits.ticks]
        assert got == [T0 + n * EVERY for n in range(101 - fired, 101)]
        await step(runner, clock, T0 + 101 * EVERY)
        assert submits.ticks[-1][1] == T0 + 101 * EVERY
        runner.close()

    run(main)


def test_a_tick_recorded_but_never_submitted_is_submitted_by_the_next_runner(
    store: JournalStore,
) -> None:
    async def main() -> None:
        clock, submits = Clock(), Submits()
        store.create_schedule(row())
        tick = T0 + EVERY
        inv = ScheduleRunner._invocation_id(row(), tick)
        store.schedule_progress([Progress("s", tick, tick + EVERY, tick, inv)])  # then died
        clock.now = tick + 500
        runner = start(store, clock, submits)
        await runner.loaded.wait()
        assert submits.ticks == [("s", tick, inv)], "the same tick, the same invocation id"
        assert submits.resubmitted == [inv], "marked: the host looks it up in the journal"
        runner.close()

    run(main)


def test_pause_and_delete_stop_ticks_resume_does_not_burst(store: JournalStore) -> None:
    async def main() -> None:
        clock, submits = Clock(), Submits()
        store.create_schedule(row(overlap="allow_all"))
        runner = start(store, clock, submits)
        await runner.loaded.wait()
        await step(runner, clock, T0 + EVERY)
        assert store.pause_schedule("s", True, clock.now)
        # a turn that decided a tick before it heard of the pause: the journal refuses it
        await step(runner, clock, T0 + 2 * EVERY)
        assert len(submits.ticks) == 1, "a paused schedule fired"
        await runner.refresh(["s"])
        await step(runner, clock, T0 + 30 * EVERY)
        assert len(submits.ticks) == 1
        assert store.pause_schedule("s", False, clock.now)
        await runner.refresh(["s"])
        await step(runner, clock, T0 + 31 * EVERY)
        assert [t for _, t, _ in submits.ticks] == [T0 + EVERY, T0 + 31 * EVERY], (
            "resume burst the ticks of the pause"
        )
        assert store.delete_schedule("s")
        await runner.refresh(["s"])
        await step(runner, clock, T0 + 40 * EVERY)
        assert len(submits.ticks) == 2 and "s" not in runner.live
        runner.close()

    run(main)


def test_tick_ids_carry_their_time_and_differ_per_tick() -> None:
    a = ScheduleRunner._invocation_id(row(), T0 + EVERY)
    b = ScheduleRunner._invocation_id(row(), T0 + 2 * EVERY)
    assert a != b and a.startswith("inv_") and len(a) == len("inv_") + 32
    assert a == ScheduleRunner._invocation_id(row(), T0 + EVERY)


def test_the_journal_refuses_a_duplicate_id_and_writes_nothing(store: JournalStore) -> None:
    assert store.create_schedule(row())
    other = row()
    other.handler = "other"
    assert not store.create_schedule(other)
    [loaded] = store.load_schedules()
    assert loaded.row.handler == "h"
    assert store.delete_schedule("s") and store.create_schedule(other), "a deleted id is free"
    assert not store.pause_schedule("nope", True, 0) and not store.delete_schedule("nope")


def test_resume_moves_the_cursor_only_of_a_paused_schedule(store: JournalStore) -> None:
    store.create_schedule(row())
    assert store.pause_schedule("s", False, T0 + 50 * EVERY)
    assert store.load_schedules()[0].row.cursor_ms == T0, "resuming a running one: no change"
    store.pause_schedule("s", True, 0)
    store.pause_schedule("s", False, T0 + 50 * EVERY)
    assert store.load_schedules()[0].row.cursor_ms == T0 + 50 * EVERY
    view = store.sql("SELECT id, target, spec, paused FROM sys_schedule").to_pylist()
    assert view == [{"id": "s", "target": "Svc/h", "spec": "@every 1s", "paused": False}]


def test_tick_time_helper_reads_a_tick_key() -> None:
    from scheduler.schedules import tick_key

    assert tick_time_ms(tick_key("s", T0)) == ("s", T0)


def test_a_clock_jumping_forward_an_hour_does_not_burst_an_hours_ticks(
    store: JournalStore,
) -> None:
    async def main() -> None:
        clock, submits = Clock(), Submits()
        store.create_schedule(row(overlap="allow_all", catchup_ms=0))
        runner = start(store, clock, submits)
        await runner.loaded.wait()
        await step(runner, clock, T0 + EVERY)
        await step(runner, clock, T0 + 3_600 * EVERY)  # an hour later, all at once
        late = [t for _, t, _ in submits.ticks[1:]]
        assert late == list(range(T0 + 3_590 * EVERY, T0 + 3_601 * EVERY, EVERY)), (
            "only the ticks within LATE_GRACE_MS run"
        )
        runner.close()

    run(main)


def test_a_tick_a_previous_runner_started_holds_skip_until_the_journal_has_its_output(
    store: JournalStore,
) -> None:
    async def main() -> None:
        clock, submits = Clock(), Submits()
        store.create_schedule(row(overlap="skip"))
        tick = T0 + EVERY
        inv = ScheduleRunner._invocation_id(row(), tick)
        store.schedule_progress([Progress("s", tick, tick + EVERY, tick, inv)])
        store.write([Batch("b1", [Accept(inv, "Svc", "h", None, 0, "null")])])  # it runs
        clock.now = tick + 500
        journal = StoreJournal(store)
        runner = ScheduleRunner(journal, submits, clock)
        await runner.loaded.wait()
        assert submits.ticks == [] and runner.live["s"].running == inv
        await step(runner, clock, T0 + 3 * EVERY)
        assert submits.ticks == [] and runner.skipped == 2, "skipped while the old tick runs"
        journal.outputs[inv].set_result(Outcome(True, "null"))
        await until(lambda: runner.live["s"].running is None)
        await step(runner, clock, T0 + 4 * EVERY)
        assert [t for _, t, _ in submits.ticks] == [T0 + 4 * EVERY]
        runner.close()

    run(main)


def test_a_tick_that_cannot_be_submitted_does_not_stop_the_schedule(store: JournalStore) -> None:
    async def main() -> None:
        clock, calls = Clock(), []

        async def unknown_service(row: ScheduleRow, tick: int, inv: str, resubmit: bool) -> None:
            calls.append(tick)
            raise TerminalError("service 'Svc' is not part of this runtime", 404)

        store.create_schedule(row(overlap="skip"))
        runner = ScheduleRunner(StoreJournal(store), unknown_service, clock)
        await runner.loaded.wait()
        await step(runner, clock, T0 + EVERY)
        await until(lambda: runner.live["s"].running is None)
        await step(runner, clock, T0 + 2 * EVERY)
        assert calls == [T0 + EVERY, T0 + 2 * EVERY], "logged, and the next tick still fires"
        runner.close()

    run(main)


def test_a_tick_whose_submission_fails_transiently_is_sent_again(store: JournalStore) -> None:
    """A recorded tick must run: a failure that may pass (a socket error, a journal that is
    restarting) sends it again, marked as re-sent so the host looks it up first."""

    async def main() -> None:
        clock, calls = Clock(), []

        async def flaky(row: ScheduleRow, tick: int, inv: str, resubmit: bool) -> None:
            calls.append((tick, resubmit))
            if len(calls) == 1:
                raise OSError(107, "Transport endpoint is not connected")

        store.create_schedule(row(overlap="skip"))
        runner = ScheduleRunner(StoreJournal(store), flaky, clock)
        await runner.loaded.wait()
        await step(runner, clock, T0 + EVERY)
        await until(lambda: len(calls) == 2, "the tick sent again")
        assert calls == [(T0 + EVERY, False), (T0 + EVERY, True)]
        await until(lambda: runner.live["s"].running is None, "the tick completed")
        runner.close()

    run(main)

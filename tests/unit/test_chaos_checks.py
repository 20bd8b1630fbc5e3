"""The chaos run's ledger checks and fault schedule (``benchmarks.chaos_checks``), without
Ray: each check must pass a clean history and catch the violation it exists for."""

from __future__ import annotations

from benchmarks.chaos_checks import check_runs, make_schedule, overlaps

KINDS = ["host_kill", "handler_exit", "await_exit", "journal_kill", "scheduler_kill", "driver_kill"]


def test_overlaps_accepts_one_after_another_and_replays() -> None:
    lines = [
        "enter k a 1",
        "exit k a 1",
        "enter k b 1",
        "enter k b 1",
        "exit k b 1",
        "enter j c 2",
        "enter k d 1",
        "exit j c 2",
        "exit k d 1",
    ]
    assert overlaps(lines) == "ok"


def test_overlaps_catches_a_second_handler_inside() -> None:
    lines = ["enter k a 1", "enter k b 2", "exit k b 2", "exit k a 1"]
    assert "b entered k while a was inside" in overlaps(lines)


def test_overlaps_lets_another_process_take_over_once_the_first_died() -> None:
    assert overlaps(["enter k a 1", "dead 1", "enter k b 2", "exit k b 2"]) == "ok"


def test_overlaps_counts_only_a_death_after_the_enter() -> None:
    """pid 1 died before a entered in a new process with the same pid: still alive."""
    assert overlaps(["dead 1", "enter k a 1", "enter k b 2"]) != "ok"


def never_alive(pid: int) -> bool:
    return False


def always_alive(pid: int) -> bool:
    return True


def test_check_runs_accepts_an_execution_lost_with_its_process() -> None:
    lines = ["run i s0 n1 10 a1", "dead 10", "run i s0 n2 11 a2"]
    result = check_runs(lines, {("i", "s0"): "n2"}, always_alive)
    assert result.problems == []
    assert (result.executions, result.journaled, result.lost_with_process) == (2, 1, 1)


def test_check_runs_catches_a_rerun_after_journaling() -> None:
    lines = ["run i s0 n1 10 a1", "dead 10", "run i s0 n2 11 a2"]
    problems = check_runs(lines, {("i", "s0"): "n1"}, never_alive).problems
    assert len(problems) == 1 and "ran again" in problems[0]


def test_check_runs_catches_an_unjournaled_execution_of_a_living_process() -> None:
    lines = ["run i s0 n1 10 a1", "run i s0 n2 10 a2"]
    problems = check_runs(lines, {("i", "s0"): "n2"}, always_alive).problems
    assert len(problems) == 1 and "lived on" in problems[0]
    # a death nobody wrote down still counts when the process is gone by now
    assert check_runs(lines, {("i", "s0"): "n2"}, never_alive).problems == []


def test_check_runs_catches_a_journaled_result_no_execution_produced() -> None:
    problems = check_runs(["run i s0 n1 10 a1"], {("i", "s0"): "zz"}, never_alive).problems
    assert any("executed 0x" in p for p in problems)


def test_schedule_is_reproducible_and_opens_with_every_kind() -> None:
    first = make_schedule(3, 15.0, KINDS)
    assert first == make_schedule(3, 15.0, KINDS)
    assert first != make_schedule(4, 15.0, KINDS)
    assert sorted(f.kind for f in first[: len(KINDS)]) == sorted(KINDS)
    assert all(0 < f.at < 15.0 for f in first)
    assert [f.at for f in first] == sorted(f.at for f in first)

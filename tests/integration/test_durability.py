"""Guarantees 1, 2, 3, 7, 8, 9 of DESIGN.md, each proved by killing something for real.

Side effects are counted in ledger files written by the handlers, outside Ray's processes.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import ray

from actors import Runtime, TerminalError
from tests.conftest import assert_eventually, ledger_lines
from tests.integration import apps
from tests.integration.helpers import host_of, journal_of, kill_and_restart, wait_serving


def test_journaled_run_never_runs_again_after_os_exit(rt: Runtime, ledger: str, tmp_path) -> None:
    """Guarantee 1: the host process exits inside step b; step a (journaled) runs once."""
    job = apps.Job(ledger=ledger, marker=str(tmp_path / "crashed"))
    handle = rt.send(apps.two_steps, key="k1", arg=job)
    assert handle.result(timeout=60) == 1
    lines = ledger_lines(ledger)
    assert Path(job.marker).exists(), "the crash point was never reached"
    assert lines.count("a:k1") == 1
    assert lines.count("b:k1") == 2
    assert lines.count("body:k1") == 2


@pytest.mark.parametrize("always_replay", [False, True], ids=["default", "always-replay"])
def test_run_is_durable_when_its_await_returns(
    start_runtime, ledger: str, tmp_path, monkeypatch: pytest.MonkeyPatch, always_replay: bool
) -> None:
    """Guarantee 1: the host process exits in plain code right after ``await ctx.run("a")``
    returned, before the handler's next action; after recovery step a has run once. With
    ``RAYSTATE_ALWAYS_REPLAY=1`` (every wait evicts) step a runs after a replayed sleep."""
    if always_replay:
        monkeypatch.setenv("RAYSTATE_ALWAYS_REPLAY", "1")
    rt = start_runtime()
    job = apps.Job(
        ledger=ledger, marker=str(tmp_path / "crashed"), tag="sleep-first" if always_replay else ""
    )
    assert rt.send(apps.step_then_exit, key="g1", arg=job).result(timeout=60) == 1
    assert Path(job.marker).exists(), "the crash point was never reached"
    lines = ledger_lines(ledger)
    assert lines.count("a:g1") == 1
    assert lines.count("b:g1") == 1


def test_journaled_run_survives_ray_kill_mid_handler(rt: Runtime, ledger: str, tmp_path) -> None:
    """Guarantee 1 with ray.kill: the host is killed while step b waits at a gate."""
    gate = tmp_path / "gate"
    handle = rt.send(apps.gated, key="k2", arg=apps.Job(ledger=ledger, gate=str(gate), tag="x"))
    assert_eventually(lambda: "b:k2:x" in ledger_lines(ledger), message="step b started")
    kill_and_restart(host_of(rt, "Steps", "k2"))
    assert_eventually(
        lambda: ledger_lines(ledger).count("b:k2:x") == 2, message="step b re-ran after the kill"
    )
    gate.touch()
    assert handle.result(timeout=60) == "opened"
    lines = ledger_lines(ledger)
    assert lines.count("a:k2:x") == 1
    assert lines.count("b:k2:x") == 2


def check_exclusive(lines: list[str], key: str) -> list[str]:
    """Exclusive handlers of ``key`` never overlapped; return tags in the order they ran.

    A tag may re-enter without an exit only right after itself (its host died inside it)."""
    current = None
    order: list[str] = []
    for line in lines:
        kind, k, tag = line.split(":")
        if k != key:
            continue
        if kind == "enter":
            assert current in (None, tag), f"{tag} entered while {current} was running"
            if current is None and tag not in order:
                order.append(tag)
            current = tag
        else:
            assert current == tag, f"{tag} exited while {current} was running"
            current = None
    assert current is None
    return order


def test_exclusive_handlers_serialized_in_acceptance_order_across_crash(
    rt: Runtime, ledger: str, tmp_path
) -> None:
    """Guarantee 2: 20 sends to one key; the host dies inside the 10th."""
    marker = str(tmp_path / "crashed")
    handles = [
        rt.send(
            apps.exclusive,
            key="k3",
            arg=apps.Job(ledger=ledger, tag=f"t{i:02}", marker=marker if i == 10 else ""),
        )
        for i in range(20)
    ]
    for h in handles:
        h.result(timeout=60)
    assert Path(marker).exists()
    lines = ledger_lines(ledger)
    assert check_exclusive(lines, "k3") == [f"t{i:02}" for i in range(20)]
    assert lines.count("enter:k3:t10") == 2


def test_state_change_applied_once_when_retried_after_crash(
    rt: Runtime, ledger: str, tmp_path
) -> None:
    """Guarantee 3: the set is durable with step a; the crash in b replays, n stays 1."""
    job = apps.Job(ledger=ledger, marker=str(tmp_path / "crashed"))
    assert rt.send(apps.set_then_crash, key="k4", arg=job).result(timeout=60) == 1
    assert Path(job.marker).exists()
    assert ledger_lines(ledger).count("a:k4") == 1
    state = rt.sql("SELECT value FROM state WHERE service_name='Steps' AND service_key='k4'")
    assert state.column("value").to_pylist() == ["1"]
    job2 = apps.Job(ledger=ledger, marker=job.marker)
    assert rt.call(apps.set_then_crash, key="k4", arg=job2) == 2


def test_idempotency_key_executes_once(shared_rt: Runtime, ledger: str) -> None:
    """Guarantee 7: sequential and concurrent submissions with one key run once."""
    rt = shared_rt
    job = apps.Job(ledger=ledger)
    first = rt.send(apps.two_steps, key="k5", arg=job, idempotency_key="order-1")
    results: list[int] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(
                rt.call(apps.two_steps, key="k5", arg=job, idempotency_key="order-1")
            )
        )
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert first.result(timeout=30) == 1
    assert results == [1, 1, 1, 1]
    assert rt.call(apps.two_steps, key="k5", arg=job, idempotency_key="order-1") == 1
    assert ledger_lines(ledger).count("body:k5") == 1
    rows = rt.sql(
        "SELECT count(*) AS n FROM sys_invocation WHERE idempotency_key='order-1' "
        "AND target_service_key = 'k5'"
    )
    assert rows.column("n").to_pylist() == [1]
    # a different key is a different invocation
    assert rt.call(apps.two_steps, key="k5", arg=job, idempotency_key="order-2") == 2


def test_send_is_durable_when_it_returns(rt: Runtime, ledger: str, tmp_path) -> None:
    """Guarantee 8: right after send returns, host and journal are killed; nothing is lost."""
    gate = tmp_path / "gate"
    handles = [
        rt.send(apps.gated, key=f"s{i}", arg=apps.Job(ledger=ledger, gate=str(gate), tag="g"))
        for i in range(6)
    ]
    kill_and_restart(journal_of(rt))
    for i in range(6):
        kill_and_restart(host_of(rt, "Steps", f"s{i}"))
    gate.touch()
    assert [h.result(timeout=90) for h in handles] == ["opened"] * 6
    rows = rt.sql("SELECT count(*) AS n FROM sys_invocation WHERE status = 'completed'")
    assert rows.column("n").to_pylist() == [6]


def test_replay_divergence_is_a_journal_mismatch(shared_rt: Runtime, ledger: str, tmp_path) -> None:
    """Guarantee 9: the retry takes another path; the attempt fails naming both entries."""
    rt = shared_rt
    job = apps.Job(ledger=ledger, marker=str(tmp_path / "first-attempt-done"))
    with pytest.raises(TerminalError) as err:
        rt.call(apps.diverge, key="k6", arg=job)
    assert "JournalMismatch" in err.value.message
    assert "run('a')" in err.value.message and "run('b')" in err.value.message
    row = rt.sql(
        "SELECT status, retry_count, last_failure, completion_failure "
        "FROM sys_invocation WHERE target = 'Steps/k6/diverge'"
    ).to_pylist()[0]
    assert row["status"] == "completed" and row["retry_count"] == 2
    assert "journal mismatch" in row["last_failure"] and "index 0" in row["last_failure"]
    assert ledger_lines(ledger) == ["a"]


def test_retries_resume_from_the_journal(shared_rt: Runtime, ledger: str) -> None:
    rt = shared_rt
    assert rt.call(apps.flaky, key="k7", arg=apps.Job(ledger=ledger)) == 3
    assert ledger_lines(ledger).count("a") == 1
    rows = rt.sql(
        "SELECT retry_count, last_failure FROM sys_invocation WHERE target = 'Steps/k7/flaky'"
    ).to_pylist()
    assert len(rows) == 1
    row = rows[0]
    assert row["retry_count"] == 2 and "RuntimeError: flaky" in row["last_failure"]


def test_terminal_error_from_run_is_journaled(shared_rt: Runtime, ledger: str) -> None:
    rt = shared_rt
    with pytest.raises(TerminalError) as err:
        rt.call(apps.terminal, key="k8", arg=apps.Job(ledger=ledger))
    assert err.value.status_code == 402 and err.value.message == "card declined"
    assert ledger_lines(ledger) == ["charge"]
    row = rt.sql(
        "SELECT id, completion_result, completion_failure FROM sys_invocation "
        "WHERE target = 'Steps/k8/terminal'"
    ).to_pylist()
    assert [{k: r[k] for k in ("completion_result", "completion_failure")} for r in row] == [
        {"completion_result": "failure", "completion_failure": "card declined"}
    ]
    entry = rt.sql(
        "SELECT entry_type, result FROM sys_journal "
        f"WHERE invocation_id = '{row[0]['id']}' ORDER BY index"
    ).to_pylist()
    assert entry[0]["entry_type"] == "run" and "card declined" in entry[0]["result"]


def test_retry_policy_gives_up(shared_rt: Runtime) -> None:
    with pytest.raises(TerminalError, match="gave up after 2 attempts"):
        shared_rt.call(apps.always_fails, key="k9")


def under_faults(
    killer: Callable[[threading.Event], int], clients: list[Callable[[], None]]
) -> int:
    """Run ``clients`` in threads while ``killer`` injects faults until they are done; re-raise
    the first client error; return how many faults were injected."""
    stop = threading.Event()
    injected: list[int] = []
    errors: list[BaseException] = []

    def guarded(client: Callable[[], None]) -> None:
        try:
            client()
        except BaseException as e:
            errors.append(e)

    k = threading.Thread(target=lambda: injected.append(killer(stop)))
    k.start()
    threads = [threading.Thread(target=guarded, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    k.join()
    if errors:
        raise errors[0]
    return injected[0]


def test_concurrent_clients_with_random_host_kills(rt: Runtime) -> None:
    """600 increments over 10 keys from 4 clients while hosts are killed at random."""
    keys = [f"c{i}" for i in range(10)]
    for key in keys:  # every host the killer may pick exists (hosts start on first use)
        assert rt.call(apps.get, key=key) == 0

    def killer(stop: threading.Event) -> int:
        rng = random.Random(7)
        kills = 0
        while kills < 4 and not stop.wait(rng.uniform(0.1, 0.5)):
            host = host_of(rt, "Counter", rng.choice(keys))
            kill_and_restart(host)
            kills += 1
            wait_serving(host)
        return kills

    def client(n: int) -> Callable[[], None]:
        return lambda: [rt.call(apps.add, key=keys[(n + i) % 10], arg=1) for i in range(150)]

    assert under_faults(killer, [client(n) for n in range(4)]) >= 1
    assert [rt.call(apps.get, key=key) for key in keys] == [60] * 10
    rows = rt.sql(
        "SELECT status, count(*) AS n FROM sys_invocation "
        "WHERE target_handler_name = 'add' GROUP BY ALL"
    ).to_pylist()
    assert rows == [{"status": "completed", "n": 600}]


def test_journal_actor_killed_under_load(rt: Runtime) -> None:
    """Guarantee 10: the journal dies (and restarts) while clients keep adding."""

    def killer(stop: threading.Event) -> int:
        kills = 0
        while kills < 4 and not stop.wait(0.3):
            journal = journal_of(rt)
            kill_and_restart(journal)
            kills += 1
            wait_serving(journal)
        return kills

    def client(n: int) -> Callable[[], None]:
        return lambda: [rt.call(apps.add, key=f"j{n}", arg=1) for _ in range(100)]

    assert under_faults(killer, [client(n) for n in range(3)]) >= 1
    assert [rt.call(apps.get, key=f"j{n}") for n in range(3)] == [100, 100, 100]
    ray.get(journal_of(rt).info.remote())

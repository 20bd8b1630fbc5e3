"""Guarantee 6 for awaited calls between handlers, and cancel/kill (issue 5).

Side effects are counted in ledger files; crashes are real (``os._exit`` inside handlers, or
``ray.kill`` of the caller's host while the callee runs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import ray

from actors import Runtime, TerminalError
from tests.conftest import assert_eventually, ledger_lines
from tests.integration import apps
from tests.integration.helpers import host_of, kill_and_restart, kill_until_gone, wait_serving


def _calls_journaled(rt: Runtime, caller_id: str) -> int:
    return (
        rt.sql(
            f"SELECT count(*) AS n FROM sys_journal WHERE invocation_id = '{caller_id}' "
            "AND entry_type = 'call'"
        )
        .column("n")[0]
        .as_py()
    )


def test_caller_killed_while_callee_runs_gets_the_result_once(
    rt: Runtime, ledger: str, tmp_path: Path
) -> None:
    gate = str(tmp_path / "gate")
    job = apps.Job(ledger=ledger, gate=gate, tag="t")
    h = rt.send(apps.call_gated, key="k1", arg=job)
    assert_eventually(lambda: _calls_journaled(rt, h.id) == 1, message="the call is journaled")
    assert_eventually(lambda: "b:k1-callee:t" in ledger_lines(ledger), message="callee at gate")
    # the caller's process dies; the gate opens only once it is gone, or the old caller may
    # take the answer and run its next step before it dies (a step whose result was not
    # journaled runs again: two "got" lines, allowed, but not what this test is about)
    kill_until_gone(host_of(rt, "Caller", "k1"))
    Path(gate).touch()
    assert h.result(timeout=60) == "opened"
    lines = ledger_lines(ledger)
    assert lines.count("a:k1-callee:t") == 1, "the callee ran again"
    assert lines.count("b:k1-callee:t") == 1
    assert lines.count("got:opened") == 1
    rows = rt.sql(
        "SELECT count(*) AS n FROM sys_invocation "
        "WHERE target_service_name = 'Steps' AND target_handler_name = 'gated'"
    )
    assert rows.column("n")[0].as_py() == 1


def test_caller_evicted_while_waiting_on_a_call_resumes_with_the_result(
    start_runtime, ledger: str, tmp_path: Path
) -> None:
    rt = start_runtime(suspend_after=0)  # every wait leaves memory
    gate = str(tmp_path / "gate")
    h = rt.send(apps.call_gated, key="ev", arg=apps.Job(ledger=ledger, gate=gate, tag="t"))
    assert_eventually(lambda: "b:ev-callee:t" in ledger_lines(ledger), message="callee at gate")
    caller_host = host_of(rt, "Caller", "ev")
    assert_eventually(
        lambda: ray.get(caller_host.ready.remote())["parked"] == 1,
        message="the waiting caller is evicted",
    )
    Path(gate).touch()
    assert h.result(timeout=60) == "opened"
    lines = ledger_lines(ledger)
    assert lines.count("a:ev-callee:t") == 1, "the callee ran again"
    assert lines.count("got:opened") == 1


def _report_runs(rt: Runtime, key: str) -> list[str]:
    return (
        rt.sql(
            "SELECT id FROM sys_invocation WHERE target_handler_name = 'report_run' "
            f"AND target_service_key = '{key}'"
        )
        .column("id")
        .to_pylist()
    )


def test_workflow_send_returns_the_workflow_run_id(shared_rt: Runtime, ledger: str) -> None:
    run_id, stage_id = shared_rt.call(
        apps.start_report, key="ws1", arg=apps.Job(ledger=ledger, tag="w-send")
    )
    assert shared_rt.attach(run_id).result(timeout=60) == "report w-send"
    assert shared_rt.attach(stage_id).result(timeout=60) in (None, "done")
    assert _report_runs(shared_rt, "w-send") == [run_id]
    assert (
        shared_rt.call(apps.report_run, key="w-send", arg=apps.Job(ledger=ledger))
        == "report w-send"
    )
    assert ledger_lines(ledger).count("report:w-send") == 1


def test_two_handlers_calling_one_workflow_main_share_its_run(
    shared_rt: Runtime, ledger: str, tmp_path: Path
) -> None:
    gate = str(tmp_path / "gate")
    job = apps.Job(ledger=ledger, gate=gate, tag="w-share")
    h1 = shared_rt.send(apps.run_report, key="wc1", arg=job)
    h2 = shared_rt.send(apps.run_report, key="wc2", arg=job)
    assert_eventually(lambda: "report:w-share" in ledger_lines(ledger), message="run at gate")
    assert_eventually(
        lambda: _calls_journaled(shared_rt, h1.id) == 1 and _calls_journaled(shared_rt, h2.id) == 1,
        message="both calls journaled",
    )
    Path(gate).touch()
    assert h1.result(timeout=60) == h2.result(timeout=60) == ["report w-share", "done"]
    assert ledger_lines(ledger).count("report:w-share") == 1
    assert len(_report_runs(shared_rt, "w-share")) == 1


def test_first_run_caller_of_a_finished_workflow_gets_its_result(rt: Runtime, ledger: str) -> None:
    """A handler's first attempt calling a workflow main that finished while the workflow's
    host has since forgotten it: the host must ask the journal, not run the workflow again."""
    job = apps.Job(ledger=ledger, tag="w-done")
    assert rt.call(apps.report_run, key="w-done", arg=job) == "report w-done"
    host = host_of(rt, "Report", "w-done")
    kill_and_restart(host)  # its recent outcomes go with its process
    wait_serving(host)
    assert rt.call(apps.run_report, key="wd", arg=job) == ["report w-done", "done"]
    assert ledger_lines(ledger).count("report:w-done") == 1, "the workflow ran again"


def test_chain_across_keys_with_crashes_in_every_link_completes_once(
    rt: Runtime, ledger: str, tmp_path: Path
) -> None:
    keys = ["a", "d", "h"]  # Caller slots 1, 0, 1 of a pool of 2: each call crosses hosts
    assert rt.pool_size == 2
    markers = tmp_path / "markers"
    markers.mkdir()
    hop = apps.Hop(ledger=ledger, markers=str(markers), keys=keys[1:])
    assert rt.call(apps.chain, key=keys[0], arg=hop) == keys
    assert sorted(os.listdir(markers)) == sorted(
        f"{k}-{w}" for k in keys for w in ("before", "after")
    ), "not every crash happened"
    lines = ledger_lines(ledger)
    for k in keys:
        assert lines.count(f"enter:{k}") == 1, lines
    hosts = dict(line.split(":", 2)[1:] for line in lines if line.startswith("host:"))
    assert hosts["a"] != hosts["d"] != hosts["h"], hosts
    visits = rt.sql(
        "SELECT service_key, value FROM state WHERE service_name = 'Caller' "
        "AND key = 'visits' ORDER BY 1"
    ).to_pylist()
    assert visits == [{"service_key": k, "value": "1"} for k in keys]
    rows = rt.sql(
        "SELECT target_service_key AS k, count(*) AS n FROM sys_invocation "
        "WHERE target_handler_name = 'chain' GROUP BY 1 ORDER BY 1"
    ).to_pylist()
    assert rows == [{"k": k, "n": 1} for k in keys]


def test_service_handlers_run_concurrently(start_runtime, ledger: str, tmp_path: Path) -> None:
    rt = start_runtime([apps.workflow_like], pool_size=1)  # both on one host
    gate = str(tmp_path / "gate")
    handles = [
        rt.send(apps.gated_service, arg=apps.Job(ledger=ledger, gate=gate, tag=t))
        for t in ("s1", "s2")
    ]
    assert_eventually(
        lambda: {"enter:svc:s1", "enter:svc:s2"} <= set(ledger_lines(ledger)),
        message="both invocations entered before the gate opened",
    )
    Path(gate).touch()
    assert [h.result(timeout=60) for h in handles] == ["s1", "s2"]


def test_terminal_error_in_callee_reaches_caller(shared_rt: Runtime, tmp_path: Path) -> None:
    job = apps.Job(ledger=str(tmp_path / "l"))
    assert shared_rt.call(apps.catch_terminal, key="t1", arg=job) == "caught 402 card declined"


def test_call_to_own_key_is_refused_not_deadlocked(shared_rt: Runtime) -> None:
    with pytest.raises(TerminalError, match="own key 'me'") as e:
        shared_rt.call(apps.self_call, key="me")
    assert e.value.status_code == 409


def test_proxies_and_service_calls(shared_rt: Runtime) -> None:
    assert shared_rt.call(apps.via_proxies, key="px") == [2, 2, 11]
    assert shared_rt.call(apps.via_proxies, key="px") == [4, 4, 11]


def test_cancel_parent_cancels_child_and_both_compensate_once(
    shared_rt: Runtime, ledger: str
) -> None:
    rt = shared_rt
    h = rt.send(apps.parent, key="p1", arg=apps.Nest(ledger=ledger, child_key="c1"))
    assert_eventually(lambda: "enter:child:c1" in ledger_lines(ledger), message="child started")
    child_sleeps = (
        "SELECT count(*) AS n FROM sys_journal j JOIN sys_invocation i "
        "ON i.id = j.invocation_id "
        "WHERE i.target = 'Caller/c1/child' AND j.entry_type = 'sleep'"
    )
    assert_eventually(
        lambda: rt.sql(child_sleeps).column("n")[0].as_py() == 1, message="child sleeping"
    )
    assert rt.cancel(h.id) == "cancelled"
    with pytest.raises(TerminalError, match="cancelled"):
        h.result(timeout=60)
    child_ids = (
        rt.sql("SELECT id FROM sys_invocation WHERE target = 'Caller/c1/child'")
        .column("id")
        .to_pylist()
    )
    assert len(child_ids) == 1
    child_id = child_ids[0]
    with pytest.raises(TerminalError, match="cancelled"):
        rt.attach(child_id).result(timeout=60)
    lines = ledger_lines(ledger)
    assert lines.count("compensate:parent:p1") == 1
    assert lines.count("compensate:child:c1") == 1
    assert rt.cancel(h.id) == "completed"
    failures = (
        rt.sql(
            "SELECT completion_failure AS f FROM sys_invocation WHERE target IN "
            "('Caller/p1/parent', 'Caller/c1/child') ORDER BY 1"
        )
        .column("f")
        .to_pylist()
    )
    assert failures == ["cancelled", "cancelled"]


def test_kill_stops_at_once_and_frees_the_key(shared_rt: Runtime, ledger: str) -> None:
    rt = shared_rt
    nest = apps.Nest(ledger=ledger)
    h = rt.send(apps.hold, key="k", arg=nest)
    assert_eventually(lambda: "enter:hold:k" in ledger_lines(ledger), message="holder started")
    queued = rt.send(apps.hold, key="k", arg=apps.Nest(ledger=ledger, seconds=0))
    assert rt.kill(h.id) == "killed"
    with pytest.raises(TerminalError, match="killed"):
        h.result(timeout=30)
    assert queued.result(timeout=30) == "held", "the key was not freed"
    lines = ledger_lines(ledger)
    assert lines.count("finally:hold:k") == 1, "a killed handler compensated"
    running = rt.sql(
        "SELECT count(*) AS n FROM sys_invocation WHERE status <> 'completed' "
        "AND target_service_name = 'Caller' AND target_service_key = 'k'"
    )
    assert running.column("n")[0].as_py() == 0
    killed = rt.sql(
        f"SELECT status, completion_failure AS f FROM sys_invocation WHERE id = '{h.id}'"
    ).to_pylist()
    assert killed == [{"status": "completed", "f": "killed"}]


def test_cancel_and_kill_of_unknown_ids(shared_rt: Runtime) -> None:
    with pytest.raises(TerminalError, match="unknown invocation"):
        shared_rt.cancel("inv_nope")
    with pytest.raises(TerminalError, match="unknown invocation"):
        shared_rt.kill("inv_nope")

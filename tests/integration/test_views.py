"""The views show what the journal knows: completions in ``sys_journal``, promises not yet
completed in ``sys_promise``, the registry in ``sys_service``, and each key's holder and queue
in ``sys_keyed_service_status`` and ``sys_inbox``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from actors import Runtime
from tests.conftest import assert_eventually, ledger_lines
from tests.integration import apps


def rows(rt: Runtime, query: str) -> list[dict[str, Any]]:
    return rt.sql(query).to_pylist()


def awakeable_of(ledger: str, key: str) -> str | None:
    for line in ledger_lines(ledger):
        if line.startswith(f"awk:{key}:"):
            return line.split(":", 2)[2]
    return None


def test_sys_service_lists_every_registered_handler(shared_rt: Runtime) -> None:
    got = {(r["name"], r["handler"]): r for r in rows(shared_rt, "SELECT * FROM sys_service")}
    assert {
        k: (r["ty"], r["kind"])
        for k, r in got.items()
        if k[0] in ("Counter", "Signup") or k[1] in ("three_steps", "deterministic")
    } == {
        ("Counter", "add"): ("virtual_object", "exclusive"),
        ("Counter", "get"): ("virtual_object", "shared"),
        ("Counter", "sneaky_set"): ("virtual_object", "shared"),
        ("Counter", "reset"): ("virtual_object", "exclusive"),
        ("Counter", "remember"): ("virtual_object", "exclusive"),
        ("Signup", "signup_run"): ("workflow", "workflow"),
        ("Signup", "confirm"): ("workflow", "shared"),
        ("Signup", "refuse"): ("workflow", "shared"),
        ("Signup", "stage"): ("workflow", "shared"),
        ("Pipeline", "three_steps"): ("service", None),
        ("Pipeline", "deterministic"): ("service", None),
    }
    diverge = json.loads(got[("Steps", "diverge")]["options"])
    assert diverge["retry_policy"]["max_attempts"] == 3
    assert diverge["placement"] == "pooled" and diverge["input"] == "Job"
    heavy = json.loads(got[("Heavy", "bump")]["options"])
    assert heavy["placement"] == "dedicated"
    # the registry is JSON the SQL json functions read
    assert rows(
        shared_rt,
        "SELECT options->>'$.output' AS o FROM sys_service "
        "WHERE name = 'Counter' AND handler = 'add'",
    ) == [{"o": "int"}]


def test_sys_journal_shows_completions(shared_rt: Runtime, tmp_path: Path) -> None:
    rt, ledger = shared_rt, str(tmp_path / "ledger")
    yes = rt.send(apps.await_approval, key="view-yes", arg=apps.Wait(ledger=ledger))
    no = rt.send(apps.await_approval, key="view-no", arg=apps.Wait(ledger=ledger))
    rt.resolve_awakeable(assert_eventually(lambda: awakeable_of(ledger, "view-yes")), "granted")
    rt.reject_awakeable(assert_eventually(lambda: awakeable_of(ledger, "view-no")), "denied")
    assert yes.result() == "granted" and no.result() == "rejected:denied"
    report = rt.send(apps.run_report, key="view-call", arg=apps.Job(ledger=ledger, tag="r1"))
    assert report.result() == ["report r1", "done"]

    def entry(inv: str, entry_type: str) -> dict[str, Any]:
        found = rows(
            rt,
            f"SELECT completed, result FROM sys_journal WHERE invocation_id = "
            f"'{inv}' AND entry_type = '{entry_type}' ORDER BY index",
        )
        return found[0]

    assert entry(yes.id, "awakeable") == {"completed": True, "result": '"granted"'}
    rejected = entry(no.id, "awakeable")
    assert rejected["completed"] and json.loads(rejected["result"])["failure"] == "denied"
    assert entry(report.id, "call") == {"completed": True, "result": '"report r1"'}


def test_sys_promise_lists_promises_not_yet_completed(shared_rt: Runtime, tmp_path: Path) -> None:
    rt, ledger = shared_rt, str(tmp_path / "ledger")
    run = rt.send(apps.signup_run, key="view-wf", arg=apps.Signup(email="a@b", ledger=ledger))
    query = (
        "SELECT key, completed, completion_success_value AS v FROM sys_promise "
        "WHERE service_name = 'Signup' AND service_key = 'view-wf'"
    )
    assert assert_eventually(lambda: rows(rt, query), message="the waited promise shows") == [
        {"key": "confirmed", "completed": False, "v": None}
    ]
    assert rt.call(apps.confirm, key="view-wf", arg="c0de") == "ok"
    assert run.result() == "a@b confirmed with c0de"
    assert rows(rt, query) == [{"key": "confirmed", "completed": True, "v": '"c0de"'}]


def test_inbox_and_key_status(shared_rt: Runtime, tmp_path: Path) -> None:
    rt, ledger, gate = shared_rt, str(tmp_path / "ledger"), str(tmp_path / "gate")
    key = "view-queue"
    first = rt.send(apps.gated, key=key, arg=apps.Job(ledger=ledger, gate=gate, tag="1"))
    assert_eventually(lambda: f"b:{key}:1" in ledger_lines(ledger), message="first runs")
    queued = [
        rt.send(apps.gated, key=key, arg=apps.Job(ledger=ledger, gate=gate, tag=t))
        for t in ("2", "3")
    ]
    where = f"WHERE service_name = 'Steps' AND service_key = '{key}'"
    assert rows(rt, f"SELECT invocation_id FROM sys_keyed_service_status {where}") == [
        {"invocation_id": first.id}
    ]
    inbox = rows(
        rt,
        f"SELECT id, sequence_number, created_at FROM sys_inbox {where} ORDER BY sequence_number",
    )
    assert [(r["id"], r["sequence_number"]) for r in inbox] == [
        (queued[0].id, 1),
        (queued[1].id, 2),
    ]
    assert all(r["created_at"] is not None for r in inbox)
    Path(gate).touch()
    assert [h.result() for h in (first, *queued)] == ["opened"] * 3
    assert rows(rt, f"SELECT * FROM sys_keyed_service_status {where}") == []
    assert rows(rt, f"SELECT * FROM sys_inbox {where}") == []

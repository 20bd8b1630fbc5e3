"""Guarantee 5 (awakeables) and workflows with durable promises (issue 4): resolved from a
driver, from a handler, before the handler waits, while its host is dead; twice (the first
wins); bad ids; a workflow's main handler runs once per key; promises survive a restart."""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from actors import AlreadyCompletedError, Runtime, TerminalError
from actors.engine.awakeable_ids import AwakeableIds
from tests.conftest import assert_eventually, ledger_lines
from tests.integration import apps
from tests.integration.helpers import host_of, kill_until_gone


def _awakeable_of(ledger: str, key: str) -> str:
    def published() -> str | None:
        for line in ledger_lines(ledger):
            if line.startswith(f"awk:{key}:"):
                return line.split(":", 2)[2]
        return None

    return assert_eventually(published, message=f"awakeable of {key} published")


def test_resolve_from_driver_then_twice(shared_rt: Runtime, tmp_path: Path) -> None:
    ledger = str(tmp_path / "l")
    h = shared_rt.send(apps.await_approval, key="a1", arg=apps.Wait(ledger=ledger))
    awk = _awakeable_of(ledger, "a1")
    shared_rt.resolve_awakeable(awk, "yes")
    assert h.result(timeout=30) == "yes"
    with pytest.raises(AlreadyCompletedError, match=r"already completed|has finished"):
        shared_rt.resolve_awakeable(awk, "again")
    with pytest.raises(AlreadyCompletedError):
        shared_rt.reject_awakeable(awk, "too late")
    assert ledger_lines(ledger).count("got:a1:yes") == 1


def test_resolved_before_the_handler_awaits(shared_rt: Runtime, tmp_path: Path) -> None:
    ledger, gate = str(tmp_path / "l"), tmp_path / "gate"
    h = shared_rt.send(apps.await_approval, key="a2", arg=apps.Wait(ledger=ledger, gate=str(gate)))
    awk = _awakeable_of(ledger, "a2")
    shared_rt.resolve_awakeable(awk, "early")
    with pytest.raises(AlreadyCompletedError):
        shared_rt.resolve_awakeable(awk, "second")
    gate.touch()
    assert h.result(timeout=30) == "early"


def test_reject_raises_in_the_handler(shared_rt: Runtime, tmp_path: Path) -> None:
    ledger = str(tmp_path / "l")
    h = shared_rt.send(apps.await_approval, key="a3", arg=apps.Wait(ledger=ledger))
    shared_rt.reject_awakeable(_awakeable_of(ledger, "a3"), "no way")
    assert h.result(timeout=30) == "rejected:no way"


def test_resolve_from_another_handler(shared_rt: Runtime, tmp_path: Path) -> None:
    ledger = str(tmp_path / "l")
    h = shared_rt.send(apps.await_approval, key="a4", arg=apps.Wait(ledger=ledger))
    shared_rt.call(apps.approve, key="other", arg=_awakeable_of(ledger, "a4"))
    assert h.result(timeout=30) == "from-handler"


def test_handler_awaits_its_resolution_and_sees_a_second_refused(
    shared_rt: Runtime, tmp_path: Path
) -> None:
    """Resolving twice from a handler: the first await returns, the second raises
    ``AlreadyCompletedError`` (409); both verdicts are journaled as the entries' completions;
    a fire-and-forget resolution of a completed awakeable does not fail its handler."""
    ledger = str(tmp_path / "l")
    h = shared_rt.send(apps.await_approval, key="b1", arg=apps.Wait(ledger=ledger))
    awk = _awakeable_of(ledger, "b1")
    resolver = shared_rt.send(
        apps.resolve_awaited, key="r-b1", arg=apps.Resolve(awk=awk, value="v", times=2)
    )
    assert resolver.result(timeout=30) == ["delivered", "already:409"]
    assert h.result(timeout=30) == "v"
    assert ledger_lines(ledger).count("got:b1:v") == 1
    rows = shared_rt.sql(
        f"SELECT completed FROM sys_journal WHERE invocation_id = "
        f"'{resolver.id}' AND entry_type = 'complete_awakeable'"
    )
    assert rows.column("completed").to_pylist() == [True, True]
    assert shared_rt.call(apps.approve, key="r-b1", arg=awk) is None  # not awaited: no error


def test_handler_resolving_an_unknown_awakeable_gets_404(shared_rt: Runtime) -> None:
    unknown = shared_rt.router.awakeables.make("inv_" + "1" * 32, 0)  # well-formed, signed
    assert shared_rt.call(apps.resolve_awaited, key="r-unknown", arg=apps.Resolve(awk=unknown)) == [
        "refused:404"
    ]


def test_reject_from_a_handler(shared_rt: Runtime, tmp_path: Path) -> None:
    ledger = str(tmp_path / "l")
    h = shared_rt.send(apps.await_approval, key="b2", arg=apps.Wait(ledger=ledger))
    awk = _awakeable_of(ledger, "b2")
    assert shared_rt.call(
        apps.resolve_awaited, key="r-b2", arg=apps.Resolve(awk=awk, value="not today", reject=True)
    ) == ["delivered"]
    assert h.result(timeout=30) == "rejected:not today"  # TerminalError(reason) at its await
    assert ledger_lines(ledger).count("got:b2:rejected:not today") == 1
    with pytest.raises(AlreadyCompletedError):
        shared_rt.resolve_awakeable(awk, "too late")


def test_resolved_while_its_invocation_is_suspended(start_runtime, ledger: str) -> None:
    """suspend_after=0: every wait evicts, so the waiting handler is out of memory when it
    is resolved, and the resolving handler is evicted at each awaited verdict and replayed."""
    rt = start_runtime(suspend_after=0)
    h = rt.send(apps.await_approval, key="s1", arg=apps.Wait(ledger=ledger))
    awk = _awakeable_of(ledger, "s1")

    def status() -> str:
        return (
            rt.sql(f"SELECT status FROM sys_invocation WHERE id = '{h.id}'")
            .column("status")[0]
            .as_py()
        )

    assert_eventually(lambda: status() == "suspended", message="the waiter suspended")
    rt.resolve_awakeable(awk, "while-away")
    assert h.result(timeout=60) == "while-away"
    assert ledger_lines(ledger).count("got:s1:while-away") == 1
    with pytest.raises(AlreadyCompletedError) as e:
        rt.resolve_awakeable(awk, "again")
    assert e.value.status_code == 409
    # from a handler, on a second suspended waiter: verdicts survive the replays
    h2 = rt.send(apps.await_approval, key="s2", arg=apps.Wait(ledger=ledger))
    awk2 = _awakeable_of(ledger, "s2")
    assert rt.call(
        apps.resolve_awaited, key="r-s2", arg=apps.Resolve(awk=awk2, value="by-handler", times=2)
    ) == ["delivered", "already:409"]
    assert h2.result(timeout=60) == "by-handler"
    assert ledger_lines(ledger).count("got:s2:by-handler") == 1


def test_bad_ids_and_values_are_refused(shared_rt: Runtime, tmp_path: Path) -> None:
    ledger = str(tmp_path / "l")
    h = shared_rt.send(apps.await_approval, key="a5", arg=apps.Wait(ledger=ledger))
    awk = _awakeable_of(ledger, "a5")
    inv_id, idx, _check = awk[4:].rsplit("_", 2)
    for bad in ["nonsense", awk[:-1], awk + "0", 42]:
        with pytest.raises(TerminalError, match="malformed") as e:
            shared_rt.resolve_awakeable(bad, "x")  # type: ignore[arg-type]
        assert e.value.status_code == 400
    ids = shared_rt.router.awakeables  # signed with the runtime's secret, as a host signs them
    with pytest.raises(TerminalError, match="unknown awakeable") as e:
        shared_rt.resolve_awakeable(ids.make("inv_" + "0" * 32, 0), "x")
    assert e.value.status_code == 404
    with pytest.raises(TerminalError, match="no awakeable there"):  # entry 1 is a run
        shared_rt.resolve_awakeable(ids.make(inv_id, int(idx) + 1), "x")
    with pytest.raises(TerminalError, match="does not validate") as e:
        shared_rt.resolve_awakeable(awk, {"not": "a string"})
    assert e.value.status_code == 400
    shared_rt.resolve_awakeable(awk, "fine")  # nothing was written by the refusals
    assert h.result(timeout=30) == "fine"


def _completions(rt: Runtime, inv_id: str) -> int:
    return (
        rt.sql(
            f"SELECT count(*) AS n FROM sys_journal WHERE invocation_id = '{inv_id}' "
            "AND entry_type = 'awakeable' AND completed"
        )
        .column("n")[0]
        .as_py()
    )


def test_forged_ids_are_refused(shared_rt: Runtime, tmp_path: Path) -> None:
    """Issue 6: knowing an invocation id is not enough to resolve its awakeable. An id built
    for its real awakeable with the old unkeyed check, or an HMAC under another key, is
    refused as malformed (400) and nothing is written; the genuine id still works."""
    ledger = str(tmp_path / "l")
    h = shared_rt.send(apps.await_approval, key="a6", arg=apps.Wait(ledger=ledger))
    awk = _awakeable_of(ledger, "a6")
    inv_id, idx, _check = awk[4:].rsplit("_", 2)
    assert inv_id == h.id
    unkeyed = hashlib.sha256(f"{inv_id}:{idx}".encode()).hexdigest()
    forged = [
        f"awk_{inv_id}_{idx}_{unkeyed[:8]}",
        f"awk_{inv_id}_{idx}_{unkeyed[:16]}",
        AwakeableIds("not-the-runtime-secret").make(inv_id, int(idx)),
    ]
    for fake in forged:
        assert fake != awk
        for attempt in (shared_rt.resolve_awakeable, shared_rt.reject_awakeable):
            with pytest.raises(TerminalError, match="malformed awakeable id") as e:
                attempt(fake, "forged")
            assert e.value.status_code == 400
        with pytest.raises(TerminalError, match="malformed awakeable id"):  # from a handler
            shared_rt.call(apps.approve, key="forger", arg=fake)
    assert _completions(shared_rt, inv_id) == 0, "a refused id wrote a completion"
    shared_rt.resolve_awakeable(awk, "genuine")
    assert h.result(timeout=30) == "genuine"
    assert ledger_lines(ledger).count("got:a6:genuine") == 1
    assert _completions(shared_rt, inv_id) == 1


def test_resolved_while_the_host_is_dead_is_delivered_once(rt: Runtime, ledger: str) -> None:
    h = rt.send(apps.await_approval, key="k", arg=apps.Wait(ledger=ledger))
    awk = _awakeable_of(ledger, "k")
    kill_until_gone(host_of(rt, "Approval", "k"))  # else the old process may take it, then die
    rt.resolve_awakeable(awk, "after-crash")  # returns once durable (the host came back)
    assert h.result(timeout=60) == "after-crash"
    assert ledger_lines(ledger).count("got:k:after-crash") == 1
    with pytest.raises(AlreadyCompletedError):
        rt.resolve_awakeable(awk, "again")


# -- workflows -----------------------------------------------------------------------------------


def test_workflow_main_runs_once_per_key(shared_rt: Runtime, tmp_path: Path) -> None:
    ledger = str(tmp_path / "l")
    req = apps.Signup(email="ann@example.com", ledger=ledger)
    first = shared_rt.send(apps.signup_run, key="w1", arg=req)
    second = shared_rt.send(apps.signup_run, key="w1", arg=req)
    assert first.id == second.id, "a second submission attaches to the first run"
    assert_eventually(
        lambda: shared_rt.call(apps.stage, key="w1")["stage"] == "waiting",
        message="main waits on its promise",
    )
    assert shared_rt.call(apps.confirm, key="w1", arg="1234") == "ok"
    assert first.result(timeout=30) == "ann@example.com confirmed with 1234"
    assert second.result(timeout=30) == "ann@example.com confirmed with 1234"
    again = shared_rt.call(apps.signup_run, key="w1", arg=req)  # after completion: attaches
    assert again == "ann@example.com confirmed with 1234"
    with pytest.raises(TerminalError, match="already completed") as e:
        shared_rt.call(apps.confirm, key="w1", arg="5678")
    assert e.value.status_code == 409
    assert ledger_lines(ledger).count("mail:w1") == 1
    assert ledger_lines(ledger).count("done:w1") == 1
    assert shared_rt.call(apps.stage, key="w1") == {"stage": "done", "peek": "1234"}
    rows = shared_rt.sql(
        "SELECT key, completion_success_value AS v FROM sys_promise WHERE service_key = 'w1'"
    ).to_pylist()
    assert rows == [{"key": "confirmed", "v": '"1234"'}]
    keys = shared_rt.sql("SELECT key FROM state WHERE service_key = 'w1'").column("key")
    assert keys.to_pylist() == ["stage"], "promises are not user state"


def test_concurrent_submissions_of_main_run_it_once(shared_rt: Runtime, tmp_path: Path) -> None:
    """Several threads call and send the same workflow at once: one run (the ledger), one
    invocation id, the same result for all; peek() is None until the promise is resolved."""
    ledger = str(tmp_path / "l")
    req = apps.Signup(email="fay@example.com", ledger=ledger)
    start = threading.Barrier(8)

    def call() -> str:
        start.wait(timeout=30)
        return shared_rt.call(apps.signup_run, key="w-race", arg=req)

    def send() -> str:
        start.wait(timeout=30)
        return shared_rt.send(apps.signup_run, key="w-race", arg=req).id

    with ThreadPoolExecutor(8) as pool:
        calls = [pool.submit(call) for _ in range(4)]
        sends = [pool.submit(send) for _ in range(4)]
        ids = {f.result(timeout=60) for f in sends}
        assert len(ids) == 1, ids
        assert_eventually(
            lambda: shared_rt.call(apps.stage, key="w-race")["stage"] == "waiting",
            message="main waits on its promise",
        )
        assert shared_rt.call(apps.stage, key="w-race") == {"stage": "waiting", "peek": None}
        early = [f.exception() or f.result() for f in calls if f.done()]
        assert not early, f"calls returned before the promise: {early!r}"
        shared_rt.call(apps.confirm, key="w-race", arg="42")
        results = {f.result(timeout=60) for f in calls}
    assert results == {"fay@example.com confirmed with 42"}
    assert shared_rt.attach(ids.pop()).result(timeout=30) == "fay@example.com confirmed with 42"
    assert ledger_lines(ledger).count("mail:w-race") == 1
    assert ledger_lines(ledger).count("done:w-race") == 1
    runs = shared_rt.sql(
        "SELECT count(*) AS n FROM sys_invocation WHERE target_service_key = "
        "'w-race' AND target_handler_name = 'signup_run'"
    )
    assert runs.column("n")[0].as_py() == 1


def test_promise_resolved_before_main_waits_is_kept(shared_rt: Runtime, tmp_path: Path) -> None:
    ledger = str(tmp_path / "l")
    assert shared_rt.call(apps.confirm, key="w2", arg="early") == "ok"
    req = apps.Signup(email="bob@example.com", ledger=ledger)
    assert (
        shared_rt.call(apps.signup_run, key="w2", arg=req) == "bob@example.com confirmed with early"
    )


def test_rejected_promise_fails_main(shared_rt: Runtime, tmp_path: Path) -> None:
    req = apps.Signup(email="eve@example.com", ledger=str(tmp_path / "l"))
    h = shared_rt.send(apps.signup_run, key="w3", arg=req)
    shared_rt.call(apps.refuse, key="w3", arg="spam")
    with pytest.raises(TerminalError, match="spam"):
        h.result(timeout=30)


def test_promises_and_awakeable_ids_survive_a_full_restart(
    start_runtime, tmp_path: Path, ledger: str
) -> None:
    data, ns = tmp_path / "wf-data", f"wf-restart-{tmp_path.name}"[:60]
    rt = start_runtime(data_dir=data, namespace=ns)
    rt.call(apps.confirm, key="early", arg="kept")  # resolved before main ever runs
    waiting = rt.send(
        apps.signup_run, key="late", arg=apps.Signup(email="cy@example.com", ledger=ledger)
    )
    approval = rt.send(apps.await_approval, key="r1", arg=apps.Wait(ledger=ledger))
    awk = _awakeable_of(ledger, "r1")  # signed with the data dir's secret
    assert_eventually(
        lambda: rt.call(apps.stage, key="late")["stage"] == "waiting",
        message="main waits on its promise",
    )
    rt.shutdown()
    rt = start_runtime(data_dir=data, namespace=ns)
    assert (
        rt.call(
            apps.signup_run, key="early", arg=apps.Signup(email="di@example.com", ledger=ledger)
        )
        == "di@example.com confirmed with kept"
    )
    rt.call(apps.confirm, key="late", arg="after-restart")
    assert rt.attach(waiting.id).result(timeout=60) == "cy@example.com confirmed with after-restart"
    assert ledger_lines(ledger).count("mail:late") == 1
    rt.resolve_awakeable(awk, "after-restart")  # the id outlives every process that knew it
    assert rt.attach(approval.id).result(timeout=60) == "after-restart"
    assert ledger_lines(ledger).count("got:r1:after-restart") == 1

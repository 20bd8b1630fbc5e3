"""Failures you can see and failures that cannot wedge a host, on a real runtime: what is not
an ``Exception`` (``SystemExit``, ``KeyboardInterrupt``, ``sys.exit()`` in a ``ctx.run``'s
thread, a bare ``BaseException``) fails the attempt like one, recorded in ``sys_invocation``;
the host process lives on and its other keys keep serving; a poisoned invocation is killed;
the failure's traceback is in the host's stderr (what Ray forwards to the driver)."""

from __future__ import annotations

import glob
import os
from collections.abc import Callable

import pytest
import ray

from actors import Runtime, TerminalError
from tests.conftest import assert_eventually, ledger_lines
from tests.integration import failure_apps as fa

KINDS = [
    f"{where}:{what}" for where in ("handler", "run") for what in ("exit", "interrupt", "bare")
]


@pytest.fixture
def poison_rt(start_runtime) -> Runtime:
    return start_runtime([fa.poison], pool_size=1)  # one host: every key shares it


def test_base_exceptions_are_recorded_failures_and_the_host_serves_on(
    poison_rt: Runtime, ledger: str
) -> None:
    rt = poison_rt
    pid = rt.call(fa.pid, key="before")
    handles = {
        kind: rt.send(fa.dose, key=kind, arg=fa.Dose(ledger=ledger, kind=kind)) for kind in KINDS
    }
    assert {kind: h.result(timeout=60) for kind, h in handles.items()} == dict.fromkeys(KINDS, 2)
    rows = {
        r["target_service_key"]: r
        for r in rt.sql(
            "SELECT target_service_key, retry_count, last_failure, last_failure_stacktrace, "
            "last_failure_related_entry_name AS entry FROM sys_invocation "
            "WHERE target_handler_name = 'dose'"
        ).to_pylist()
    }
    expected = {"exit": "SystemExit: 3", "interrupt": "KeyboardInterrupt: ", "bare": "Bare: bare"}
    for kind in KINDS:
        where, _, what = kind.partition(":")
        row = rows[kind]
        assert (row["retry_count"], row["last_failure"]) == (1, expected[what]), kind
        assert "in poisonous" in row["last_failure_stacktrace"]
        assert row["entry"] == ("poison" if where == "run" else None), kind
    assert rt.call(fa.dose, key="other", arg=fa.Dose(ledger=ledger, kind="handler:none")) == 1
    assert rt.call(fa.pid, key="after") == pid, "the same host process served throughout"


def test_a_poisoned_invocation_is_killed(poison_rt: Runtime, ledger: str) -> None:
    rt = poison_rt
    h = rt.send(fa.dose, key="p", arg=fa.Dose(ledger=ledger, kind="run:exit", failing=10**9))
    assert_eventually(
        lambda: ledger_lines(ledger).count("attempt:p") >= 3, message="it failed a few attempts"
    )
    assert rt.kill(h.id) == "killed"
    with pytest.raises(TerminalError, match="killed"):
        h.result(timeout=30)
    events = rt.sql(
        f"SELECT event_type, event_json->>'failure' AS f FROM sys_journal_events "
        f"WHERE invocation_id = '{h.id}'"
    ).to_pylist()
    assert len(events) >= 2 and {e["f"] for e in events} == {"SystemExit: 3"}
    assert rt.call(fa.dose, key="q", arg=fa.Dose(ledger=ledger, kind="handler:none")) == 1


def _stderr_of(pid: int, needle: str) -> Callable[[], str]:
    """A probe for ``assert_eventually``: the stderr of worker ``pid`` (what Ray forwards to
    the driver's terminal) once it holds ``needle``."""
    logs = ray._private.worker._global_node.get_logs_dir_path()  # this session's

    def logged() -> str:
        text = ""
        for path in glob.glob(os.path.join(logs, f"worker-*-{pid}.err")):
            with open(path, errors="replace") as f:
                text += f.read()
        return text if needle in text else ""

    return logged


def test_a_failed_attempt_is_in_the_hosts_stderr_with_its_traceback(
    poison_rt: Runtime, ledger: str
) -> None:
    rt = poison_rt
    pid = rt.call(fa.pid, key="log")
    h = rt.send(fa.dose, key="log", arg=fa.Dose(ledger=ledger, kind="handler:value"))
    assert h.result(timeout=60) == 2
    text = assert_eventually(_stderr_of(pid, h.id), message="the failure in the host's stderr")
    assert text.count(f"invocation {h.id} (Poison/dose) failed (attempt 1)") == 1
    assert "Traceback (most recent call last)" in text
    assert "ValueError: a bug in a handler" in text


def test_a_handler_holding_the_loop_is_logged_by_its_host(poison_rt: Runtime) -> None:
    rt = poison_rt
    pid = rt.call(fa.pid, key="hold")
    rt.call(fa.hold_loop, key="hold", arg=2.0)
    text = assert_eventually(
        _stderr_of(pid, "the event loop was held for"), message="the stall in the host's stderr"
    )
    assert "a handler has held the event loop" in text and "in hold_loop" in text
    assert rt.call(fa.pid, key="after") == pid, "the host lives on"

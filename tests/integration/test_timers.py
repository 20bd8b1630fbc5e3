"""Guarantee 4 (a sleep never fires early, and fires after a crash or a restart), delayed
sends, durable retry back-off and suspension."""

from __future__ import annotations

import time

import ray

from actors import Runtime
from actors.cluster.names import SCHEDULER
from tests.conftest import assert_eventually, ledger_lines
from tests.integration import apps
from tests.integration.helpers import host_of, journal_of, kill_and_restart


def test_sleep_never_fires_early(shared_rt: Runtime, ledger: str) -> None:
    before = time.time()
    out = shared_rt.call(apps.nap, key="nap1", arg=apps.Nap(ledger=ledger, seconds=0.5))
    assert out["woke"] - out["started"] >= 0.5
    assert time.time() - before >= 0.5
    rows = shared_rt.sql(
        "SELECT t.fired, t.fire_at, i.id FROM sys_timer t JOIN sys_invocation i"
        " ON i.id = t.invocation_id WHERE i.target = 'Sleeper/nap1/nap'"
    )
    assert rows.column("fired").to_pylist() == [True]


def test_sleep_survives_host_scheduler_and_journal_kills(rt: Runtime, ledger: str) -> None:
    h = rt.send(apps.nap, key="nap2", arg=apps.Nap(ledger=ledger, seconds=2, tag="k"))
    assert_eventually(lambda: "before:nap2:k" in ledger_lines(ledger))
    kill_and_restart(host_of(rt, "Sleeper", "nap2"))
    kill_and_restart(ray.get_actor(SCHEDULER, namespace=rt.namespace))
    kill_and_restart(journal_of(rt))
    out = h.result(timeout=60)
    assert out["woke"] - out["started"] >= 2
    lines = ledger_lines(ledger)
    assert lines.count("after:nap2:k") == 1


def test_always_replay_evicts_every_wait(start_runtime, ledger: str) -> None:
    rt = start_runtime([apps.sleeper], suspend_after=0)
    handles = [
        rt.send(apps.nap, key=f"e{i}", arg=apps.Nap(ledger=ledger, seconds=0.3, tag="e"))
        for i in range(5)
    ]
    outs = [h.result(timeout=60) for h in handles]
    assert all(o["woke"] - o["started"] >= 0.3 for o in outs)
    lines = ledger_lines(ledger)
    for i in range(5):
        assert lines.count(f"after:e{i}:e") == 1
        assert lines.count(f"before:e{i}:e") == 2  # replayed once after the eviction
    statuses = rt.sql("SELECT count(*) AS n FROM sys_invocation WHERE status = 'completed'")
    assert statuses.column("n").to_pylist() == [5]


def test_delayed_sends_run_in_due_order(shared_rt: Runtime, ledger: str) -> None:
    t0 = time.time()
    late = shared_rt.send(
        apps.stamp, key="d1", arg=apps.Nap(ledger=ledger, seconds=0, tag="late"), delay=1.0
    )
    early = shared_rt.send(
        apps.stamp, key="d1", arg=apps.Nap(ledger=ledger, seconds=0, tag="early"), delay=0.3
    )
    status = shared_rt.sql(f"SELECT status FROM sys_invocation WHERE id = '{late.id}'")
    assert status.column("status").to_pylist() == ["scheduled"]
    assert late.result(timeout=30) - t0 >= 1.0
    assert early.result(timeout=30) - t0 >= 0.3
    assert [line for line in ledger_lines(ledger) if line.startswith("ran:d1")] == [
        "ran:d1:early",
        "ran:d1:late",
    ]

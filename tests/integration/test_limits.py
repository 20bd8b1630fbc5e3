"""Concurrency and rate limits, cluster-wide: counted in ledgers outside the processes and in
the journal's admission records, with a host killed part-way."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest
import ray

from actors import InvocationHandle, Runtime
from actors.cluster.names import SCHEDULER
from tests.conftest import assert_eventually, ledger_lines
from tests.integration.helpers import kill_and_restart
from tests.integration.limits_apps import ALL, Job, hold, nap, spray, tick, work


def max_overlap(lines: list[str]) -> int:
    """Most attempts inside the limited section at one moment: an attempt runs from its
    ``enter`` to its ``exit``, or to the ``die`` of its process (nothing runs after that)."""
    events: list[tuple[int, int]] = []
    open_by_pid: dict[str, list[int]] = defaultdict(list)
    for line in lines:
        parts = line.split()
        if len(parts) != 4:
            continue
        what, _n, pid, t = parts[0], parts[1], parts[2], int(parts[3])
        if what == "enter":
            events.append((t, 1))
            open_by_pid[pid].append(t)
        elif what == "exit":
            events.append((t, -1))
            open_by_pid[pid].pop()
        elif what == "die":
            for _ in open_by_pid.pop(pid, []):
                events.append((t, -1))
    assert not any(open_by_pid.values()), "an attempt neither exited nor died"
    events.sort(key=lambda e: (e[0], e[1]))  # an exit before an enter at the same instant
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


@pytest.fixture
def limits_rt(start_runtime) -> Runtime:
    return start_runtime(ALL)


def test_concurrency_holds_across_hosts_and_a_host_killed(limits_rt: Runtime, ledger, tmp_path):
    rt = limits_rt
    jobs = [
        Job(ledger=ledger, n=n, crash_marker=str(tmp_path / "crash") if n == 7 else None)
        for n in range(40)
    ]
    handles: list[InvocationHandle[int]] = [rt.send(work, arg=j) for j in jobs[:20]]
    assert rt.call(spray, arg=jobs[20:]) == 20  # sends from a handler: the same limit
    assert_eventually(
        lambda: rt.sql("SELECT count(*) FROM sys_waiting").column(0)[0].as_py() > 0,
        message="invocations waiting for a slot show in sys_waiting",
    )
    for h in handles:
        assert h.result(timeout=120) in range(40)
    assert_eventually(
        lambda: len({ln for ln in ledger_lines(ledger) if ln.startswith("done ")}) >= 40,
        timeout=120,
        message="all 40 done",
    )
    lines = ledger_lines(ledger)
    # each once, but a step whose host died before its result was journaled runs again
    assert {int(ln.split()[1]) for ln in lines if ln.startswith("done ")} == set(range(40))
    assert any(ln.startswith("die 7 ") for ln in lines), "the host was killed mid-run"
    assert max_overlap(lines) <= 3
    waiting = rt.sql("SELECT count(*) FROM sys_waiting").column(0)[0].as_py()
    assert waiting == 0


def test_rate_holds_over_every_window(limits_rt: Runtime, ledger):
    rt = limits_rt
    handles = [rt.send(tick, arg=Job(ledger=ledger, n=n)) for n in range(30)]
    assert sorted(h.result(timeout=120) for h in handles) == list(range(30))
    rows = rt.sql("SELECT meta FROM log WHERE kind = 'admit'").column(0).to_pylist()
    admitted = sorted(json.loads(m)["at_ms"] for m in rows)
    assert len(admitted) == 30
    for i in range(len(admitted) - 5):  # any 6 admissions span more than a second
        assert admitted[i + 5] - admitted[i] > 1000, admitted[i : i + 6]
    assert sorted(int(ln.split()[1]) for ln in ledger_lines(ledger)) == list(range(30))


def test_a_sleeping_invocation_holds_no_slot(limits_rt: Runtime, ledger):
    rt = limits_rt
    first = rt.send(nap, arg=Job(ledger=ledger, n=1, sleep_s=30))
    assert_eventually(lambda: "start 1" in ledger_lines(ledger), message="the first started")
    second = rt.send(nap, arg=Job(ledger=ledger, n=2))
    assert second.result(timeout=20) == 2  # with the slot held it would wait 30 s
    assert "end 1" not in ledger_lines(ledger)
    rt.kill(first.id)


def test_a_waiting_invocation_says_why_and_they_start_in_order(limits_rt: Runtime, ledger):
    rt = limits_rt
    Path(ledger).touch()
    first = rt.send(hold, arg=Job(ledger=ledger, n=1))
    assert_eventually(lambda: any(ln.startswith("enter 1") for ln in ledger_lines(ledger)))
    second = rt.send(hold, arg=Job(ledger=ledger, n=2))
    rows = assert_eventually(
        lambda: rt.sql("SELECT invocation_id, status, waiting_for FROM sys_waiting").to_pylist(),
        message="the second waits",
    )
    assert rows == [
        {
            "invocation_id": second.id,
            "status": "pending",
            "waiting_for": "Solo/hold: concurrency 1",
        }
    ]
    limits = (
        rt.sql(
            "SELECT options->'limits' AS l FROM sys_service"
            " WHERE name = 'Solo' AND handler = 'hold'"
        )
        .column(0)[0]
        .as_py()
    )
    assert json.loads(limits) == [
        {"name": "Solo/hold", "concurrency": 1, "rate": None, "per_ms": 0}
    ]
    # more behind it, accepted by either host: they start in acceptance order
    later = [rt.send(hold, arg=Job(ledger=ledger, n=n)) for n in range(3, 7)]
    assert_eventually(lambda: rt.sql("SELECT count(*) FROM sys_waiting").column(0)[0].as_py() == 5)
    Path(ledger).write_text("go\n")
    assert [h.result(timeout=30) for h in [first, second, *later]] == [1, 2, 3, 4, 5, 6]
    entered = [int(ln.split()[1]) for ln in ledger_lines(ledger) if ln.startswith("enter ")]
    assert entered == [2, 3, 4, 5, 6]  # the ledger was rewritten after 1 entered
    assert rt.sql("SELECT count(*) FROM sys_waiting").column(0)[0].as_py() == 0


def test_concurrency_holds_when_the_limiter_is_killed(limits_rt: Runtime, ledger):
    """The limiter (in the scheduler actor) restarts knowing nothing: it admits nobody until
    the hosts have told it what they hold, so the limit still holds."""
    rt = limits_rt
    long = [rt.send(work, arg=Job(ledger=ledger, n=n, hold_s=6)) for n in range(3)]
    assert_eventually(
        lambda: sum(ln.startswith("enter ") for ln in ledger_lines(ledger)) == 3,
        message="three hold every slot",
    )
    kill_and_restart(ray.get_actor(SCHEDULER, namespace=rt.namespace))
    # new asks meet the restarted limiter while the hosts still hold all its slots
    short = [rt.send(work, arg=Job(ledger=ledger, n=n, hold_s=0.2)) for n in range(3, 13)]
    assert sorted(h.result(timeout=120) for h in long + short) == list(range(13))
    assert max_overlap(ledger_lines(ledger)) <= 3

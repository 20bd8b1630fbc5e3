"""The concurrency and rate limits at their edges: objects and workflows under a limit, calls
that wait under a limit (to itself too), waiting invocations cancelled or killed, a retry's
back-off, a service limit with a rate and a handler limit beside it, a parked invocation whose
host is killed, and many waiting at once. Overlap is counted in ledgers outside the processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import ray

from actors import InvocationHandle, Runtime
from actors.cluster.names import SCHEDULER, host_name
from tests.conftest import assert_eventually, ledger_lines
from tests.integration import limits_edge_apps as apps
from tests.integration.helpers import kill_and_restart
from tests.integration.limits_apps import Job, nap
from tests.integration.limits_edge_apps import Task
from tests.integration.test_limits import max_overlap


def tagged(lines: list[str], tag: str) -> list[str]:
    """The ``enter<tag>``/``exit<tag>`` lines, as plain ``enter``/``exit`` for ``max_overlap``."""
    out = []
    for line in lines:
        what, _, rest = line.partition(" ")
        if what in (f"enter{tag}", f"exit{tag}"):
            out.append(f"{what.removesuffix(tag)} {rest}")
    return out


def waiting(rt: Runtime) -> int:
    return rt.sql("SELECT count(*) FROM sys_waiting").column(0)[0].as_py()


@pytest.fixture
def edge_rt(start_runtime) -> Runtime:
    return start_runtime(apps.ALL)


def test_an_object_limit_counts_over_all_its_keys(edge_rt: Runtime, ledger):
    rt = edge_rt
    handles = [
        rt.send(apps.obj_hold, key=f"k{n % 4}", arg=Task(ledger=ledger, n=n, hold_s=0.2))
        for n in range(8)
    ]
    assert sorted(h.result(timeout=60) for h in handles) == list(range(8))
    assert max_overlap(ledger_lines(ledger)) <= 2


def test_an_object_call_chain_deeper_than_the_limit_completes(edge_rt: Runtime):
    assert edge_rt.call(apps.obj_chain, key="c", arg=5, timeout=60) == 5


def test_a_workflow_waiting_on_its_promise_holds_no_slot(edge_rt: Runtime, ledger):
    rt = edge_rt
    a = rt.send(apps.flow_run, key="a", arg=Task(ledger=ledger, n=1))
    assert_eventually(lambda: "start a" in ledger_lines(ledger), message="a started")
    b = rt.send(apps.flow_run, key="b", arg=Task(ledger=ledger, n=2))
    assert_eventually(
        lambda: "start b" in ledger_lines(ledger), message="b starts while a waits (concurrency=1)"
    )
    assert rt.call(apps.flow_go, key="b", arg="y") == "ok"
    assert b.result(timeout=30) == "b:y"
    assert rt.call(apps.flow_go, key="a", arg="x") == "ok"
    assert a.result(timeout=30) == "a:x"
    assert waiting(rt) == 0


def test_a_limited_handler_calls_itself_without_deadlock(edge_rt: Runtime):
    """``concurrency=1`` and a call to itself: the caller gives its slot back while it awaits
    the call (else the callee would wait for it forever)."""
    assert edge_rt.call(apps.recurse, arg=3, timeout=60) == 3


def test_a_call_to_another_limited_service_frees_the_callers_slot(
    edge_rt: Runtime, ledger, tmp_path
):
    rt = edge_rt
    gate = str(tmp_path / "gate")
    first = rt.send(apps.outer_work, arg=Task(ledger=ledger, n=1, gate=gate))
    assert_eventually(lambda: any(ln.startswith("enter:inner 1 ") for ln in ledger_lines(ledger)))
    second = rt.send(apps.outer_work, arg=Task(ledger=ledger, n=2, gate=gate))
    assert_eventually(
        lambda: "calling 2" in ledger_lines(ledger),
        message="the second caller runs while the first awaits its call",
    )
    Path(gate).touch()
    assert [first.result(timeout=30), second.result(timeout=30)] == [1, 2]
    assert max_overlap(tagged(ledger_lines(ledger), ":inner")) <= 1


def test_cancel_and_kill_of_waiting_invocations_leak_no_slot(edge_rt: Runtime, ledger, tmp_path):
    rt = edge_rt
    gate = str(tmp_path / "gate")
    first = rt.send(apps.gated_hold, arg=Task(ledger=ledger, n=1, gate=gate))
    assert_eventually(lambda: any(ln.startswith("enter 1 ") for ln in ledger_lines(ledger)))
    cancelled = rt.send(apps.gated_hold, arg=Task(ledger=ledger, n=2, gate=gate))
    killed = rt.send(apps.gated_hold, arg=Task(ledger=ledger, n=3, gate=gate))
    assert_eventually(lambda: waiting(rt) == 2, message="two wait for the slot")
    rt.cancel(cancelled.id)
    rt.kill(killed.id)
    # both end while the first still holds the only slot
    with pytest.raises(Exception, match=r"(?i)cancel"):
        cancelled.result(timeout=30)
    with pytest.raises(Exception, match=r"(?i)kill"):
        killed.result(timeout=30)
    assert_eventually(lambda: waiting(rt) == 0, message="neither waits any more")
    Path(gate).touch()
    assert first.result(timeout=30) == 1
    later = [rt.send(apps.gated_hold, arg=Task(ledger=ledger, n=n)) for n in (4, 5)]
    assert [h.result(timeout=30) for h in later] == [4, 5]  # no slot leaked
    ran = {ln for ln in ledger_lines(ledger) if ln.startswith("ran ")}
    assert ran == {"ran 1", "ran 4", "ran 5"}, "a cancelled or killed waiter never ran"
    assert max_overlap(ledger_lines(ledger)) <= 1


def two_wait_to_go_on(
    rt: Runtime, ledger: str, gate: str
) -> tuple[list[InvocationHandle[int]], InvocationHandle[int]]:
    """Two invocations slept without their slot and now wait for it, held by a third until
    ``gate`` exists (invocations 1, 2 and 3). The third must be admitted while the two sleep:
    their 5 s leave a slow machine ample time."""
    napping = [rt.send(apps.gated_nap, arg=Task(ledger=ledger, n=n, hold_s=5)) for n in (1, 2)]
    assert_eventually(lambda: {"start 1", "start 2"} <= set(ledger_lines(ledger)))
    holder = rt.send(apps.gated_hold, arg=Task(ledger=ledger, n=3, gate=gate))
    assert_eventually(lambda: any(ln.startswith("enter 3 ") for ln in ledger_lines(ledger)))
    assert_eventually(lambda: waiting(rt) == 2, message="both woke and wait to go on")
    return napping, holder


def test_kill_and_cancel_of_invocations_waiting_to_go_on(edge_rt: Runtime, ledger, tmp_path):
    """Two invocations slept (without their slot) and wait for it again to go on: a kill ends
    one at once; a cancellation ends the other once it has a slot again (the cancellation is
    raised in its code, at its next await, and that code runs under the limit); no slot
    leaks."""
    rt = edge_rt
    gate = str(tmp_path / "gate")
    napping, holder = two_wait_to_go_on(rt, ledger, gate)
    rt.kill(napping[0].id)
    with pytest.raises(Exception, match=r"(?i)kill"):
        napping[0].result(timeout=30)
    rt.cancel(napping[1].id)
    Path(gate).touch()
    assert holder.result(timeout=30) == 3
    with pytest.raises(Exception, match=r"(?i)cancel"):
        napping[1].result(timeout=30)
    lines = ledger_lines(ledger)
    assert not {"after 1", "after 2"} & set(lines)  # ended at their next step
    assert max_overlap(lines) <= 1
    assert rt.call(apps.gated_hold, arg=Task(ledger=ledger, n=4), timeout=30) == 4
    assert waiting(rt) == 0


def test_invocations_waiting_to_go_on_survive_a_limiter_restart(edge_rt: Runtime, ledger, tmp_path):
    """The limiter (scheduler actor) is killed while one invocation holds the only slot and
    two others, woken from a sleep, wait to go on: the restarted limiter learns the held slot
    from the host, the waiting ones ask it again, and the limit still holds."""
    rt = edge_rt
    gate = str(tmp_path / "gate")
    napping, holder = two_wait_to_go_on(rt, ledger, gate)
    kill_and_restart(ray.get_actor(SCHEDULER, namespace=rt.namespace))
    later = rt.send(apps.gated_hold, arg=Task(ledger=ledger, n=4))  # asks the new limiter
    Path(gate).touch()
    assert [h.result(timeout=60) for h in [*napping, holder, later]] == [1, 2, 3, 4]
    assert max_overlap(ledger_lines(ledger)) <= 1
    assert waiting(rt) == 0


def test_a_retry_backs_off_without_its_slot(edge_rt: Runtime, ledger, tmp_path):
    rt = edge_rt
    marker = str(tmp_path / "failed")
    first = rt.send(apps.fail_once, arg=Task(ledger=ledger, n=1, marker=marker))
    assert_eventually(lambda: Path(marker).exists(), message="the first attempt failed")
    second = rt.send(apps.fail_once, arg=Task(ledger=ledger, n=2))
    assert second.result(timeout=30) == 2  # with the slot held it would wait the 60 s back-off
    assert "done 1" not in ledger_lines(ledger)
    rt.kill(first.id)
    with pytest.raises(Exception, match=r"(?i)kill"):
        first.result(timeout=30)
    assert max_overlap(ledger_lines(ledger)) <= 1


def test_concurrency_rate_and_a_handler_limit_together(edge_rt: Runtime, ledger):
    rt = edge_rt
    handles = [
        rt.send(apps.combo_a if n % 2 else apps.combo_b, arg=Task(ledger=ledger, n=n, hold_s=0.2))
        for n in range(12)
    ]
    assert sorted(h.result(timeout=60) for h in handles) == list(range(12))
    lines = ledger_lines(ledger)
    assert max_overlap(tagged(lines, ":a") + tagged(lines, ":b")) <= 2  # the service's 2
    assert max_overlap(tagged(lines, ":b")) <= 1  # combo_b's own 1
    rows = rt.sql("SELECT meta FROM log WHERE kind = 'admit'").column(0).to_pylist()
    admitted = sorted(json.loads(m)["at_ms"] for m in rows)
    assert len(admitted) >= 12  # every start counts (one per attempt)
    for i in range(len(admitted) - 5):  # the service's rate: 5 a second
        assert admitted[i + 5] - admitted[i] > 1000, admitted[i : i + 6]
    assert waiting(rt) == 0


def test_a_parked_limited_invocation_resumes_after_its_host_is_killed(start_runtime, ledger):
    rt = start_runtime(apps.ALL, suspend_after=0)  # every wait leaves memory
    first = rt.send(nap, arg=Job(ledger=ledger, n=1, sleep_s=3))
    assert_eventually(lambda: "start 1" in ledger_lines(ledger), message="the first started")
    second = rt.send(nap, arg=Job(ledger=ledger, n=2))
    assert second.result(timeout=30) == 2  # the parked one holds no slot
    assert "end 1" not in ledger_lines(ledger)
    killed = 0
    for slot in range(rt.pool_size):  # every host of it that was started
        try:
            host = ray.get_actor(host_name("Solo", slot), namespace=rt.namespace)
        except ValueError:
            continue
        kill_and_restart(host)
        killed += 1
    assert killed
    assert first.result(timeout=60) == 1
    third = rt.send(nap, arg=Job(ledger=ledger, n=3))
    assert third.result(timeout=60) == 3
    assert waiting(rt) == 0


def test_many_waiting_all_complete_within_the_limit(edge_rt: Runtime, ledger):
    rt = edge_rt
    handles = [rt.send(apps.short, arg=Task(ledger=ledger, n=n)) for n in range(200)]
    assert sorted(h.result(timeout=120) for h in handles) == list(range(200))
    lines = ledger_lines(ledger)
    assert sorted(int(ln.split()[1]) for ln in lines if ln.startswith("enter ")) == list(range(200))
    assert max_overlap(lines) <= 2
    assert waiting(rt) == 0

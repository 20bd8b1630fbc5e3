"""Node loss, for real (issue 23): a two-node cluster on this machine (``raycluster``), a
runtime of two partitions spread over the nodes (``partition_placement="spread"``) on a data
dir both nodes mount (on one machine, any local directory), load from a driver process that
records each acknowledged send in a ledger file, and then the worker node lost under that load:

- its raylet SIGKILLed, with the worker's journal process frozen first so that it outlives its
  node, and revived once a new writer has taken over;
- or the node cut off (its raylet frozen: the cluster declares the node dead, while its
  processes run on), so that the old journal keeps running beside its successor; the old
  journal is frozen through the takeover with a commit sent to its socket meanwhile, and
  revived; its raylet is SIGKILLed at the end.

Shown each time: the worker's partition comes back on the head (its journal actor, restarted by
Ray, reports the head's node id and the next epoch); nothing acknowledged is lost (every send in
the ledger is in its partition's ``sys_invocation`` exactly once, every counter exact); the old
writer is refused: a writer holding its epoch and token fails the fence check on the partition's
directory, the revived cut-off journal refuses the commit it finds, and stops by itself (its log
says it was fenced) and lets go of the DuckDB file, which its successor waits for
(``journal.takeover``).

After the raylet's SIGKILL a new worker joins, as the lost node returning would, and the
partition that prefers it moves there (``Runtime.rebalance_partitions``) under the load.

Ray notices a dead node after ``health_check_failure_threshold`` failed health checks
``health_check_period_ms`` apart, each failing after ``health_check_timeout_ms`` at most (GCS
settings, given to the head's processes as ``RAY_<name>``): shortened here so that the test
does not wait the default 15 s or more.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from journal.errors import Fenced
from journal.fence import EPOCH_FILE, Fence, stored_epoch
from journal.records import Batch, StateWrite
from journal.transport.wire import WireClient, WireClosed
from tests.conftest import assert_eventually
from tests.integration.raycluster import (
    HAS_PROC,
    Cluster,
    end,
    finish,
    pid_alive,
    processes,
    spawn,
    two_nodes,
)

pytestmark = pytest.mark.skipif(not HAS_PROC, reason="the test reads the process tree from /proc")

DRIVER = Path(__file__).with_name("node_loss_driver.py")
HEALTH_CHECKS = {  # a node is dead after 3 failed health checks 0.5 s apart (default: 5 x 3 s)
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}
ACKS_BEFORE = 30  # acknowledged sends before the node is lost
ACKS_AFTER = 50  # and after the takeover, on both partitions


@dataclass
class Loaded:
    """A runtime under load on a two-node cluster, and what the test knows of it."""

    cluster: Cluster
    work: Path
    namespace: str
    placement: dict[str, Any]
    lost: int  # the partition on the worker node
    directory: Path  # its journal directory
    mark: bytes  # its epoch file while the first writer holds it: epoch and token
    nodes_after: list[str] | None = None  # each partition's node at the end (None: the head)

    @property
    def old(self) -> dict[str, Any]:
        return self.placement["partitions"][self.lost]

    def acknowledged(self) -> list[tuple[str, str]]:
        ledger = self.work / "ledger"
        lines = ledger.read_text().splitlines() if ledger.exists() else []
        return [(key, inv) for key, inv in (line.split() for line in lines)]

    def taken_over(self) -> int:
        """The epoch of the writer that took the lost partition over (waited for)."""
        return assert_eventually(
            lambda: (
                stored_epoch(self.directory) > self.old["epoch"] and stored_epoch(self.directory)
            ),
            timeout=60,
            message="a new writer took the lost partition's next epoch",
        )

    def go_on_after(self, killed_at: int) -> None:
        """Wait until sends to both partitions are acknowledged after the takeover."""

        def both() -> bool:
            acked = self.acknowledged()
            since = {inv.split("_")[1] for _, inv in acked[killed_at:]}
            return len(acked) >= killed_at + ACKS_AFTER and since >= {"0", "1"}

        assert_eventually(both, timeout=60, message="sends to both partitions acknowledged")

    def refuse_the_old_epoch(self, taken: int) -> None:
        with pytest.raises(Fenced) as refused:  # a writer that holds the old epoch and token
            Fence(self.directory, self.old["epoch"], self.mark).check()
        assert (refused.value.held, refused.value.current) == (self.old["epoch"], taken)


class StaleCaller:
    """A caller of a journal over its socket, as the hosts on its node are; connected while
    that journal serves."""

    def __init__(self, address: str, token: str, pid: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.client = WireClient(address, token)
        assert self.loop.run_until_complete(self.client.call("info"))["pid"] == pid

    def commit_while_frozen(self, pid: int, batch: Batch) -> BaseException | None:
        """Send ``batch`` to the frozen journal ``pid``, let it run again (SIGCONT), and
        return how the commit ended (None: acknowledged)."""

        async def sent() -> asyncio.Future[Any]:
            call = asyncio.ensure_future(self.client.call("commit", batch))
            while not self.client.in_flight and not call.done():  # until its frame is out
                await asyncio.sleep(0)
            return call

        call = self.loop.run_until_complete(sent())
        os.kill(pid, signal.SIGCONT)
        try:
            self.loop.run_until_complete(asyncio.wait_for(call, 60))
        except (Fenced, WireClosed) as e:
            return e
        return None

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.close()


def result(out: str) -> dict[str, Any]:
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, out
    return json.loads(lines[0].removeprefix("RESULT "))


@contextlib.contextmanager
def loaded(tmp_path: Path) -> Iterator[Loaded]:
    """Start the cluster and the load, yield once the load runs; afterwards stop the load and
    check the journals: every partition on the head, everything acknowledged there once."""
    work, data = tmp_path / "work", tmp_path / "data"  # data: "shared" by both nodes
    work.mkdir()
    namespace = f"nodeloss-{os.getpid()}-{tmp_path.name}"
    with two_nodes(head_env=HEALTH_CHECKS) as cluster:
        args = [cluster.address, namespace, str(data), str(work)]
        load = spawn(sys.executable, str(DRIVER), "load", *args)
        try:

            def placed() -> dict[str, Any] | None:
                assert load.poll() is None, load.communicate()
                path = work / "placement.json"
                return json.loads(path.read_text()) if path.exists() else None

            placement = assert_eventually(placed, timeout=90, message="the runtime started")
            assert placement is not None
            (worker,) = set(placement["nodes"]) - {placement["head"]}
            nodes = [w["node"] for w in placement["partitions"]]
            # partition p on node p of the sorted node ids: one of them on the worker
            assert nodes == [placement["nodes"][p % 2] for p in range(2)], placement
            lost = nodes.index(worker)
            directory = data / f"partition-{lost}"
            run = Loaded(
                cluster,
                work,
                namespace,
                placement,
                lost,
                directory,
                mark=(directory / EPOCH_FILE).read_bytes(),
            )
            assert int(run.mark.split()[0]) == run.old["epoch"]
            assert_eventually(
                lambda: len(run.acknowledged()) >= ACKS_BEFORE, timeout=60, message="load"
            )
            (old,) = [p for p in processes() if p[0] == run.old["pid"]]  # (pid, start time)
            try:
                yield run
            finally:
                end(old)  # should the test have failed before it ended
        finally:
            (work / "stop").touch()
            sent = result(finish(load, timeout=120))
        check = result(
            finish(
                spawn(sys.executable, str(DRIVER), "check", cluster.address, namespace, str(work))
            )
        )
    head = placement["head"]
    want = run.nodes_after or [head, head]
    assert [w["node"] for w in check["partitions"]] == want, (check, placement)
    assert check["partitions"][lost]["epoch"] == stored_epoch(directory) > run.old["epoch"]
    assert check["partitions"][lost]["pid"] != run.old["pid"]
    shown = [(r["node_id"], r["pid"], r["epoch"]) for r in check["cli"]]  # raystate partitions
    assert shown == [(w["node"], w["pid"], w["epoch"]) for w in check["partitions"]]
    assert check["nodes"] == sorted({head, *want})
    assert check["acked"] == check["distinct"] == sent["sent"]
    assert check["not_once"] == {} and check["unacked_in_journal"] == 0
    assert check["foreign"] == []
    assert check["counters"] == check["want"]


def test_a_killed_nodes_partition_comes_back_on_the_head(tmp_path: Path) -> None:
    """The raylet SIGKILLed; the worker's journal process frozen before, revived after the
    takeover. (Frozen, it may not outlive its node: Ray gives each worker a process group of
    its own, and when the raylet's death orphans a group with a stopped member, the kernel
    sends it SIGHUP and SIGCONT, which ends it. Revived, it finds its raylet gone and exits,
    or first finds itself fenced.) Then a new worker joins, as the lost node returning would,
    and ``Runtime.rebalance_partitions`` moves the partition that prefers it there (its
    journal at a new epoch, and its scheduler) while the load goes on to both partitions."""
    with loaded(tmp_path) as run:
        old = run.old["pid"]
        os.kill(old, signal.SIGSTOP)  # frozen: it would outlive its node
        try:
            os.kill(run.cluster.worker.raylet(), signal.SIGKILL)
            killed_at = len(run.acknowledged())
            taken = run.taken_over()
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(old, signal.SIGCONT)  # revived: a writer of an epoch taken over
        assert_eventually(lambda: not pid_alive(old), timeout=30, message="the old writer ended")
        run.refuse_the_old_epoch(taken)
        run.go_on_after(killed_at)
        run.cluster.join("worker2")
        command = ["rebalance", run.cluster.address, run.namespace, "2"]
        moves = result(finish(spawn(sys.executable, str(DRIVER), *command), 120))
        nodes, head = moves["nodes"], run.placement["head"]
        run.nodes_after = [nodes[p % 2] for p in range(2)]
        assert [w["node"] for w in moves["partitions"]] == run.nodes_after
        assert moves["schedulers"] == run.nodes_after
        assert moves["moved"] == [p for p in range(2) if nodes[p % 2] != head]
        before = [w["epoch"] for w in run.placement["partitions"]]
        before[run.lost] = taken
        # a new writer (``place_new_journal`` may make it more than once: an epoch each)
        assert all(moves["partitions"][p]["epoch"] > before[p] for p in moves["moved"])
        run.go_on_after(len(run.acknowledged()))


def test_a_cut_off_nodes_writer_is_fenced_by_its_successor(tmp_path: Path) -> None:
    """The worker cut off: its raylet frozen, so that the cluster declares the node dead while
    the old journal and hosts run on. The restarted journal takes the next epoch and waits for
    the DuckDB file; the old journal, at its next fence check, stops and lets go of it.

    The old journal is frozen too until the takeover: a commit sent to it meanwhile over its
    socket, as a host on its node sends one, is refused once it runs again (a revived stale
    writer): either in the commit itself (its fence check after the log write) or by the
    journal having stopped first; never acknowledged. The hosts left on the cut-off node send
    what they had in flight to the new writer through Ray: refused (``StaleHost``), they end,
    and every acknowledged send is still journaled once."""
    with loaded(tmp_path) as run:
        old, raylet = run.old["pid"], run.cluster.worker.raylet()
        stale = StaleCaller(*run.old["wire"], pid=old)
        os.kill(old, signal.SIGSTOP)
        os.kill(raylet, signal.SIGSTOP)
        try:
            killed_at = len(run.acknowledged())
            taken = run.taken_over()
            late = Batch("stale-writer:1", [StateWrite("Counter", "stale", "count", "1")])
            refused = stale.commit_while_frozen(old, late)  # and then revived
            assert isinstance(refused, Fenced | WireClosed), refused
            if isinstance(refused, Fenced):
                assert (refused.held, refused.current) == (run.old["epoch"], taken)
            assert pid_alive(old)  # still there, beside its successor
            stopped = f"this writer holds epoch {run.old['epoch']}, the directory's epoch file "
            stopped += f"now holds epoch {taken} (a newer writer started): this journal stops"
            assert_eventually(
                lambda: stopped in run.cluster.worker.logs(),
                timeout=30,
                message="the old journal's log: fenced",
            )
            run.refuse_the_old_epoch(taken)
            run.go_on_after(killed_at)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(old, signal.SIGCONT)  # should the test have failed while it was frozen
            os.kill(raylet, signal.SIGKILL)  # the node is lost for good
            stale.close()
        assert_eventually(lambda: not pid_alive(old), timeout=30, message="the old writer ended")

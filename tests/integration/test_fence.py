"""The fenced journal actor for real: a frozen journal process that comes back after a newer
writer started is refused, and a journal actor that Ray restarts takes the next epoch."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from journal.actor import JournalActor
from journal.errors import Fenced
from journal.fence import Fence
from journal.records import Batch, StateWrite
from tests.conftest import assert_eventually


def write(name: str, value: str, resent: bool = False) -> Batch:
    return Batch(name, [StateWrite("Obj", "k", "n", value)], resent=resent)


def test_a_frozen_journal_that_comes_back_is_refused(ray_session: None, tmp_path: Path) -> None:
    """No lease runs out here: the old process is frozen while a newer writer starts, and
    whenever it runs again, its next commit is refused and it lets go of the directory."""
    import ray

    data = tmp_path / "data"
    journal = ray.remote(JournalActor)
    old = journal.options(num_cpus=0).remote(str(data), fenced=True)
    newer = None
    try:
        ray.get(old.commit.remote(write("a1", "1")))
        info = ray.get(old.info.remote())
        assert (info["epoch"], info["fenced"]) == (1, False)
        os.kill(info["pid"], signal.SIGSTOP)
        try:
            taken = Fence.acquire(data)  # a newer writer's start, while the old one is frozen
            late = old.commit.remote(write("a2", "2"))
        finally:
            os.kill(info["pid"], signal.SIGCONT)
        with pytest.raises(Fenced) as refused:
            ray.get(late, timeout=60)
        assert (refused.value.held, refused.value.current) == (1, taken.epoch)
        assert ray.get(old.info.remote())["fenced"] is True
        with pytest.raises(Fenced):
            ray.get(old.load_states.remote("Obj", ["k"]), timeout=60)

        newer = journal.options(num_cpus=0).remote(str(data), fenced=True)  # DuckDB is free
        assert ray.get(newer.start_error.remote()) is None
        assert ray.get(newer.info.remote())["epoch"] == taken.epoch + 1
        assert ray.get(newer.load_states.remote("Obj", ["k"]))["k"]["n"] in ("1", "2")
        ray.get(newer.commit.remote(write("a2", "2", resent=True)))  # the host sends it again
        ray.get(newer.commit.remote(write("a3", "3")))
        assert ray.get(newer.load_states.remote("Obj", ["k"])) == {"k": {"n": "3"}}
    finally:
        for actor in (old, newer):
            if actor is not None:
                ray.kill(actor, no_restart=True)


def test_a_restarted_fenced_journal_takes_the_next_epoch(ray_session: None, tmp_path: Path) -> None:
    import ray
    from ray.exceptions import RayActorError

    data = tmp_path / "data"
    actor = (
        ray.remote(JournalActor).options(num_cpus=0, max_restarts=-1).remote(str(data), fenced=True)
    )
    try:
        ray.get(actor.commit.remote(write("b1", "1")))
        assert ray.get(actor.info.remote())["epoch"] == 1
        ray.kill(actor, no_restart=False)

        def epoch() -> int | None:
            try:
                return ray.get(actor.info.remote(), timeout=10)["epoch"]
            except (RayActorError, ray.exceptions.GetTimeoutError):
                return None

        assert assert_eventually(lambda: epoch() == 2, message="the restarted journal's epoch")
        assert ray.get(actor.load_states.remote("Obj", ["k"])) == {"k": {"n": "1"}}
        ray.get(actor.commit.remote(write("b2", "2")))
        assert ray.get(actor.load_states.remote("Obj", ["k"])) == {"k": {"n": "2"}}
    finally:
        ray.kill(actor, no_restart=True)


def test_a_spread_partitions_hosts_start_again_after_its_journal_restarts(start_runtime) -> None:
    """Each start of a spread journal takes a new epoch, so the hosts that recovered from the
    one before are refused (``StaleHost``) at their next commit and start again: calls go on,
    every counter exact, and the host process of the partition is a new one."""
    import ray

    from tests.integration import apps
    from tests.integration.helpers import kill_until_gone

    rt = start_runtime([apps.counter], partitions=2, partition_placement="spread", pool_size=1)
    keys = [f"k{i}" for i in range(12)]  # both partitions
    for k in keys:
        assert rt.call(apps.add, key=k, arg=1) == 1
    journal = ray.get_actor("journal:0", namespace=rt.namespace)
    host = ray.get_actor("host:Counter:0:0", namespace=rt.namespace)
    host_pid = ray.get(host.__ray_call__.remote(lambda _self: os.getpid()))
    kill_until_gone(journal, pid=ray.get(journal.info.remote())["pid"])
    for k in keys:  # each the second add of its key: applied once
        assert rt.call(apps.add, key=k, arg=1, idempotency_key=f"{k}-2") == 2
    assert ray.get(journal.info.remote())["epoch"] == 2
    assert ray.get(host.__ray_call__.remote(lambda _self: os.getpid())) != host_pid
    assert [rt.call(apps.get, key=k) for k in keys] == [2] * len(keys)

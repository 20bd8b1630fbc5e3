"""Partitions (issue 23): four journals, each with its scheduler and directory. Sends under
repeated journal kills, a chain of calls across three partitions with crashes in every link, an
awakeable resolved from another partition, a restart on the same data dir, and a data dir
started with another partition count."""

from __future__ import annotations

import random
import threading
from collections import Counter as Tally
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import ray

from actors import AlreadyCompletedError, Runtime
from journal.errors import DataDirError
from journal.partitions import Partitions
from tests.conftest import assert_eventually, ledger_lines
from tests.integration import apps, limits_apps, partition_apps, schedule_apps
from tests.integration.conftest import module_runtime
from tests.integration.helpers import (
    kill_until_gone,
    partition_journal,
    partition_rows,
    wait_serving,
)
from tests.integration.test_limits import max_overlap

PARTITIONS = Partitions(4)
SERVICES = [
    apps.counter,
    apps.approval,
    *partition_apps.APPS,
    *limits_apps.ALL,
    *schedule_apps.SCHEDULE_APPS,
]

MAX_KILLS = 4  # journal kills under the sends of test_sends_survive_repeated_journal_kills


@pytest.fixture(scope="module")
def part_rt(ray_session: None, tmp_path_factory) -> Iterator[Runtime]:
    with module_runtime(
        tmp_path_factory, SERVICES, "partitions", pool_size=1, partitions=PARTITIONS.count
    ) as rt:
        yield rt


def journal(rt: Runtime, p: int) -> Any:
    return partition_journal(rt, PARTITIONS, p)


def keys_in_partitions(service: str, prefix: str, wanted: int) -> list[str]:
    """Keys of ``service`` that fall into ``wanted`` different partitions."""
    keys: dict[int, str] = {}
    i = 0
    while len(keys) < wanted:
        keys.setdefault(PARTITIONS.of_key(service, f"{prefix}{i}"), f"{prefix}{i}")
        i += 1
    return list(keys.values())


def test_each_partition_has_its_actors_and_directory(part_rt: Runtime) -> None:
    for k in keys_in_partitions("Counter", "layout", 4):
        part_rt.call(apps.add, key=k, arg=1)
    names = {
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == part_rt.namespace
    }
    # local partitions share their pooled hosts: one process per pool slot, not per partition
    assert {n for n in names if n.startswith("host:Counter:")} == {"host:Counter:0"}
    for p in PARTITIONS:
        assert PARTITIONS.journal(p) in names and PARTITIONS.scheduler(p) in names
        info = ray.get(journal(part_rt, p).info.remote())
        assert info["data_dir"] == str(Path(part_rt.data_dir, f"partition-{p}"))
    assert (Path(part_rt.data_dir) / "partitions").read_text().strip() == "4"


def test_sends_survive_repeated_journal_kills(part_rt: Runtime) -> None:
    """200 counter keys, 8 clients sending with idempotency keys (sent again until one is
    acknowledged), while a random partition's journal is killed again and again (up to
    ``MAX_KILLS`` times: each kill stalls its partition's sends for a while, and an unbounded
    killer made the test's time vary from seconds to a minute): every counter ends exact, and
    every acknowledged send is in its partition's sys_invocation once."""
    keys = [f"ctr{i}" for i in range(200)]
    sends = [(k, n) for n in range(3) for k in keys]
    random.Random(23).shuffle(sends)
    acked: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    two_kills = threading.Event()

    def send(item: tuple[int, tuple[str, int]]) -> None:
        i, (key, n) = item
        if i >= len(sends) // 2:  # the second half goes out after two kills, beside more
            assert two_kills.wait(timeout=120)
        while True:
            try:
                h = part_rt.send(apps.add, key=key, arg=1, idempotency_key=f"{key}/{n}")
                break
            except Exception:  # sent again under the same idempotency key: once at most
                continue
        with lock:
            acked.append(h.id)

    kills: list[int] = []

    def killer() -> None:
        rng = random.Random(7)
        while not stop.is_set() and len(kills) < MAX_KILLS:
            p = rng.randrange(PARTITIONS.count)
            victim = journal(part_rt, p)
            kill_until_gone(victim, pid=ray.get(victim.info.remote())["pid"])
            kills.append(p)
            if len(kills) >= 2:
                two_kills.set()
            wait_serving(victim)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(send, enumerate(sends)))
    finally:
        stop.set()
        thread.join(timeout=120)
    assert len(acked) == len(sends) and len(kills) >= 2

    def exact() -> bool:
        return all(part_rt.call(apps.get, key=k) == 3 for k in keys)

    assert_eventually(exact, timeout=120, message="every counter at 3")
    seen: Tally[str] = Tally()
    for p in PARTITIONS:
        query = "SELECT id FROM sys_invocation WHERE target_service_name = 'Counter'"
        rows = partition_rows(part_rt, PARTITIONS, p, query)
        for inv in (row["id"] for row in rows):
            assert PARTITIONS.of_id(inv) == p
            seen[inv] += 1
    assert all(seen[inv] == 1 for inv in acked)


def test_a_chain_across_three_partitions_with_a_crash_in_every_link(
    part_rt: Runtime, tmp_path: Path
) -> None:
    keys = keys_in_partitions("Link", "chain", 3)
    ledger, markers = str(tmp_path / "ledger"), tmp_path / "markers"
    markers.mkdir()
    chain = partition_apps.Chain(keys=keys, ledger=ledger, markers=str(markers))
    assert part_rt.call(partition_apps.hop, key=keys[0], arg=chain) == keys
    lines = ledger_lines(ledger)
    for k in keys:
        assert lines.count(f"step:{k}") == 1 and lines.count(f"done:{k}") == 1
        assert (markers / f"before-{k}").exists() and (markers / f"after-{k}").exists()


def test_an_awakeable_resolved_from_another_partitions_host(
    part_rt: Runtime, tmp_path: Path
) -> None:
    ledger = str(tmp_path / "ledger")
    waiter = keys_in_partitions("Approval", "waiter", 1)[0]
    relay = next(
        k
        for k in (f"relay{i}" for i in range(100))
        if PARTITIONS.of_key("Relay", k) != PARTITIONS.of_key("Approval", waiter)
    )
    h = part_rt.send(apps.await_approval, key=waiter, arg=apps.Wait(ledger=ledger))

    def published() -> str | None:
        for line in ledger_lines(ledger):
            if line.startswith(f"awk:{waiter}:"):
                return line.split(":", 2)[2]
        return None

    awk = assert_eventually(published, message="awakeable published")
    assert PARTITIONS.of_id(h.id) == PARTITIONS.of_key("Approval", waiter)
    done = part_rt.call(
        partition_apps.pass_on,
        key=relay,
        arg=partition_apps.Pass(awk=awk, value="across", marker=str(tmp_path / "crashed")),
    )
    assert done == "passed" and (tmp_path / "crashed").exists()
    assert h.result(timeout=60) == "across"
    assert ledger_lines(ledger).count(f"got:{waiter}:across") == 1
    with pytest.raises(AlreadyCompletedError):
        part_rt.resolve_awakeable(awk, "again")


def test_a_restart_keeps_every_partition_and_its_count(start_runtime, tmp_path: Path) -> None:
    data = tmp_path / "restart"
    with pytest.warns(RuntimeWarning, match="3 local partitions on a node with 2 CPUs"):
        rt = start_runtime([apps.counter], data_dir=data, partitions=3)  # the tests' Ray: 2
    keys = keys_in_partitions("Counter", "r", 3)
    for k in keys:
        rt.call(apps.add, key=k, arg=5)
    handle = rt.send(apps.add, key=keys[1], arg=1)
    assert handle.result(timeout=30) == 6
    namespace = rt.namespace
    rt.shutdown()
    again = start_runtime([apps.counter], data_dir=data, namespace=namespace, partitions=3)
    assert [again.call(apps.get, key=k) for k in keys] == [5, 6, 5]
    assert again.attach(handle.id).result(timeout=30) == 6
    with pytest.raises(DataDirError, match="partitions=3"):
        start_runtime([apps.counter], data_dir=data, partitions=2)
    with pytest.raises(DataDirError, match="partitions=3"):
        start_runtime([apps.counter], data_dir=data)


def test_a_one_partition_data_dir_refuses_more(start_runtime, tmp_path: Path) -> None:
    data = tmp_path / "single"
    rt = start_runtime([apps.counter], data_dir=data)
    rt.call(apps.add, key="k", arg=1)
    rt.shutdown()
    assert not (data / "partitions").exists()  # one partition: the layout as before
    with pytest.raises(DataDirError, match="partitions=1"):
        start_runtime([apps.counter], data_dir=data, partitions=2)


def test_a_concurrency_limit_holds_over_every_partition(part_rt: Runtime, tmp_path: Path) -> None:
    """The limiter is one per runtime (partition 0's scheduler): service calls spread over
    four partitions' hosts, and never more than three run at once."""
    ledger = str(tmp_path / "ledger")
    rt = part_rt
    handles = [
        rt.send(limits_apps.work, arg=limits_apps.Job(ledger=ledger, n=n)) for n in range(16)
    ]
    assert sorted(h.result(timeout=120) for h in handles) == list(range(16))
    assert len({PARTITIONS.of_id(h.id) for h in handles}) > 1
    assert max_overlap(ledger_lines(ledger)) <= 3


def test_a_schedule_ticks_into_another_partition(part_rt: Runtime, tmp_path: Path) -> None:
    """Schedules live in partition 0; a tick of a key in another partition runs there, once
    per tick, under the id the schedule records."""
    ledger = tmp_path / "ledger"
    rt = part_rt
    key = next(k for k in (f"s{i}" for i in range(100)) if PARTITIONS.of_key("TickObj", k) != 0)
    rt.schedule("p", schedule_apps.obj_tick, key=key, arg=str(ledger), every=timedelta(seconds=1))

    def ticks() -> list[str]:
        return [ln.split()[2] for ln in ledger_lines(str(ledger)) if ln.startswith("start ")]

    ids = assert_eventually(lambda: len(ticks()) >= 2 and ticks(), message="two ticks")
    assert len(set(ids)) == len(ids)
    assert {PARTITIONS.of_id(i) for i in ids} == {PARTITIONS.of_key("TickObj", key)}
    rt.pause_schedule("p")
    last = rt.sql("SELECT last_invocation_id FROM sys_schedule").column(0)[0].as_py()
    assert PARTITIONS.of_id(last) == PARTITIONS.of_key("TickObj", key)
    assert_eventually(lambda: last in ticks(), message="the recorded tick ran")


def test_a_connected_client_routes_by_partition(part_rt: Runtime) -> None:
    other = Runtime.connect(namespace=part_rt.namespace)
    try:
        assert other.partitions == PARTITIONS
        keys = keys_in_partitions("Counter", "conn", 4)
        assert [other.call(apps.add, key=k, arg=2) for k in keys] == [2, 2, 2, 2]
        h = part_rt.send(apps.add, key=keys[3], arg=1)
        assert other.attach(h.id).result(timeout=30) == 3
    finally:
        other.close()


def test_bad_partition_arguments_are_refused_before_anything_starts(
    start_runtime, tmp_path: Path
) -> None:
    data = tmp_path / "never"
    with pytest.raises(ValueError, match="partitions must be an int from 1"):
        start_runtime([apps.counter], data_dir=data, partitions=0)
    with pytest.raises(ValueError, match="partition_placement must be 'local' or 'spread'"):
        start_runtime([apps.counter], data_dir=data, partitions=2, partition_placement="nearby")
    assert not data.exists()


def test_local_partitions_refuse_to_rebalance_and_stay(part_rt: Runtime) -> None:
    pids = [ray.get(journal(part_rt, p).info.remote())["pid"] for p in PARTITIONS]
    with pytest.raises(ValueError, match="partitions are local"):
        part_rt.rebalance_partitions()
    assert [ray.get(journal(part_rt, p).info.remote())["pid"] for p in PARTITIONS] == pids

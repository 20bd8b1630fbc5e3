"""The partition layout (``journal.partitions``): names, id placement, the data dir's count."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.cluster.names import idempotent_invocation_id, new_invocation_id, route_hash
from journal.errors import DataDirError
from journal.partitions import (
    Partitions,
    Placement,
    claim,
    directories,
    partition_of_id,
    stored_count,
)


def test_one_partition_keeps_todays_names_ids_and_hashes() -> None:
    one = Partitions()
    inv = new_invocation_id()
    assert (one.journal(0), one.scheduler(0), one.directory("/d", 0)) == (
        "journal",
        "scheduler",
        "/d",
    )
    assert one.locate("Svc", None, inv) == inv and one.locate("Obj", "k", inv) == inv
    assert one.of_id(inv) == 0 and one.within(12345) == 12345


def test_several_partitions_name_each_and_ids_carry_theirs() -> None:
    four = Partitions(4)
    assert [four.journal(p) for p in four] == ["journal:0", "journal:1", "journal:2", "journal:3"]
    assert four.scheduler(3) == "scheduler:3" and four.directory("/d", 2) == "/d/partition-2"
    for i in range(50):
        key = f"k{i}"
        placed = four.locate("Obj", key, new_invocation_id())
        assert four.of_id(placed) == four.of_key("Obj", key) == route_hash("Obj", key, "") % 4
        assert four.locate("Obj", key, placed) == placed  # placing again changes nothing
        assert partition_of_id(placed) == four.of_id(placed)


def test_keyless_ids_spread_and_stay_put_on_replay() -> None:
    four = Partitions(4)
    ids = [four.locate("Svc", None, new_invocation_id()) for _ in range(400)]
    assert {four.of_id(i) for i in ids} == {0, 1, 2, 3}
    derived = idempotent_invocation_id("Svc/h", None, "order-7")
    assert four.locate("Svc", None, derived) == four.locate("Svc", None, derived)


def test_hosts_of_a_partition_share_its_keys_evenly() -> None:
    """The partition takes the hash modulo N; what picks a host in it is the rest, so the
    hosts of one partition are not left idle (as ``hash % pool`` would with pool == N)."""
    two = Partitions(2)
    hashes = [route_hash("Obj", f"k{i}", "") for i in range(2000)]
    in_zero = [two.within(h) % 2 for h in hashes if two.of_hash(h) == 0]
    assert 0.4 < sum(in_zero) / len(in_zero) < 0.6


@pytest.mark.parametrize("bad", [0, -1, 257, 2.0, "4"])
def test_a_bad_count_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="partitions must be an int"):
        Partitions(bad)  # type: ignore[arg-type]


def test_the_count_of_a_data_dir_is_fixed_when_it_is_made(tmp_path: Path) -> None:
    data = tmp_path / "data"
    claim(data, Partitions(4))
    assert stored_count(data) == 4 and (data / "partitions").stat().st_mode & 0o077 == 0
    claim(data, Partitions(4))
    with pytest.raises(DataDirError, match="made with partitions=4"):
        claim(data, Partitions(2))
    assert [d.name for d in directories(data)] == [f"partition-{p}" for p in range(4)]


def test_a_one_partition_data_dir_has_no_marker_and_refuses_more(tmp_path: Path) -> None:
    data = tmp_path / "single"
    claim(data, Partitions(1))
    assert stored_count(data) is None  # new: nothing written
    data.mkdir()
    (data / "journal.duckdb").write_bytes(b"")
    assert stored_count(data) == 1 and directories(data) == [data]
    with pytest.raises(DataDirError, match="made with partitions=1"):
        claim(data, Partitions(3))


def test_local_partitions_past_the_cores_are_warned_about() -> None:
    warning = Partitions(4).crowding(Placement.LOCAL, 2.0)
    assert warning is not None and warning.startswith("4 local partitions on a node with 2 CPUs")
    assert Partitions(2).crowding(Placement.LOCAL, 2.0) is None  # they fit
    assert Partitions(4).crowding(Placement.SPREAD, 2.0) is None  # each on a node of its own
    assert Partitions(1).crowding(Placement.LOCAL, 0.5) is None  # one partition: as ever
    assert Partitions(4).crowding(Placement.LOCAL, 0.0) is None  # CPUs unknown

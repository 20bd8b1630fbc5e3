"""JournalStore on a tmp_path data dir: writes, the SQL views, recovery reads, migrations."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from journal.keyfilter import MIN_CAPACITY, KeyFilter
from journal.records import (
    Accept,
    Batch,
    Entry,
    Outcome,
    Output,
    PendingInvocation,
    StateWrite,
    StatusChange,
)
from journal.schema import MIGRATIONS
from journal.store import DataDirError, JournalStore

SYS_INVOCATION_COLUMNS = [
    "id",
    "target",
    "target_service_name",
    "target_service_key",
    "target_handler_name",
    "status",
    "completion_result",
    "completion_failure",
    "retry_count",
    "last_failure",
    "idempotency_key",
    "invoked_by_id",
    "input",
    "output",
    "created_at",
    "modified_at",
    "completed_at",
]
SYS_JOURNAL_COLUMNS = [
    "invocation_id",
    "index",
    "entry_type",
    "name",
    "completed",
    "result",
    "created_at",
]
STATE_COLUMNS = ["service_name", "service_key", "key", "value"]

T0 = 1_700_000_000_000  # epoch ms


def ts(ms: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=ms)


@pytest.fixture
def store(data_dir: Path) -> Iterator[JournalStore]:
    s = JournalStore(data_dir)
    yield s
    s.close()


def rows(store: JournalStore, query: str) -> list[dict[str, object]]:
    return store.sql(query).to_pylist()


def accept(
    inv_id: str,
    key: str | None = "k1",
    route_hash: int = 0,
    *,
    service: str = "Obj",
    handler: str = "h",
    input: str = "{}",
    at: int = T0,
) -> Accept:
    return Accept(inv_id, service, handler, key, route_hash, input, created_at_ms=at)


def full_batch(batch_id: str = "b1") -> Batch:
    """One invocation from acceptance to output, with every kind of record."""
    return Batch(
        batch_id,
        [
            Accept(
                "inv_1",
                "Obj",
                "add",
                "alice",
                42,
                '{"x": 5, "tags": ["a"]}',
                idempotency_key="idem-1",
                invoked_by="inv_0",
                created_at_ms=T0,
            ),
            Entry("inv_1", 0, "get_state", "count", None, created_at_ms=T0 + 1),
            Entry("inv_1", 1, "run", "charge", '{"paid": true}', created_at_ms=T0 + 2),
            Entry("inv_1", 2, "set_state", "count", "5", created_at_ms=T0 + 3),
            StateWrite("Obj", "alice", "count", "5"),
            StatusChange("inv_1", "backing-off", 1, "RuntimeError: flaky", T0 + 4),
            Entry("inv_1", 3, "run", "ship", None, "out of stock", 409, created_at_ms=T0 + 5),
            Output("inv_1", True, '{"y": 7}', completed_at_ms=T0 + 9),
        ],
    )


# -- views --------------------------------------------------------------------------------------


def test_views_have_the_documented_columns(store: JournalStore) -> None:
    def columns(view: str) -> list[str]:
        return store.sql(f"SELECT * FROM {view} LIMIT 0").column_names

    assert set(SYS_INVOCATION_COLUMNS) <= set(columns("sys_invocation"))
    assert set(SYS_JOURNAL_COLUMNS) <= set(columns("sys_journal"))
    assert set(STATE_COLUMNS) <= set(columns("state"))


def test_write_and_read_back_through_the_views(store: JournalStore) -> None:
    outputs = store.write([full_batch()])
    assert outputs == [Output("inv_1", True, '{"y": 7}', completed_at_ms=T0 + 9)]

    [inv] = rows(store, "SELECT * FROM sys_invocation")
    assert inv["id"] == "inv_1"
    assert inv["target"] == "Obj/alice/add"
    assert inv["target_service_name"] == "Obj"
    assert inv["target_service_key"] == "alice"
    assert inv["target_handler_name"] == "add"
    assert inv["status"] == "completed"
    assert inv["completion_result"] == "success"
    assert inv["completion_failure"] is None
    assert inv["retry_count"] == 1
    assert inv["last_failure"] == "RuntimeError: flaky"
    assert inv["idempotency_key"] == "idem-1"
    assert inv["invoked_by_id"] == "inv_0"
    assert json.loads(inv["input"]) == {"x": 5, "tags": ["a"]}  # type: ignore[arg-type]
    assert json.loads(inv["output"]) == {"y": 7}  # type: ignore[arg-type]
    assert inv["created_at"] == ts(T0)
    assert inv["modified_at"] == ts(T0 + 9)
    assert inv["completed_at"] == ts(T0 + 9)

    journal = rows(store, "SELECT * FROM sys_journal ORDER BY index")
    assert [(j["invocation_id"], j["index"], j["entry_type"], j["name"]) for j in journal] == [
        ("inv_1", 0, "get_state", "count"),
        ("inv_1", 1, "run", "charge"),
        ("inv_1", 2, "set_state", "count"),
        ("inv_1", 3, "run", "ship"),
    ]
    assert [j["completed"] for j in journal][1:] == [True, True, True]
    assert journal[1]["result"] is not None
    assert json.loads(journal[1]["result"]) == {"paid": True}  # type: ignore[arg-type]
    assert json.loads(journal[2]["result"]) == 5  # type: ignore[arg-type]
    assert json.loads(journal[3]["result"]) == {  # type: ignore[arg-type]
        "failure": "out of stock",
        "code": 409,
    }
    assert [j["created_at"] for j in journal] == [ts(T0 + n) for n in (1, 2, 3, 5)]

    assert rows(store, "SELECT * FROM state") == [
        {"service_name": "Obj", "service_key": "alice", "key": "count", "value": "5"}
    ]


def test_entries_without_a_result_are_still_completed(store: JournalStore) -> None:
    store.write(
        [
            Batch(
                "b",
                [
                    accept("inv_1"),
                    Entry("inv_1", 0, "get_state", "missing", None),
                    Entry("inv_1", 1, "clear_state", "x", None),
                ],
            )
        ]
    )
    assert [r["completed"] for r in rows(store, "SELECT * FROM sys_journal ORDER BY index")] == [
        True,
        True,
    ]


def test_status_follows_the_invocation(store: JournalStore) -> None:
    def status() -> dict[str, object]:
        return rows(
            store,
            "SELECT status, completion_result, completion_failure, retry_count,"
            " last_failure, modified_at, completed_at FROM sys_invocation",
        )[0]

    store.write([Batch("b1", [accept("inv_1", key=None, service="Svc", handler="go")])])
    assert status() == {
        "status": "pending",
        "completion_result": None,
        "completion_failure": None,
        "retry_count": 0,
        "last_failure": None,
        "modified_at": ts(T0),
        "completed_at": None,
    }
    assert rows(store, "SELECT target, target_service_key FROM sys_invocation") == [
        {"target": "Svc/go", "target_service_key": None}
    ]

    store.write([Batch("b2", [Entry("inv_1", 0, "run", "a", "1")])])
    assert status()["status"] == "running"

    store.write([Batch("b3", [StatusChange("inv_1", "backing-off", 1, "E: one", T0 + 10)])])
    store.write([Batch("b4", [StatusChange("inv_1", "backing-off", 2, "E: two", T0 + 20)])])
    got = status()
    assert (got["status"], got["retry_count"], got["last_failure"]) == ("backing-off", 2, "E: two")
    assert got["modified_at"] == ts(T0 + 20)

    store.write([Batch("b5", [Output("inv_1", False, None, "gave up", 500, T0 + 30)])])
    assert status() == {
        "status": "completed",
        "completion_result": "failure",
        "completion_failure": "gave up",
        "retry_count": 2,
        "last_failure": "E: two",
        "modified_at": ts(T0 + 30),
        "completed_at": ts(T0 + 30),
    }


def test_state_latest_write_wins_and_none_clears(store: JournalStore) -> None:
    store.write(
        [
            Batch(
                "b1",
                [
                    StateWrite("Obj", "a", "x", "1"),
                    StateWrite("Obj", "a", "y", '"why"'),
                    StateWrite("Obj", "b", "x", "10"),
                    StateWrite("Other", "a", "x", "100"),
                ],
            )
        ]
    )
    store.write([Batch("b2", [StateWrite("Obj", "a", "x", "2"), StateWrite("Obj", "a", "x", "3")])])
    store.write([Batch("b3", [StateWrite("Obj", "a", "y", None)])])

    assert store.load_state("Obj", "a") == {"x": "3"}
    assert store.load_state("Obj", "b") == {"x": "10"}
    assert store.load_state("Other", "a") == {"x": "100"}
    assert store.load_state("Obj", "nobody") == {}
    assert rows(store, "SELECT * FROM state ORDER BY service_name, service_key, key") == [
        {"service_name": "Obj", "service_key": "a", "key": "x", "value": "3"},
        {"service_name": "Obj", "service_key": "b", "key": "x", "value": "10"},
        {"service_name": "Other", "service_key": "a", "key": "x", "value": "100"},
    ]

    store.write([Batch("b4", [StateWrite("Obj", "a", "y", '{"again": true}')])])
    assert store.load_state("Obj", "a") == {"x": "3", "y": '{"again": true}'}
    assert store.load_states("Obj", ["a", "b", "nobody"]) == {
        "a": {"x": "3", "y": '{"again": true}'},
        "b": {"x": "10"},
        "nobody": {},
    }


def test_load_states_of_many_keys_and_long_histories(store: JournalStore) -> None:
    """Past the index lookup's id limit the keys go in chunks; a key with a history longer
    than the Python fold is folded by DuckDB."""
    store.write([Batch("many", [StateWrite("Obj", f"k{i}", "n", str(i)) for i in range(300)])])
    store.write([Batch("hot", [StateWrite("Obj", "hot", "n", str(i)) for i in range(1_500)])])
    keys = [f"k{i}" for i in range(300)]
    assert store.load_states("Obj", keys) == {f"k{i}": {"n": str(i)} for i in range(300)}
    assert store.load_state("Obj", "hot") == {"n": "1499"}
    assert store.load_states("Obj", ["hot", "k7"]) == {"hot": {"n": "1499"}, "k7": {"n": "7"}}


def test_the_key_filter_holds_every_key_with_state(store: JournalStore) -> None:
    """A host skips loading a key outside the filter, so a key with state must be in it."""
    store.write(
        [
            Batch(
                "f1",
                [StateWrite("Obj", f"k{i}", "n", str(i)) for i in range(2_000)]
                + [
                    StateWrite("Obj", "a/b", "n", "1"),
                    StateWrite("Obj", "gone", "n", None),
                    StateWrite("Other", "elsewhere", "n", "1"),
                ],
            )
        ]
    )
    keys = KeyFilter.from_bytes(store.state_key_filter("Obj"))
    assert all(f"k{i}" in keys for i in range(2_000)) and "a/b" in keys and "gone" in keys
    assert sum(f"new{i}" in keys for i in range(2_000)) < 100, "about 1% false positives"
    assert "elsewhere" in KeyFilter.from_bytes(store.state_key_filter("Other"))
    assert keys.capacity == MIN_CAPACITY and keys.items == 2_002
    assert "k1" not in KeyFilter.from_bytes(store.state_key_filter("Ob"))


def test_json_functions_work_on_the_views(store: JournalStore) -> None:
    store.write(
        [full_batch(), Batch("b2", [StateWrite("Obj", "bob", "cart", '{"items": [1, 2]}')])]
    )
    assert rows(
        store,
        "SELECT json_extract(input, '$.x') AS x, input->>'$.tags[0]' AS tag,"
        " output->>'y' AS y FROM sys_invocation",
    ) == [{"x": "5", "tag": "a", "y": "7"}]
    assert rows(
        store,
        "SELECT json_extract(result, '$.code')::INTEGER AS code FROM sys_journal"
        " WHERE name = 'ship'",
    ) == [{"code": 409}]
    assert rows(
        store,
        "SELECT json_array_length(value, '$.items') AS n FROM state WHERE service_key = 'bob'",
    ) == [{"n": 2}]
    assert rows(
        store,
        "SELECT json_extract(result, '$.paid')::BOOLEAN AS paid FROM sys_journal"
        " WHERE name = 'charge'",
    ) == [{"paid": True}]


# -- batches ------------------------------------------------------------------------------------


def test_resent_batch_is_not_written_twice(store: JournalStore) -> None:
    assert len(store.write([full_batch("b1")])) == 1
    again = full_batch("b1")
    again.resent = True
    assert store.write([again]) == [], "nothing new became durable"
    assert rows(store, "SELECT count(*) AS n FROM log WHERE kind = 'accept'") == [{"n": 1}]
    assert rows(store, "SELECT count(*) AS n FROM sys_journal") == [{"n": 4}]
    assert rows(store, "SELECT count(*) AS n FROM log WHERE kind = 'state'") == [{"n": 1}]
    assert rows(store, "SELECT count(*) AS n FROM log WHERE kind = 'output'") == [{"n": 1}]


def test_same_batch_twice_in_one_write_is_written_once(store: JournalStore) -> None:
    first, second = full_batch("b1"), full_batch("b1")
    second.resent = True
    assert len(store.write([first, second])) == 1
    assert rows(store, "SELECT count(*) AS n FROM log WHERE kind = 'entry'") == [{"n": 4}]


def test_batches_with_new_ids_are_all_written(store: JournalStore) -> None:
    store.write(
        [
            Batch("a", [StateWrite("Obj", "k", "x", "1")]),
            Batch("b", [StateWrite("Obj", "k", "x", "2")]),
        ]
    )
    store.write([Batch("c", [StateWrite("Obj", "k", "x", "3")], resent=True)])
    assert rows(store, "SELECT count(*) AS n FROM log WHERE kind = 'state'") == [{"n": 3}]
    assert store.load_state("Obj", "k") == {"x": "3"}


def test_a_failed_write_leaves_nothing_behind(store: JournalStore) -> None:
    bad = Batch("bad", [accept("inv_ok"), Entry("inv_ok", "not-an-int", "run", "a")])  # type: ignore[arg-type]
    with pytest.raises(Exception):  # noqa: B017 - whatever DuckDB raises for the bad value
        store.write([bad])
    assert store.accepted("inv_ok") is None
    store.write([Batch("good", [accept("inv_2")])])
    assert rows(store, "SELECT id FROM log WHERE kind = 'accept'") == [{"id": "inv_2"}]
    assert rows(store, "SELECT count(*) AS n FROM log WHERE kind = 'entry'") == [{"n": 0}]
    batches = rows(store, "SELECT id AS batch_id FROM log WHERE kind = 'batch'")
    assert batches == [{"batch_id": "good"}]


# -- recovery reads -----------------------------------------------------------------------------


def test_pending_in_acceptance_order_with_entries_and_retries(store: JournalStore) -> None:
    store.write(
        [
            Batch(
                "b1",
                [accept("inv_c", key="k1", route_hash=0), accept("inv_a", key="k2", route_hash=1)],
            )
        ]
    )
    store.write(
        [
            Batch(
                "b2",
                [
                    accept("inv_b", key="k1", route_hash=0),
                    Entry("inv_c", 1, "run", "two", '"2"'),
                    Entry("inv_c", 0, "run", "one", '"1"'),
                    StatusChange("inv_c", "backing-off", 2, "E", T0),
                    accept("inv_done", key="k3", route_hash=2),
                    Output("inv_done", True, "null"),
                ],
            )
        ]
    )
    pending = store.pending(["Obj"])
    assert [p.accept.id for p in pending] == ["inv_c", "inv_a", "inv_b"]
    c, a, b = pending
    assert isinstance(c, PendingInvocation)
    assert c.accept == accept("inv_c", key="k1", route_hash=0)
    assert [(e.idx, e.name, e.result) for e in c.entries] == [(0, "one", '"1"'), (1, "two", '"2"')]
    assert c.retry_count == 2
    assert (a.entries, a.retry_count, b.entries, b.retry_count) == ([], 0, [], 0)


def test_pending_filters_by_service_partition_and_key(store: JournalStore) -> None:
    store.write(
        [
            Batch(
                "b1",
                [accept(f"inv_{h}", key=f"k{h % 2}", route_hash=h) for h in range(7)]
                + [accept("inv_other", service="Other", route_hash=0)],
            )
        ]
    )

    def ids(*args: object, **kwargs: object) -> list[str]:
        return [p.accept.id for p in store.pending(*args, **kwargs)]  # type: ignore[arg-type]

    assert ids(["Obj"]) == [f"inv_{h}" for h in range(7)]
    assert ids(["Obj", "Other"]) == [*(f"inv_{h}" for h in range(7)), "inv_other"]
    assert ids(["Nope"]) == []
    assert ids(["Obj"], partition=(0, 3)) == ["inv_0", "inv_3", "inv_6"]
    assert ids(["Obj"], partition=(1, 3)) == ["inv_1", "inv_4"]
    assert ids(["Obj"], partition=(2, 3)) == ["inv_2", "inv_5"]
    assert ids(["Obj"], partition=(0, 1)) == ids(["Obj"])
    assert ids(["Obj"], key="k1") == ["inv_1", "inv_3", "inv_5"]
    assert ids(["Obj"], partition=(1, 3), key="k0") == ["inv_4"]


def test_pending_handles_large_route_hashes(store: JournalStore) -> None:
    big = 2**32 - 5  # crc32 values fill 32 unsigned bits
    store.write([Batch("b1", [accept("inv_big", route_hash=big)])])
    assert [p.accept.route_hash for p in store.pending(["Obj"], partition=(big % 4, 4))] == [big]
    assert store.pending(["Obj"], partition=((big + 1) % 4, 4)) == []


def test_completed_invocations_are_not_pending(store: JournalStore) -> None:
    store.write([full_batch()])
    assert store.pending(["Obj"]) == []
    assert store.pending_keys("Obj") == []


def test_outcome_accepted_and_pending_keys(store: JournalStore) -> None:
    assert store.outcome("inv_1") is None and store.accepted("inv_1") is None
    store.write(
        [
            Batch(
                "b1",
                [
                    accept("inv_1", key="a"),
                    accept("inv_2", key="b"),
                    accept("inv_3", key="b"),
                    accept("inv_4", key=None),
                    accept("inv_5", key="c", service="Other"),
                ],
            )
        ]
    )
    assert store.accepted("inv_1") == accept("inv_1", key="a")
    assert store.outcome("inv_1") is None
    assert sorted(store.pending_keys("Obj")) == ["a", "b"]

    store.write(
        [Batch("b2", [Output("inv_1", True, '"ok"'), Output("inv_2", False, None, "nope", 409)])]
    )
    assert store.outcome("inv_1") == Outcome(True, '"ok"')
    assert store.outcome("inv_2") == Outcome(False, None, "nope", 409)
    assert store.pending_keys("Obj") == ["b"]
    assert store.pending_keys("Other") == ["c"]


# -- migrations and the data dir ----------------------------------------------------------------


def test_reopen_keeps_data_and_schema_version(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = JournalStore(data)
    first.write([full_batch(), Batch("b2", [accept("inv_2", key="k")])])
    first.close()

    second = JournalStore(data)
    try:
        assert rows(second, "SELECT max(version) AS version FROM schema_version") == [
            {"version": len(MIGRATIONS)}
        ]
        assert rows(second, "SELECT id, status FROM sys_invocation ORDER BY id") == [
            {"id": "inv_1", "status": "completed"},
            {"id": "inv_2", "status": "pending"},
        ]
        assert second.load_state("Obj", "alice") == {"count": "5"}
        # Sequence numbers continue after a reopen: later writes still win, order still holds.
        second.write(
            [Batch("b3", [StateWrite("Obj", "alice", "count", "6"), accept("inv_3", key="k")])]
        )
        assert second.load_state("Obj", "alice") == {"count": "6"}
        assert [p.accept.id for p in second.pending(["Obj"])] == ["inv_2", "inv_3"]
        again = full_batch("b1")
        again.resent = True
        assert second.write([again]) == [], "batch ids survive a reopen"
    finally:
        second.close()


def test_second_process_on_the_same_dir_is_refused(store: JournalStore) -> None:
    script = textwrap.dedent(f"""
        from journal.store import DataDirError, JournalStore
        try:
            JournalStore({str(store.data_dir)!r})
        except DataDirError as e:
            print("DataDirError:", e)
        else:
            print("opened")
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.startswith("DataDirError:"), done.stdout + done.stderr
    assert "in use by another process" in done.stdout
    assert str(store.data_dir) in done.stdout


def test_second_store_in_the_same_process_is_a_data_dir_error(store: JournalStore) -> None:
    with pytest.raises(DataDirError, match="in use"):
        JournalStore(store.data_dir)


def test_data_dir_under_a_regular_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(DataDirError, match="cannot create data dir"):
        JournalStore(blocker / "data")


def test_data_dir_that_is_a_regular_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(DataDirError):
        JournalStore(blocker)


def test_nested_data_dir_is_created(tmp_path: Path) -> None:
    s = JournalStore(tmp_path / "a" / "b" / "c")
    try:
        assert (tmp_path / "a" / "b" / "c" / "journal.duckdb").is_file()
    finally:
        s.close()


def test_pending_services(data_dir: Path) -> None:
    store = JournalStore(data_dir)
    try:
        store.write(
            [
                Batch("b1", [accept("inv_1", key="k"), accept("inv_2", service="Svc")]),
                Batch("b2", [Output("inv_2", True, "1")]),
            ]
        )
        assert store.pending_services() == ["Obj"]
    finally:
        store.close()


def test_fired_open_timers(data_dir: Path) -> None:
    """What a starting scheduler wakes again: fired timers of unfinished invocations."""
    from journal.records import Timer, TimerFired

    store = JournalStore(data_dir)
    try:
        timers = [Timer(f"inv_{i}:1", f"inv_{i}", 1, "sleep", 5, "host:Obj:0") for i in (1, 2, 3)]
        store.write(
            [
                Batch(
                    "b1",
                    [
                        accept("inv_1"),
                        accept("inv_2"),
                        accept("inv_3"),
                        *timers,
                        TimerFired("inv_1:1", "inv_1"),
                        TimerFired("inv_2:1", "inv_2"),
                        Output("inv_2", True, "1"),
                    ],
                )
            ]
        )
        assert [t.timer_id for t in store.fired_open_timers()] == ["inv_1:1"]
    finally:
        store.close()

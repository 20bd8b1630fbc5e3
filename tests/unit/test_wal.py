"""The write-ahead log in front of DuckDB: frames, torn tails, segments, and a store killed
before it moved its log into DuckDB (a real process, ended with ``os._exit``)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from journal.records import Accept, Batch, Entry, Output
from journal.store import JournalStore
from journal.wal import WAL_DIR, WriteAheadLog

T0 = 1_700_000_000_000


def rows(first: int, n: int, kind: str = "entry") -> list[tuple]:
    return [(first + i, kind, f"inv_{first + i}", None, '{"a": "b\\n"}', None) for i in range(n)]


def invocation(n: int) -> Batch:
    inv = f"inv_{n}"
    return Batch(
        f"b{n}",
        [
            Accept(inv, "Obj", "add", f"k{n}", 0, "1", created_at_ms=T0),
            Entry(inv, 0, "run", "step", "2", created_at_ms=T0),
            Output(inv, True, str(n), completed_at_ms=T0),
        ],
    )


def run_and_die(data_dir: Path, body: str) -> None:
    """Run ``body`` with a ``store`` open on ``data_dir`` in a new process that then dies
    without closing it (no drain, no clean-up: as a killed journal actor)."""
    script = (
        "import os\nfrom journal.store import JournalStore\n"
        + "from tests.unit.test_wal import invocation\n"
        + f"store = JournalStore({str(data_dir)!r})\n"
        + textwrap.dedent(body)
        + "\nos._exit(0)\n"
    )
    subprocess.run(
        [sys.executable, "-c", script],
        check=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )


def log_rows(store: JournalStore) -> list[tuple]:
    return [
        tuple(r.values())
        for r in store.sql(
            "SELECT seq, kind, id FROM log WHERE kind NOT IN ('mark') ORDER BY seq"
        ).to_pylist()
    ]


def test_frames_come_back_in_order_and_a_torn_tail_ends_the_log(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path)
    wal.append(rows(1, 3))
    wal.append(rows(4, 2))
    wal.close()
    (segment,) = WriteAheadLog(tmp_path).segments()
    with segment.open("ab") as f:  # the frame being written when the process died
        f.write(b"\x00\x00\x01\x00\x12\x34")
    assert list(WriteAheadLog(tmp_path).replay()) == rows(1, 5)


def test_a_corrupt_frame_ends_the_log_there(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path)
    wal.append(rows(1, 2))
    wal.append(rows(3, 2))
    wal.append(rows(5, 2))
    wal.close()
    (segment,) = wal.segments()
    data = bytearray(segment.read_bytes())
    second = data.index(b"inv_3")
    data[second] ^= 0xFF
    segment.write_bytes(bytes(data))
    assert list(WriteAheadLog(tmp_path).replay()) == rows(1, 2)


def test_segments_roll_over_and_go_once_duckdb_holds_their_rows(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, segment_bytes=200)
    for first in range(1, 31, 3):
        wal.append(rows(first, 3))
    assert len(wal.segments()) > 3
    assert list(wal.replay()) == rows(1, 30)
    wal.release(15)
    left = list(wal.replay())
    assert left[0][0] <= 16 and left[-1][0] == 30, "only segments wholly drained are deleted"
    wal.release(30)
    assert wal.segments() == [], "the open segment goes too once it is drained and full"
    wal.append(rows(31, 1))
    assert list(WriteAheadLog(tmp_path).replay()) == rows(31, 1)


def test_reads_see_acknowledged_rows_before_any_drain(tmp_path: Path) -> None:
    store = JournalStore(tmp_path)
    try:
        store.write([invocation(1)])
        assert store.undrained > 0, "acknowledged from the write-ahead log, not DuckDB"
        outcome = store.outcome("inv_1")
        assert outcome is not None and outcome.output == "1"
        assert store.undrained == 0
    finally:
        store.close()
    assert WriteAheadLog(tmp_path).segments() == [], "a clean close leaves DuckDB holding all"


def test_a_store_killed_before_draining_loses_nothing(tmp_path: Path) -> None:
    run_and_die(
        tmp_path,
        """
        store.write([invocation(1), invocation(2)])
        assert store.undrained > 0
    """,
    )
    assert WriteAheadLog(tmp_path).segments(), "the rows are only in the write-ahead log"
    store = JournalStore(tmp_path)
    try:
        done = store.sql("SELECT id, status, output FROM sys_invocation ORDER BY id").to_pylist()
        assert done == [
            {"id": "inv_1", "status": "completed", "output": "1"},
            {"id": "inv_2", "status": "completed", "output": "2"},
        ]
        assert WriteAheadLog(tmp_path).segments() == [], "replayed, then a new log"
    finally:
        store.close()


def test_rows_drained_before_a_kill_are_not_replayed_twice(tmp_path: Path) -> None:
    run_and_die(
        tmp_path,
        """
        store.write([invocation(1)])
        assert store.drain() > 0
        store.write([invocation(2)])
    """,
    )
    store = JournalStore(tmp_path)
    try:
        got = log_rows(store)
        assert [s for s, _, _ in got] == sorted({s for s, _, _ in got}), "each row once"
        assert [(k, i) for _, k, i in got] == [
            ("batch", "b1"),
            ("accept", "inv_1"),
            ("entry", "inv_1"),
            ("output", "inv_1"),
            ("batch", "b2"),
            ("accept", "inv_2"),
            ("entry", "inv_2"),
            ("output", "inv_2"),
        ]
        store.write([invocation(3)])
        assert store.outcome("inv_3") is not None, "writes go on after recovery"
    finally:
        store.close()


def test_a_batch_sent_again_after_recovery_is_not_written_twice(tmp_path: Path) -> None:
    run_and_die(tmp_path, "store.write([invocation(1)])")
    store = JournalStore(tmp_path)
    try:
        again = invocation(1)
        again.resent = True  # the host never got the reply and sends the batch again
        store.write([again])
        assert [k for _, k, _ in log_rows(store)] == ["batch", "accept", "entry", "output"]
    finally:
        store.close()


def test_the_log_lives_in_the_data_dir(tmp_path: Path) -> None:
    store = JournalStore(tmp_path)
    try:
        store.write([invocation(1)])
        assert [p.parent for p in WriteAheadLog(tmp_path).segments()] == [tmp_path / WAL_DIR]
    finally:
        store.close()


def test_the_cli_reads_rows_a_killed_journal_left_only_in_its_log(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from actors.client.cli import app

    run_and_die(tmp_path, "store.write([invocation(1)])")
    assert WriteAheadLog(tmp_path).segments(), "the rows are only in the write-ahead log"
    result = CliRunner().invoke(
        app, ["sql", "SELECT id, output FROM sys_invocation", "-f", "json", "--db", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {"id": "inv_1", "output": 1}
    ]

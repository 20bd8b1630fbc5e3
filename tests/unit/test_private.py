"""Owner-only paths (``journal.private``): the data dir and the runtime's files in it, the
write-ahead log alone, and the directory of the wire's sockets. Other users must read none of
it (the journal holds every input, output and state value)."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from journal import private
from journal.actor import CONFIG_FILE, GroupCommitJournal
from journal.records import Batch, Entry
from journal.store import DB_FILE, JournalStore
from journal.wal import WAL_DIR, WriteAheadLog
from tests.conftest import loose_paths, loosen


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def a_batch(n: int) -> Batch:
    return Batch(f"b{n}", [Entry(f"inv-{n}", 0, "run", "step", "1")])


def test_a_new_data_dir_and_its_files_are_owner_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    journal = GroupCommitJournal(str(data))  # the store, its write-ahead log, the secret
    journal.set_config({"pool_size": 1})
    journal.store.write([a_batch(1)])
    assert list((data / WAL_DIR).iterdir()), "a segment of the write-ahead log was written"
    assert {p.name for p in data.iterdir()} >= {DB_FILE, WAL_DIR, CONFIG_FILE, "runtime-secret"}
    # DuckDB makes its own .wal as the process's umask says: the journal actor's process runs
    # with umask 077 (tests/integration/test_owner_only.py); this one does not.
    assert [p for p in loose_paths(data) if not p.startswith(f"{DB_FILE}.wal ")] == []
    journal.store.close()
    assert loose_paths(data) == []


def test_a_data_dir_an_older_version_left_readable_is_tightened_at_open(data_dir: Path) -> None:
    (data_dir / CONFIG_FILE).write_bytes(b"")
    notes = data_dir / "notes.sh"  # the user's own file beside the journal: left alone
    notes.write_text("echo hi\n")
    loosen(data_dir)
    JournalStore(data_dir).close()
    assert [p for p in loose_paths(data_dir) if not p.startswith("notes.sh")] == []
    assert mode(notes) == 0o644


def test_the_write_ahead_log_alone_is_owner_only(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path)
    wal.append([(1, "k", "id", None, None, None)])
    wal.close()
    assert mode(tmp_path / WAL_DIR) == 0o700
    assert [mode(p) for p in wal.segments()] == [0o600]
    (tmp_path / WAL_DIR).chmod(0o755)
    WriteAheadLog(tmp_path).close()
    assert mode(tmp_path / WAL_DIR) == 0o700


@pytest.fixture
def temp_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``socket_dir`` looks in this temp dir (short, as a socket's path must be; its answer
    is cached per process: cleared)."""
    base = Path(tempfile.mkdtemp(prefix="rs-"))
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(base))
    private.socket_dir.cache_clear()
    yield base
    private.socket_dir.cache_clear()
    shutil.rmtree(base)


def test_the_socket_dir_is_this_users_and_owner_only(temp_dir: Path) -> None:
    mine = temp_dir / f"raystate-{os.getuid()}"
    mine.mkdir(mode=0o755)
    mine.chmod(0o755)
    assert private.socket_dir(private.SOCKET_NAME_MAX) == mine
    assert mode(mine) == 0o700


def test_a_socket_dir_name_taken_by_a_symlink_is_not_used(temp_dir: Path) -> None:
    """In a shared temp dir anyone may have made the name first (here: a link elsewhere)."""
    elsewhere = temp_dir / "elsewhere"
    elsewhere.mkdir(mode=0o777)
    (temp_dir / f"raystate-{os.getuid()}").symlink_to(elsewhere)
    got = private.socket_dir(private.SOCKET_NAME_MAX)
    assert got.parent == temp_dir and not got.is_symlink()
    assert got.name.startswith(f"raystate-{os.getuid()}-") and mode(got) == 0o700


def test_a_temp_dir_too_long_for_a_socket_path_falls_back_to_tmp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deep = tmp_path / ("d" * 100)
    deep.mkdir()
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(deep))
    private.socket_dir.cache_clear()
    try:
        got = private.socket_dir(private.SOCKET_NAME_MAX)
    finally:
        private.socket_dir.cache_clear()
    assert got == Path("/tmp") / f"raystate-{os.getuid()}"
    assert len(os.fsencode(got)) + 1 + private.SOCKET_NAME_MAX <= private.SUN_PATH_MAX

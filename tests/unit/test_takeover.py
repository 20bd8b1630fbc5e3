"""A fenced journal's start while another process still holds the DuckDB file
(``journal.takeover``): it takes the next epoch, then waits for the file instead of failing
(a restarted journal actor whose constructor raised would be dead for good). The holder here is
a plain process with the file open, let go when the test closes its stdin."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from journal.actor import GroupCommitJournal
from journal.errors import DataDirInUse, Fenced
from journal.fence import Fence, stored_epoch
from journal.store import DB_FILE
from tests.conftest import assert_eventually

HOLD = (
    "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('held', flush=True); "
    "sys.stdin.read()"
)


@pytest.fixture
def holder(data_dir: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process that holds the data dir's DuckDB file until its stdin closes."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(data_dir / DB_FILE)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def let_go(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=30)


def start_in_thread(data_dir: Path) -> tuple[threading.Thread, dict[str, object]]:
    out: dict[str, object] = {}

    def start() -> None:
        try:
            out["journal"] = GroupCommitJournal(str(data_dir), fenced=True, lock_wait_s=None)
        except Exception as e:
            out["error"] = e

    thread = threading.Thread(target=start)
    thread.start()
    return thread, out


def test_a_fenced_start_waits_until_the_holder_lets_go(
    data_dir: Path, holder: subprocess.Popen[str]
) -> None:
    thread, out = start_in_thread(data_dir)
    assert_eventually(lambda: stored_epoch(data_dir) == 1, message="the start took its epoch")
    assert thread.is_alive() and not out  # waiting for the file
    let_go(holder)
    thread.join(timeout=30)
    journal = out["journal"]
    assert isinstance(journal, GroupCommitJournal) and journal.info()["epoch"] == 1
    journal.store.close()


def test_a_start_that_may_not_wait_reports_the_file_in_use(
    data_dir: Path, holder: subprocess.Popen[str]
) -> None:
    with pytest.raises(DataDirInUse, match="in use by another process"):
        GroupCommitJournal(str(data_dir), fenced=True, lock_wait_s=0.0)
    with pytest.raises(DataDirInUse):  # unfenced: no waiting either
        GroupCommitJournal(str(data_dir))


def test_a_waiting_start_that_a_newer_one_replaced_gives_up(
    data_dir: Path, holder: subprocess.Popen[str]
) -> None:
    thread, out = start_in_thread(data_dir)
    assert_eventually(lambda: stored_epoch(data_dir) == 1, message="the start took its epoch")
    Fence.acquire(data_dir)  # a newer start, while the first one waits
    thread.join(timeout=30)
    assert isinstance(out.get("error"), Fenced), out
    let_go(holder)


def test_a_first_start_refuses_a_held_file_without_taking_an_epoch(
    data_dir: Path, holder: subprocess.Popen[str]
) -> None:
    """A second runtime started on a spread data dir in use must not fence the running one:
    a first start checks the file before it takes an epoch."""
    from journal.takeover import refuse_if_held

    before = stored_epoch(str(data_dir))
    with pytest.raises(DataDirInUse, match="in use by another process"):
        refuse_if_held(str(data_dir))
    assert stored_epoch(str(data_dir)) == before
    let_go(holder)
    refuse_if_held(str(data_dir))  # free now: nothing raised

"""Opening a fenced journal's store while the writer it replaces still holds the DuckDB file.

When Ray starts a spread partition's journal again on another node, the new process takes the
next epoch (``journal.fence``) and then opens the store; the writer it replaces may still run
(a frozen process, a node cut off from the cluster, a process Ray has not finished killing) and
hold DuckDB's lock on the file. That writer lets go at its next fence check (an idle fenced
journal checks every second) or when it dies. So the new one waits for the file instead of
failing: a constructor that raises in an actor Ray restarts ends that actor for good, which
would leave the partition without a journal.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import duckdb

from journal.errors import DataDirInUse
from journal.fence import Fence

RETRY_S = 0.1  # between attempts to open the file
WARN_EVERY_S = 30.0
FIRST_START_WAIT_S = 30.0  # a first start reports a file held that long (Runtime.start raises)
log = logging.getLogger("raystate.journal")
T = TypeVar("T")


def open_when_free(open_store: Callable[[], T], fence: Fence, wait_s: float | None) -> T:
    """``open_store()``, tried again while another process holds the DuckDB file: for
    ``wait_s`` seconds (None: until it lets go). Between attempts the fence is checked, so a
    start that a newer writer has replaced meanwhile stops with ``Fenced``."""
    started = warned = time.monotonic()
    while True:
        try:
            return open_store()
        except DataDirInUse as e:
            now = time.monotonic()
            if wait_s is not None and now - started > wait_s:
                raise
            if now - warned > WARN_EVERY_S:
                log.warning("epoch %d waits for the journal file: %s", fence.epoch, e)
                warned = now
        fence.check()
        time.sleep(RETRY_S)


def refuse_if_held(data_dir: str, db_file: str = "journal.duckdb") -> None:
    """``DataDirInUse`` if another process holds the journal file. A first start checks this
    before it takes an epoch: taking one fences the holder, which is right for a restart that
    takes a lost writer's place, and wrong for a second runtime started on the same data dir."""
    path = Path(data_dir) / db_file
    if not path.exists():
        return
    try:
        duckdb.connect(str(path), read_only=True).close()
    except duckdb.IOException as e:
        if "lock" in str(e):
            raise DataDirInUse(f"data dir {data_dir} is in use by another process: {e}") from None
        raise

"""Fence: at most one writer of a journal directory makes progress, without clocks or leases.

A partition spread over a cluster (``Placement.SPREAD``) keeps its journal on storage every node
mounts; when its node is lost, Ray starts the journal actor again on another node, while the
old process may still run (a frozen process, a node cut off and back). Each writer's start
takes the next *epoch*: it reads the number in the directory's ``epoch`` file and replaces the
file (atomically: a temporary file, ``fsync``, ``os.replace``, ``fsync`` of the directory) with
that number plus one and a random token of its own. Before a writer acknowledges anything, and
before it moves rows into DuckDB, it reads the file again (``check``): if it no longer holds
its own epoch and token, a newer writer has started and this one is ``Fenced`` for good.

Why that suffices for the journal: a writer makes a group durable (log append and
``fdatasync``) and only then checks. A check that passes ran before the newer writer replaced
the file, so the group was durable before the newer writer's start, which reads the log only
after it replaced the file: it replays every group the old writer acknowledged. A group whose
check fails was never acknowledged (``journal.wal`` says what becomes of its frame).

The token makes two starts that raced on one epoch (both read N, both wrote N + 1) tell each
other apart: only one file survives, and the other's next check fails. Nothing here depends on
time, so a writer frozen for any while is refused when it comes back; the cost is that a writer
learns it was fenced only when it next checks (its next commit or drain).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from journal.errors import DataDirError, Fenced
from journal.private import DIR_MODE, FILE_MODE
from journal.wal import sync_dir

EPOCH_FILE = "epoch"
_MAX_BYTES = 256  # an epoch file is "<epoch> <token>\n", far shorter


class Fence:
    """One writer's hold on a directory: the epoch it took, checked by re-reading the file."""

    __slots__ = ("_mark", "_path", "directory", "epoch")

    def __init__(self, directory: Path, epoch: int, mark: bytes) -> None:
        self.directory = directory
        self.epoch = epoch
        self._path = os.fspath(directory / EPOCH_FILE)
        self._mark = mark  # the file's whole content while this writer holds it

    @classmethod
    def acquire(cls, directory: str | os.PathLike[str]) -> Fence:
        """Take the next epoch of ``directory`` (made if missing): every earlier holder is
        fenced from now on. ``Fenced`` if another start replaced the file at the same moment;
        ``DataDirError`` if the file cannot be read or written."""
        root = Path(directory)
        try:
            root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            epoch = _parse(root, _read(os.fspath(root / EPOCH_FILE))) + 1
            token = secrets.token_hex(8)
            mark = f"{epoch} {token}\n".encode()
            _replace(root, mark, token)
            fence = cls(root, epoch, mark)
        except OSError as e:
            raise DataDirError(f"cannot take the next epoch of {root}: {e}") from None
        fence.check()  # a start that raced this one may have replaced the file after ours
        return fence

    def current(self) -> int | None:
        """The epoch the file holds now (None: no readable epoch file)."""
        try:
            return _parse(self.directory, _read(self._path)) or None
        except (OSError, DataDirError):
            return None

    def check(self) -> None:
        """Raise ``Fenced`` if another writer has taken an epoch since this one: one open and
        one small read (a fresh open, so NFS's close-to-open consistency sees a new file)."""
        try:
            fd = os.open(self._path, os.O_RDONLY)
        except OSError:
            raise Fenced(os.fspath(self.directory), self.epoch, None) from None
        try:
            held = os.read(fd, _MAX_BYTES) == self._mark
        finally:
            os.close(fd)
        if not held:
            raise Fenced(os.fspath(self.directory), self.epoch, self.current())


def stored_epoch(directory: str | os.PathLike[str]) -> int:
    """The last epoch taken in ``directory`` (0: none yet)."""
    root = Path(directory)
    return _parse(root, _read(os.fspath(root / EPOCH_FILE)))


def _read(path: str) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return b""
    try:
        return os.read(fd, _MAX_BYTES)
    finally:
        os.close(fd)


def _parse(root: Path, data: bytes) -> int:
    if not data:
        return 0
    first = data.split(maxsplit=1)[0]
    if not first.isdigit():
        raise DataDirError(f"{root / EPOCH_FILE} is damaged: {data[:40]!r} holds no epoch")
    return int(first)


def _replace(root: Path, data: bytes, token: str) -> None:
    """Write ``data`` as the epoch file, all or nothing, durably (its name too)."""
    tmp = root / f".{EPOCH_FILE}.{token}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, root / EPOCH_FILE)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    sync_dir(root)

"""WriteAheadLog: the journal's log rows made durable in a plain file before DuckDB gets them.

A DuckDB commit of one small group costs the journal's CPU a fixed price, whatever it holds;
an append of the same rows to a file plus one ``fdatasync`` costs a fraction of it
(docs/performance.md). So a group
commit is acknowledged once its rows are in this log, and ``JournalStore`` moves them into
DuckDB later, many groups in one transaction (a "drain"); every read drains first, so what was
acknowledged is always what DuckDB shows. After a crash, ``JournalStore`` replays the rows this
log holds beyond DuckDB's highest ``seq``, then starts a new log.

Files: ``wal/<number, 12 digits>.log`` segments, a new one past ``SEGMENT_BYTES``; a segment
is deleted once DuckDB holds all of its rows. A segment is a run of frames, each one group
commit: a header (payload bytes, CRC-32 of the payload) and the rows as a JSON array of
``[seq, kind, id, name, data, meta]``. A frame cut short or failing its CRC ends the log: it is
the one being written when the process died, never acknowledged. Payloads are JSON, never
pickle: nothing read back from the journal is unpickled.

A fenced writer (``journal.fence``) names its segments ``<number>-<epoch>.log``, creates each
one exclusively, and checks its fence before it writes a frame there. So two writers never
append to one file, and a writer that was fenced writes frames only into segments it made
before its successor started: the successor's recovery replays them (such a frame is a commit
whose reply was lost: its batch id makes the re-sent batch harmless), then deletes them, and a
frame written after that goes with the deleted file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import struct
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from journal.private import DIR_MODE, FILE_MODE, restrict

if TYPE_CHECKING:
    from journal.fence import Fence

log = logging.getLogger("raystate.journal")

FRAME = struct.Struct("!II")  # payload bytes, CRC-32 of the payload
SEGMENT_BYTES = 16 << 20
WAL_DIR = "wal"
SUFFIX = ".log"

Row = tuple[int, str, str, str | None, str | None, str | None]


def encode_frame(rows: Sequence[Row]) -> bytes:
    payload = json.dumps(rows, separators=(",", ":")).encode()
    return FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def decode_frames(data: bytes) -> tuple[list[list[Row]], int]:
    """The frames of one segment's bytes, and how many bytes they take (the rest is a torn or
    corrupt tail)."""
    frames: list[list[Row]] = []
    at = 0
    while at + FRAME.size <= len(data):
        size, crc = FRAME.unpack_from(data, at)
        payload = data[at + FRAME.size : at + FRAME.size + size]
        if len(payload) < size or zlib.crc32(payload) != crc:
            break
        try:
            frames.append([_row(r) for r in json.loads(payload)])
        except (ValueError, TypeError):
            break
        at += FRAME.size + size
    return frames, at


def _row(r: Any) -> Row:
    seq, kind, id_, name, data, meta = r
    if not isinstance(seq, int) or not isinstance(kind, str) or not isinstance(id_, str):
        raise TypeError(f"not a log row: {r!r}")
    return (seq, kind, id_, name, data, meta)


class WriteAheadLog:
    """Segments of durable log rows in ``<data dir>/wal``. Not thread-safe: one writer."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        segment_bytes: int = SEGMENT_BYTES,
        fence: Fence | None = None,
    ) -> None:
        """``fence``: the writer's hold on ``data_dir`` (None: not fenced)."""
        self.dir = Path(data_dir) / WAL_DIR
        self._fence = fence
        self.dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        restrict(self.dir, DIR_MODE)  # made looser by an older version
        self.segment_bytes = segment_bytes
        self._fd: int | None = None
        self._path: Path | None = None
        self._size = 0
        self._sealed: dict[Path, int] = {}  # closed segments -> the highest seq they hold
        self._last_seq = 0  # the highest seq in the open segment

    def segments(self) -> list[Path]:
        return sorted(self.dir.glob(f"*{SUFFIX}"))

    def replay(self) -> Iterator[Row]:
        """Every row the segments hold, in order (a torn tail ends the log)."""
        paths = self.segments()
        for i, path in enumerate(paths):
            data = path.read_bytes()
            frames, good = decode_frames(data)
            if good < len(data):
                log.warning(
                    "write-ahead log %s: %d bytes after the last whole frame ignored%s",
                    path,
                    len(data) - good,
                    "" if i == len(paths) - 1 else " (not the last segment)",
                )
            for frame in frames:
                yield from frame
            if good < len(data):
                return

    def reset(self) -> None:
        """Delete every segment (their rows are in DuckDB) and close the open one."""
        self._close()
        for path in self.segments():
            path.unlink()
        self._sealed.clear()
        sync_dir(self.dir)

    def append(self, rows: Sequence[Row]) -> None:
        """Make ``rows`` durable: one frame, one ``fdatasync``."""
        if not rows:
            return
        if self._fd is None or self._size >= self.segment_bytes:
            self._open()
        assert self._fd is not None
        frame = encode_frame(rows)
        try:
            written = os.write(self._fd, frame)
            while written < len(frame):  # pragma: no cover - regular files write whole
                written += os.write(self._fd, frame[written:])
            os.fdatasync(self._fd)
        except OSError:
            # Not acknowledged: cut what may have been written, and go on in a new segment
            # so that no later frame follows a torn one.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            self._close()
            raise
        self._size += len(frame)
        self._last_seq = rows[-1][0]

    def release(self, drained_seq: int) -> None:
        """DuckDB holds every row up to ``drained_seq``: delete the segments it covers (and
        seal the open one, if it is covered and big enough to be worth starting anew)."""
        if (
            self._path is not None
            and self._last_seq <= drained_seq
            and self._size >= self.segment_bytes
        ):
            self._close()
        done = [p for p, last in self._sealed.items() if last <= drained_seq]
        for path in done:
            path.unlink(missing_ok=True)
            del self._sealed[path]

    def close(self) -> None:
        self._close()

    def _open(self) -> None:
        self._close()
        numbers = [n for n in map(_number, self.segments()) if n is not None]
        if self._fence is not None:
            self._open_fenced(max(numbers, default=0) + 1, self._fence)
            return
        self._path = self.dir / f"{max(numbers, default=0) + 1:012d}{SUFFIX}"
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
        self._size = os.fstat(self._fd).st_size
        sync_dir(self.dir)  # the new file's name must survive a crash too

    def _open_fenced(self, number: int, fence: Fence) -> None:
        """A new segment of this writer's own (its epoch in the name, made exclusively), used
        only if the fence still holds once its name is durable: a segment made after a newer
        writer started gets no frame (it stays, empty, until the next recovery deletes it:
        removing it by name could remove a file of another writer's)."""
        while True:
            path = self.dir / f"{number:012d}-{fence.epoch}{SUFFIX}"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, FILE_MODE)
            except FileExistsError:
                number += 1
                continue
            break
        try:
            sync_dir(self.dir)
            fence.check()
        except BaseException:
            os.close(fd)
            raise
        self._fd, self._path, self._size = fd, path, 0

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            assert self._path is not None
            self._sealed[self._path] = self._last_seq
        self._fd = None
        self._path = None
        self._size = 0


def _number(path: Path) -> int | None:
    """A segment's number: ``<number>.log``, or ``<number>-<epoch>.log`` of a fenced writer."""
    number = path.stem.split("-", 1)[0]
    return int(number) if number.isdigit() else None


def sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

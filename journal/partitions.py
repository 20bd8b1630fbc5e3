"""Partitions: how a runtime's keys split over several journals, each with its own directory
and actors (``Runtime.start(..., partitions=N)``).

One partition keeps today's names and layout: actors ``journal`` and ``scheduler``, the journal
files in the data dir itself. With N > 1, partition ``p`` has actors ``journal:<p>`` and
``scheduler:<p>`` and the directory ``<data_dir>/partition-<p>/``, and the count is written in
``<data_dir>/partitions`` when the data dir is made: starting it with another count is an error.

An invocation id names its partition (``inv_<p>_<hex>``; an id without one is in partition 0),
so a driver, a host or the CLI routes an id, an awakeable or a cancel without a lookup. This
module imports neither Ray nor DuckDB.
"""

from __future__ import annotations

import enum
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from journal.errors import DataDirError
from journal.private import DIR_MODE, FILE_MODE

PARTITIONS_FILE = "partitions"
JOURNAL_NAME = "journal"
SCHEDULER_NAME = "scheduler"
MAX_PARTITIONS = 256
_PLACED = re.compile(r"inv_([0-9]{1,3})_", re.ASCII)


class Placement(enum.StrEnum):
    """Where the partitions' actors run: all on the starting node, next to its local disk
    (``local``), or spread over the nodes, ``data_dir`` on storage every node mounts
    (``spread``; a lost node's partitions restart elsewhere, fenced by ``journal.fence``)."""

    LOCAL = "local"
    SPREAD = "spread"


@dataclass(frozen=True)
class Partitions:
    """The partition count of a runtime, and every name and route that follows from it."""

    count: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.count, int) or not 1 <= self.count <= MAX_PARTITIONS:
            raise ValueError(
                f"partitions must be an int from 1 to {MAX_PARTITIONS}, not {self.count!r}"
            )

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.count))

    def journal(self, p: int) -> str:
        """Partition ``p``'s journal actor's name."""
        return JOURNAL_NAME if self.count == 1 else f"{JOURNAL_NAME}:{p}"

    def scheduler(self, p: int) -> str:
        """Partition ``p``'s scheduler actor's name."""
        return SCHEDULER_NAME if self.count == 1 else f"{SCHEDULER_NAME}:{p}"

    def directory(self, data_dir: str | os.PathLike[str], p: int) -> str:
        """Partition ``p``'s journal directory."""
        root = os.fspath(data_dir)
        return root if self.count == 1 else os.path.join(root, f"partition-{p}")

    def of_id(self, invocation_id: str) -> int:
        """The partition an invocation id names (0 for an id that names none)."""
        return 0 if self.count == 1 else partition_of_id(invocation_id) % self.count

    def of_hash(self, key_hash: int) -> int:
        """The partition of a key, from its stable hash (``route_hash``)."""
        return key_hash % self.count

    def within(self, key_hash: int) -> int:
        """The part of a key's hash left to pick a host inside its partition (independent of
        the partition, so each partition's hosts share its keys evenly)."""
        return key_hash // self.count

    def place(self, invocation_id: str, p: int) -> str:
        """``invocation_id`` in partition ``p``: ``inv_<p>_<hex>`` (the id as it is with one
        partition). Placing a placed id again gives the same id."""
        if self.count == 1:
            return invocation_id
        bare = _PLACED.sub("", invocation_id, count=1).removeprefix("inv_")
        return f"inv_{p}_{bare}"

    def of_key(self, service: str, key: str) -> int:
        """The partition of an object's or workflow's key (the hash ``route_hash`` uses)."""
        return key_hash(service, key) % self.count

    def locate(self, service: str, key: str | None, invocation_id: str) -> str:
        """``invocation_id`` placed in its partition: a key's, or for a keyless call the one
        its id's digest picks (the same in every process and on every replay)."""
        if self.count == 1:
            return invocation_id
        p = self.of_key(service, key) if key is not None else self.of_digest(invocation_id)
        return self.place(invocation_id, p)

    def crowding(self, placement: Placement, cpus: float) -> str | None:
        """A warning when local partitions outnumber the ``cpus`` of the node they share: each
        partition's journal is a process of its own, and past the cores they cost throughput
        instead of adding it (docs/partitions.md); None when they fit."""
        if placement is not Placement.LOCAL or self.count == 1 or not self.count > cpus > 0:
            return None
        return (
            f"{self.count} local partitions on a node with {cpus:g} CPUs: each partition's "
            "journal is a process of its own, and past the node's cores they cost throughput "
            "rather than add it; use at most one partition per few cores, or spread them "
            "(docs/partitions.md)"
        )

    def of_digest(self, invocation_id: str) -> int:
        """The partition of a keyless invocation: from its id's random or derived digest."""
        bare = _PLACED.sub("", invocation_id, count=1).removeprefix("inv_")
        return zlib.crc32(bare.encode()) % self.count


def key_hash(service: str, key: str) -> int:
    """A key's stable hash, the same in every process (``actors.cluster.names.route_hash``)."""
    return zlib.crc32(f"{service}/{key}".encode())


def partition_of_id(invocation_id: str) -> int:
    match = _PLACED.match(invocation_id)
    return int(match[1]) if match else 0


def stored_count(data_dir: str | os.PathLike[str]) -> int | None:
    """The partition count a data dir was made with (None: a new, empty data dir). A data dir
    of a version before partitions, or of one partition, has no marker but a journal: 1."""
    root = Path(data_dir)
    marker = root / PARTITIONS_FILE
    if marker.is_file():
        text = marker.read_text().strip()
        if not text.isdigit():
            raise DataDirError(f"{marker} is damaged: {text[:40]!r} is not a partition count")
        return int(text)
    if root.is_dir() and any(root.iterdir()):
        return 1 if (root / "journal.duckdb").exists() or (root / "wal").exists() else None
    return None


def claim(data_dir: str | os.PathLike[str], partitions: Partitions) -> None:
    """Make sure ``data_dir`` is (or now becomes) a data dir of ``partitions.count``
    partitions; ``DataDirError`` naming the stored count otherwise. A data dir of one
    partition has no marker (as before partitions): its journal files say what it is."""
    root = Path(data_dir)
    found = stored_count(root)
    if found is not None and found != partitions.count:
        raise DataDirError(
            f"{root} was made with partitions={found}; start it with partitions={found} "
            f"(the count of a data dir is fixed when it is made, not {partitions.count})"
        )
    if found is None and partitions.count > 1:  # one partition needs no marker
        try:
            root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            tmp = root / f".{PARTITIONS_FILE}.{os.getpid()}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
            with os.fdopen(fd, "w") as f:
                f.write(f"{partitions.count}\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, root / PARTITIONS_FILE)
        except OSError as e:
            raise DataDirError(f"cannot create data dir {root}: {e}") from None


def directories(data_dir: str | os.PathLike[str]) -> list[Path]:
    """The journal directories of an existing data dir, partition 0 first."""
    count = stored_count(data_dir) or 1
    layout = Partitions(count)
    return [Path(layout.directory(data_dir, p)) for p in layout]

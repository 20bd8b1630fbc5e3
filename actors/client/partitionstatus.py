"""``raystate partitions``: one row per journal partition of a runtime, saying where its journal
runs and how many invocations it holds. Live, each journal actor is asked (after a lost node,
this shows where its partitions came back); with ``--db``, the stopped data dir's partitions
are read (no node, no process; a spread partition's last epoch from its directory)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from actors.client.partsql import answer
from journal.fence import stored_epoch
from journal.partitions import Partitions, directories

COUNTS = (
    "SELECT count(*) AS invocations,"
    " count(*) FILTER (WHERE status <> 'completed') AS unfinished FROM sys_invocation"
)


@dataclass(frozen=True)
class PartitionStatus:
    """A partition, its journal, and what it holds."""

    partition: int
    journal: str  # the journal actor's name
    node: str | None  # the IP address of the node its journal runs on (live only)
    pid: int | None  # its journal's process (live only)
    epoch: int | None  # of a spread partition's writer (None: a local one, not fenced)
    invocations: int
    unfinished: int
    directory: str
    node_id: str | None = None  # Ray's id of that node (live only)


def to_table(rows: Sequence[PartitionStatus]) -> pa.Table:
    return pa.Table.from_pylist([asdict(r) for r in rows])


def live(handles: Sequence[Any]) -> list[PartitionStatus]:
    """Ask each journal actor (partition 0 first): all partitions at once."""
    import ray

    layout = Partitions(len(handles))
    infos = ray.get([h.info.remote() for h in handles])
    nodes = ray.get([h.__ray_call__.remote(_node_id) for h in handles])
    counts = [answer(r) for r in ray.get([h.sql_or_error.remote(COUNTS) for h in handles])]
    addresses = {n["NodeID"]: n.get("NodeManagerAddress") for n in ray.nodes()}
    return [
        PartitionStatus(
            p,
            layout.journal(p),
            addresses.get(node),
            info["pid"],
            info["epoch"],
            *_counts(count),
            info["data_dir"],
            node,
        )
        for p, (info, node, count) in enumerate(zip(infos, nodes, counts, strict=True))
    ]


def offline(
    data_dir: str | Path, read: Callable[[Sequence[tuple[int, str]]], Sequence[pa.Table]]
) -> list[PartitionStatus]:
    """The partitions of a stopped data dir, counted with ``read`` (partition, query)."""
    paths = directories(data_dir)
    layout = Partitions(len(paths))
    counts = read([(p, COUNTS) for p in layout])
    return [
        PartitionStatus(
            p, layout.journal(p), None, None, stored_epoch(path) or None, *_counts(count), str(path)
        )
        for p, (path, count) in enumerate(zip(paths, counts, strict=True))
    ]


def _counts(table: pa.Table) -> tuple[int, int]:
    row = table.to_pylist()[0]
    return int(row["invocations"]), int(row["unfinished"])


def _node_id(_actor: Any) -> str:
    import ray

    return str(ray.get_runtime_context().get_node_id())

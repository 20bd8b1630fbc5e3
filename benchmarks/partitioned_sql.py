"""What a query over a partitioned journal costs (``journal.federated``), without Ray.

    python -m benchmarks.partitioned_sql [--invocations N] [--partitions P] [--repeat R]

Fills P journals (``JournalStore``, one per partition, default 4) with N invocations in all
(default 200,000: Accept, two entries, a state write, the output; keyed ones in their key's
partition, ids naming it), and one journal with the same N, then times each query on the one
journal and federated over the P (reads of the partitions on P threads, as P journal actors
answer at once), with the Arrow bytes that crossed from the partitions and how many reads it
took. Over Ray the bytes also cross a process boundary (about 1 GB/s on one node). The
machine is shared and noisy: compare medians.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from actors.client.cli import invocations_count_query, invocations_query

T0 = 1_700_000_000_000
KEYS = 10_000

QUERIES = [
    ("count", "SELECT count(*) FROM sys_invocation"),
    ("by status", "SELECT status, count(*) FROM sys_invocation GROUP BY 1"),
    ("raystate invocations", invocations_query()),  # and, when the page is full:
    ("its count", invocations_count_query()),
    ("one status", "SELECT id, target FROM sys_invocation WHERE status = 'running'"),
    ("one id", "SELECT * FROM sys_invocation WHERE id = '{id}'"),
    ("one key", "SELECT * FROM state WHERE service_name = 'Counter' AND service_key = 'k42'"),
    (
        "entries per service",
        "SELECT i.target_service_name, count(*) FROM sys_invocation i"
        " JOIN sys_journal j ON j.invocation_id = i.id GROUP BY 1",
    ),
    ("every column", "SELECT * FROM sys_invocation ORDER BY created_at DESC LIMIT 50"),
]


def _batches(n: int, layout: Any) -> dict[int, list[Any]]:
    from journal.records import Accept, Batch, Entry, Output, StateWrite

    out: dict[int, list[Any]] = {p: [] for p in layout}
    for i in range(n):
        key = f"k{i % KEYS}"
        p = layout.of_key("Counter", key)
        inv = layout.place(f"inv_{i:08x}", p)
        at = T0 + i
        records = [
            Accept(inv, "Counter", "add", key, 0, '{"delta": 5}', created_at_ms=at, host_order=i),
            Entry(inv, 0, "get_state", "count", "5", created_at_ms=at),
            Entry(inv, 1, "set_state", "count", "10", created_at_ms=at),
            StateWrite("Counter", key, "count", str(i)),
        ]
        if i % 100:  # 1% left running
            records.append(Output(inv, True, "10", completed_at_ms=at + 1))
        out[p].append(Batch(f"b{i}", records))
    return out


def _fill(stores: list[Any], batches: list[list[Any]]) -> None:
    for store, mine in zip(stores, batches, strict=True):
        for at in range(0, len(mine), 2_000):
            store.write(mine[at : at + 2_000])
        store.sql("SELECT 1")  # drain the write-ahead log into DuckDB


def _median_ms(fn: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    from journal.federated import run
    from journal.partitions import Partitions
    from journal.sqlplan import plan
    from journal.store import JournalStore

    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--invocations", type=int, default=200_000)
    args.add_argument("--partitions", type=int, default=4)
    args.add_argument("--repeat", type=int, default=5)
    opts = args.parse_args(argv)
    layout = Partitions(opts.partitions)
    root = Path(tempfile.mkdtemp(prefix="partitioned-sql-"))
    pool = ThreadPoolExecutor(layout.count)
    try:
        parts = [JournalStore(root / f"partition-{p}") for p in layout]
        whole = JournalStore(root / "whole")
        by_partition = _batches(opts.invocations, layout)
        t = time.perf_counter()
        _fill(parts, [by_partition[p] for p in layout])
        _fill([whole], [[b for p in layout for b in by_partition[p]]])
        print(f"filled {opts.invocations} invocations twice in {time.perf_counter() - t:.0f} s")
        some_id = parts[1].sql("SELECT min(id) FROM sys_invocation").column(0)[0].as_py()
        print(f"{'query':22} {'one journal':>12} {'federated':>10} {'reads':>6} {'crossed':>10}")
        for name, query in QUERIES:
            query = query.replace("{id}", some_id)
            crossed: list[int] = []

            def read(requests: Any, crossed: list[int] = crossed) -> list[Any]:
                tables = list(pool.map(lambda r: parts[r[0]].sql(r[1]), requests))
                crossed.append(sum(t.nbytes for t in tables))
                return tables

            one = _median_ms(lambda q=query: whole.sql(q), opts.repeat)
            fed = _median_ms(lambda q=query: run(q, layout, read, timeout_s=None), opts.repeat)
            decided = plan(query, layout)
            reads = 1 if decided.partition is not None else len(decided.requests)
            size = sum(crossed) / max(len(crossed), 1)
            print(f"{name:22} {one:10.1f}ms {fed:8.1f}ms {reads:6} {size / 2**20:8.2f}MiB")
        for store in [*parts, whole]:
            store.close()
    finally:
        pool.shutdown()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

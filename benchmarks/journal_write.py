"""The journal's write path and recovery reads, without Ray.

    python -m benchmarks.journal_write [--prefill N] [--before DIR] [--json] [--quick]
    python -m benchmarks.journal_write --paths [--quick]

Prints median and p99 milliseconds per ``JournalStore.write`` (one write-ahead log frame and
one ``fdatasync``; DuckDB gets the rows at the next drain, which the first read forces) for 1,
20 and 100 batches of a typical invocation (Accept, two entries, a state write, the output:
with the batch-id row six log rows per batch), first on a fresh data dir, then on one
pre-filled with ``--prefill`` invocations (default 200,000, 1% of them left unfinished); then
the recovery reads on the pre-filled dir: ``outcome``, ``accepted``, ``load_state``,
``pending`` of a pooled host's partition and of one dedicated key, ``pending_keys``, a few
queries of the SQL views, and a write of one re-sent batch (its de-duplication look-up).

``--before DIR`` also runs the same measurements on another copy of the ``journal`` package
(``DIR/journal``, e.g. the code before a change, copied aside) in a subprocess and prints both
side by side. ``--paths`` instead compares ways a drain could insert one group into DuckDB
(``benchmarks.insert_paths``: the appender with and without a transaction, an index, JSON-typed
columns or one column per field; Arrow; multi-row VALUES; unnest), each on a fresh table,
interleaved so machine noise hits all alike. The machine is shared and noisy: compare medians,
expect +-20%.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

T0 = 1_700_000_000_000
SERVICE = "Counter"
KEYS = 10_000
PARTITIONS = 4


def _invocation(n: int, *, finished: bool = True) -> list[Any]:
    from journal.kinds import EntryType
    from journal.records import Accept, Entry, Output, StateWrite

    inv = "inv_" + uuid.uuid4().hex
    key = f"k{n % KEYS}"
    at = T0 + n
    records: list[Any] = [
        Accept(
            inv,
            SERVICE,
            "add",
            key,
            zlib.crc32(key.encode()),
            '{"delta": 5}',
            created_at_ms=at,
            host_order=time.time_ns(),
        ),
        Entry(inv, 0, EntryType.GET_STATE, "count", str(n), created_at_ms=at + 1),
        Entry(inv, 1, EntryType.SET_STATE, "count", str(n + 5), created_at_ms=at + 2),
        StateWrite(SERVICE, key, "count", str(n + 5)),
    ]
    if finished:
        records.append(Output(inv, True, str(n + 5), completed_at_ms=at + 3))
    return records


class Batches:
    """Batch factory with host-like ids (a random prefix, then a counter)."""

    def __init__(self) -> None:
        self.prefix = uuid.uuid4().hex[:12]
        self.n = 0

    def make(self, count: int, *, unfinished_every: int = 0) -> list[Any]:
        from journal.records import Batch

        out = []
        for _ in range(count):
            self.n += 1
            finished = not unfinished_every or self.n % unfinished_every
            out.append(Batch(f"{self.prefix}:{self.n}", _invocation(self.n, finished=finished)))
        return out


def _stats(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    p99 = s[min(len(s) - 1, round(0.99 * (len(s) - 1)))]
    return {"median": round(statistics.median(s), 3), "p99": round(p99, 3), "n": len(s)}


def _timed(fn: Callable[[], object], iterations: int, warmup: int = 3) -> dict[str, float]:
    samples = []
    for i in range(warmup + iterations):
        t0 = time.perf_counter()
        fn()
        if i >= warmup:
            samples.append((time.perf_counter() - t0) * 1000)
    return _stats(samples)


def _writes(store: Any, factory: Batches, label: str, quick: bool) -> dict[str, Any]:
    plan = [(1, 300), (20, 100), (100, 40)]
    out = {}
    for per_call, iterations in plan:
        if quick:
            iterations = max(10, iterations // 5)
        pending = [factory.make(per_call) for _ in range(iterations + 3)]
        out[f"{label} write {per_call:3d} batch{'es' if per_call > 1 else '  '}"] = _timed(
            lambda pending=pending: store.write(pending.pop()), iterations
        )
    return out


def run(prefill: int, quick: bool) -> dict[str, Any]:
    import journal
    from journal.store import JournalStore

    results: dict[str, Any] = {"journal": str(Path(journal.__file__).parent)}
    root = Path(tempfile.mkdtemp(prefix="journal-bench-"))
    try:
        factory = Batches()
        store = JournalStore(root / "fresh")
        try:
            results |= _writes(store, factory, "fresh", quick)
        finally:
            store.close()

        t0 = time.perf_counter()
        store = JournalStore(root / "filled")
        try:
            chunk = 1000
            for _ in range(0, prefill, chunk):
                store.write(factory.make(chunk, unfinished_every=100))
            results["prefill seconds"] = round(time.perf_counter() - t0, 1)
            store.close()
            store = JournalStore(root / "filled")  # as after a restart: nothing cached
            results |= _lookups(store, factory, quick)
            results |= _writes(store, factory, f"{prefill // 1000}k", quick)
        finally:
            store.close()
        results["db MB"] = round((root / "filled" / "journal.duckdb").stat().st_size / 2**20, 1)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return results


def _lookups(store: Any, factory: Batches, quick: bool) -> dict[str, Any]:
    from journal.records import Batch

    ids = store.sql("SELECT id FROM sys_invocation USING SAMPLE 200 ROWS").column("id").to_pylist()
    n = 20 if quick else 100
    few = 5 if quick else 20
    out: dict[str, Any] = {}
    it = iter(ids * 10)
    out["outcome()"] = _timed(lambda: store.outcome(next(it)), n)
    it2 = iter(ids * 10)
    out["accepted()"] = _timed(lambda: store.accepted(next(it2)), n)
    keys = iter([f"k{i}" for i in range(0, KEYS, 7)])
    out["load_state()"] = _timed(lambda: store.load_state(SERVICE, next(keys)), n)
    parts = iter(range(10**6))
    pooled = _timed(
        lambda: store.pending([SERVICE], partition=(next(parts) % PARTITIONS, PARTITIONS)), few
    )
    out[f"pending() pooled 1/{PARTITIONS}"] = pooled
    out["  (invocations returned)"] = len(store.pending([SERVICE], partition=(0, PARTITIONS)))
    keys2 = iter([f"k{i}" for i in range(0, KEYS, 3)])
    out["pending() one key"] = _timed(lambda: store.pending([SERVICE], key=next(keys2)), n)
    out["pending_keys()"] = _timed(lambda: store.pending_keys(SERVICE), few)
    it3 = iter(ids * 10)
    out["sql: sys_invocation by id"] = _timed(
        lambda: store.sql(f"SELECT * FROM sys_invocation WHERE id = '{next(it3)}'"), few
    )
    it4 = iter(ids * 10)
    out["sql: sys_journal by id"] = _timed(
        lambda: store.sql(f"SELECT * FROM sys_journal WHERE invocation_id = '{next(it4)}'"), few
    )
    out["sql: state of one key"] = _timed(
        lambda: store.sql(
            f"SELECT * FROM state WHERE service_name = '{SERVICE}' AND service_key = 'k1'"
        ),
        few,
    )
    out["sql: count by status"] = _timed(
        lambda: store.sql("SELECT status, count(*) FROM sys_invocation GROUP BY 1"), few
    )
    done = factory.make(1)
    store.write(done)
    resent = [Batch(b.batch_id, b.records, resent=True) for b in done]
    assert store.write(resent) == [], "a re-sent batch must not be written again"
    fresh = iter(range(10**6))

    def resend_new() -> None:  # a re-sent batch that is not there yet: the look-up, then write
        batch = factory.make(1)[0]
        batch.resent = True
        store.write([batch])
        next(fresh)

    out["write 1 re-sent batch"] = _timed(resend_new, n)
    return out


def _table(columns: dict[str, dict[str, Any]]) -> str:
    names = list(columns)
    rows = list(dict.fromkeys(k for c in columns.values() for k in c if k != "journal"))
    width = max(len(r) for r in rows) + 2
    lines = [
        "".ljust(width) + "".join(f"{n:>24s}" for n in names),
        "".ljust(width) + "".join(f"{'median / p99 ms':>24s}" for _ in names),
    ]
    for r in rows:
        cells = []
        for n in names:
            v = columns[n].get(r)
            if isinstance(v, dict):
                cells.append(f"{v['median']:>11.2f} / {v['p99']:<9.2f}")
            else:
                cells.append(f"{'' if v is None else v!s:>24s}")
        lines.append(r.ljust(width) + "".join(cells))
    for n in names:
        lines.append(f"{n}: journal package at {columns[n].get('journal')}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.journal_write", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument(
        "--prefill",
        type=int,
        default=200_000,
        help="invocations in the pre-filled data dir (default 200000)",
    )
    parser.add_argument(
        "--before",
        metavar="DIR",
        help="also run DIR/journal (another copy of the package) and compare",
    )
    parser.add_argument("--journal-path", metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument(
        "--paths",
        action="store_true",
        help="compare ways of inserting a group commit (appender, Arrow, ...)",
    )
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.journal_path:  # the subprocess of --before: import that copy of the package
        sys.path.insert(0, args.journal_path)
    if args.paths:
        from benchmarks.insert_paths import insert_paths, paths_table

        paths = insert_paths(args.quick)
        print(json.dumps(paths) if args.json else paths_table(paths))
        return
    columns: dict[str, dict[str, Any]] = {}
    if args.before:
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.journal_write",
            "--json",
            "--journal-path",
            os.path.abspath(args.before),
            "--prefill",
            str(args.prefill),
        ]
        if args.quick:
            cmd.append("--quick")
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join(
                [os.path.abspath(args.before), os.getcwd(), os.environ.get("PYTHONPATH", "")]
            ),
        )
        done = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
        columns["before"] = json.loads(done.stdout)
    columns["after" if args.before else "this journal"] = run(args.prefill, args.quick)
    if args.json:
        print(
            json.dumps(next(reversed(columns.values())))
            if len(columns) == 1
            else json.dumps(columns)
        )
    else:
        print(_table(columns))


if __name__ == "__main__":
    main()

"""Journal file size with retention on and off, straight against ``JournalStore`` (no Ray).

    python -m benchmarks.retention [--invocations 100000] [--retention 2] [--keys 1000]
                                   [--hosts 4] [--per-batch 25] [--rate 0] [--every 10000]
                                   [--only on|off] [--json]

Writes ``--invocations`` short counter invocations the way hosts and the journal actor do: a
group commit (one ``JournalStore.write``) holds ``--hosts`` host batches of ``--per-batch``
invocations each, and an invocation is the six log rows a counter ``add`` leaves (Accept, a
get_state and a set_state entry, the StateWrite on one of ``--keys`` keys, the Output, and its
share of the batch-id row). ``--rate`` caps invocations per second (0: as fast as it goes).

Retention *on* prunes the way the journal actor does: a thread calls ``JournalStore.prune``
every ``prune_period(retention)`` (2 s at least) beside the writing thread, with a tiny
``--retention`` so pruning really happens during the run. Retention *off* never prunes (the
behaviour before retention). Batch ids are kept an hour whatever the retention (see
``journal.retention``), so they are the one thing that still grows within a run.

Every ``--every`` invocations it prints the size of ``journal.duckdb`` (and its WAL), bytes per
invocation written so far, log rows, and write throughput and latency over the interval; at the
end, after a last CHECKPOINT (and for retention on, after waiting out the retention and pruning
once more), the same totals and a summary of the prunes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
import uuid
import zlib
from pathlib import Path
from typing import Any

from journal.clock import now_ms
from journal.kinds import EntryType
from journal.records import Accept, Batch, Entry, Output, StateWrite
from journal.retention import prune_period
from journal.store import DB_FILE, JournalStore

SERVICE = "Counter"


def invocation(n: int, keys: int) -> list[Any]:
    inv = "inv_" + uuid.uuid4().hex
    key = f"k{n % keys}"
    at = now_ms()
    return [
        Accept(
            inv,
            SERVICE,
            "add",
            key,
            zlib.crc32(key.encode()),
            "1",
            created_at_ms=at,
            host_order=time.time_ns(),
        ),
        Entry(inv, 0, EntryType.GET_STATE, "count", str(n // keys), created_at_ms=at),
        Entry(inv, 1, EntryType.SET_STATE, "count", str(n // keys + 1), created_at_ms=at),
        StateWrite(SERVICE, key, "count", str(n // keys + 1)),
        Output(inv, True, str(n // keys + 1), completed_at_ms=at),
    ]


def sizes(data_dir: Path) -> tuple[int, int]:
    db = data_dir / DB_FILE
    wal = data_dir / (DB_FILE + ".wal")
    return (db.stat().st_size if db.exists() else 0, wal.stat().st_size if wal.exists() else 0)


def _ms(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return round(s[min(len(s) - 1, round(q * (len(s) - 1)))] * 1000, 1) if s else 0.0


class Pruner(threading.Thread):
    """What the journal actor's prune loop does, in a thread beside the writer."""

    def __init__(self, store: JournalStore, retention_s: float) -> None:
        super().__init__(daemon=True)
        self.store, self.retention_s = store, retention_s
        self.stop = threading.Event()
        self.stats: list[Any] = []

    def run(self) -> None:
        while not self.stop.wait(prune_period(self.retention_s)):
            self.stats.append(self.store.prune(round(self.retention_s * 1000)))


def run_mode(mode: str, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    data_dir = root / mode
    store = JournalStore(data_dir)
    pruner = Pruner(store, args.retention) if mode == "on" else None
    if pruner:
        pruner.start()
    per_write = args.hosts * args.per_batch
    prefix = uuid.uuid4().hex[:12]
    batch_no = 0
    written = 0
    interval_lat: list[float] = []
    interval_t0 = started = time.perf_counter()
    interval_n = 0
    report: list[dict[str, Any]] = []
    print(
        f"\n== retention {mode}"
        + (
            f" ({args.retention:g} s; prune every {prune_period(args.retention):g} s)"
            if pruner
            else ""
        )
    )
    print(
        f"{'invocations':>11} {'db bytes':>12} {'wal bytes':>11} {'bytes/inv':>9} "
        f"{'log rows':>9} {'inv/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}"
    )
    try:
        while written < args.invocations:
            n = min(per_write, args.invocations - written)
            batches = []
            for h in range(args.hosts):
                records: list[Any] = []
                for i in range(h * args.per_batch, min((h + 1) * args.per_batch, n)):
                    records += invocation(written + i, args.keys)
                if records:
                    batch_no += 1
                    batches.append(Batch(f"{prefix}:{batch_no}", records))
            t = time.perf_counter()
            store.write(batches)
            interval_lat.append(time.perf_counter() - t)
            written += n
            interval_n += n
            if args.rate:
                ahead = written / args.rate - (time.perf_counter() - started)
                if ahead > 0:
                    time.sleep(ahead)
            if written % args.every < per_write or written == args.invocations:
                now = time.perf_counter()
                store.drain()  # the rows still in the write-ahead log, into DuckDB first
                db, wal = sizes(data_dir)
                rows = store.sql("SELECT count(*) AS n FROM log").to_pylist()[0]["n"]
                line = {
                    "invocations": written,
                    "db_bytes": db,
                    "wal_bytes": wal,
                    "bytes_per_inv": round((db + wal) / written, 1),
                    "log_rows": rows,
                    "inv_per_s": round(interval_n / (now - interval_t0)),
                    "write_p50_ms": _ms(interval_lat, 0.5),
                    "write_p99_ms": _ms(interval_lat, 0.99),
                    "write_max_ms": _ms(interval_lat, 1.0),
                }
                report.append(line)
                print(
                    f"{written:>11,} {db:>12,} {wal:>11,} {line['bytes_per_inv']:>9} "
                    f"{rows:>9,} {line['inv_per_s']:>7} {line['write_p50_ms']:>7} "
                    f"{line['write_p99_ms']:>7} {line['write_max_ms']:>7}"
                )
                interval_lat, interval_t0, interval_n = [], now, 0
        elapsed = time.perf_counter() - started
        if pruner:  # wait out the retention, prune what is left to prune, then stop
            store.mark()
            time.sleep(args.retention + 0.5)
            pruner.stop.set()
            pruner.join()
            pruner.stats.append(store.prune(round(args.retention * 1000)))
        store.drain()
        store._con.execute("CHECKPOINT")
        db, wal = sizes(data_dir)
        kinds = dict(
            store._con.execute("SELECT kind, count(*) FROM log GROUP BY 1 ORDER BY 1").fetchall()
        )
        live = store.sql("SELECT count(*) AS n, sum(value::BIGINT) AS total FROM state")
        state = live.to_pylist()[0]
    finally:
        if pruner:
            pruner.stop.set()
        store.close()
    final = {
        "mode": mode,
        "invocations": written,
        "seconds": round(elapsed, 1),
        "inv_per_s": round(written / elapsed),
        "db_bytes_final": db,
        "wal_bytes_final": wal,
        "bytes_per_inv_final": round((db + wal) / written, 1),
        "rows_by_kind": kinds,
        "state_entries": state["n"],
        "state_sum_ok": state["total"] == args.invocations,
        "intervals": report,
    }
    print(
        f"end (after CHECKPOINT): {db:,} bytes (WAL {wal:,}), "
        f"{final['bytes_per_inv_final']} bytes/invocation; "
        f"{final['inv_per_s']} invocations/s over {elapsed:.1f} s; rows left: {kinds}; "
        f"state: {state['n']} entries, counts add up: {final['state_sum_ok']}"
    )
    if pruner and pruner.stats:
        ps = pruner.stats
        busy = [p for p in ps if p.rows]
        final["prunes"] = {
            "count": len(ps),
            "deleting": len(busy),
            "invocations": sum(p.invocations for p in ps),
            "rows": sum(p.rows for p in ps),
            "chunks": sum(p.chunks for p in ps),
            "seconds_total": round(sum(p.seconds for p in ps), 2),
            "select_seconds": round(sum(p.select_seconds for p in ps), 2),
            "delete_seconds": round(sum(p.delete_seconds for p in ps), 2),
            "checkpoint_seconds": round(sum(p.checkpoint_seconds for p in ps), 2),
            "seconds_median": round(statistics.median(p.seconds for p in busy), 3) if busy else 0,
            "seconds_max": round(max(p.seconds for p in ps), 3),
            "idle_seconds_median": round(
                statistics.median([p.seconds for p in ps if not p.rows] or [0]), 3
            ),
            "checkpointed": sum(p.checkpointed for p in ps),
        }
        print(f"prunes: {final['prunes']}")
    return final


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--invocations", type=int, default=100_000)
    ap.add_argument("--retention", type=float, default=2.0, help="seconds (retention on)")
    ap.add_argument("--keys", type=int, default=1_000)
    ap.add_argument("--hosts", type=int, default=4, help="host batches per group commit")
    ap.add_argument("--per-batch", type=int, default=25, help="invocations per host batch")
    ap.add_argument("--rate", type=float, default=0, help="invocations/s cap (0: none)")
    ap.add_argument("--every", type=int, default=10_000, help="report interval")
    ap.add_argument("--only", choices=["on", "off"])
    ap.add_argument("--dir", help="where to put the data dirs (default: a temp dir)")
    ap.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = ap.parse_args()
    root = Path(args.dir or tempfile.mkdtemp(prefix="retention-bench-"))
    try:
        results = [
            run_mode(m, args, root) for m in (["off", "on"] if not args.only else [args.only])
        ]
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps(results))
    import duckdb

    print(f"\n{os.cpu_count()} CPUs, duckdb {duckdb.__version__}")


if __name__ == "__main__":
    main()

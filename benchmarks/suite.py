"""Throughput, latency and resources of raystate, driven from a separate client process.

    python -m benchmarks [--workloads hot,keys1k,keys100k,three_step,timers,food]
                         [--concurrency 1,16,64] [--seconds 5] [--warmup 1]
                         [--json [PATH]] [--jsonl] [--timers 10000] [--timers-budget 60]
                         [--restate] [--partitions 1,2,4 [--rounds 2]
                         [--pool-per-partition | --split-pool]]

This command starts a private local Ray and the runtime (data dir in a temporary directory);
for each workload at each client concurrency (a "cell") it starts a load-driver process
(``benchmarks.driver``) that connects with ``Runtime.connect(namespace, address)`` and runs
closed-loop ``call_async`` clients, as Restate's figures were taken with the client in a
separate process. Workloads (``benchmarks.workloads``):

  hot         counter ``add`` on one key (a key's exclusive handlers run one at a time)
  keys1k      counter ``add`` round-robin over 1,000 keys, each read once before the window
              (steady state: the keys' state is in their hosts' memory)
  keys100k    counter ``add`` cycling over 100,000 keys: within a run every call is a key's
              first, so it loads that key's state (the notes say how many keys were touched)
  three_step  a service handler with three ``ctx.run`` steps
  timers      up to ``--timers`` invocations asleep at once (``benchmarks.timers``): inv/s and
              latency are the sends'; the notes give timer lateness and host memory per sleeper
  food        the seed's food-order flow (``benchmarks.food``: a charge, a 10 ms sleep, an
              awakeable resolved by a restaurant service, an awaited delivery call);
              skipped, with a note, where awakeables or awaited calls are missing

Each cell has fresh keys, a warm-up, a measured window and a check (every key's counter equals
its acknowledged adds, and each add returned the next count; every three-step call returned
its value and completed; every timer fired, none early; every order was delivered). Over the
window the benchmark command samples CPU seconds and RSS per process kind (journal, scheduler,
hosts, driver, ray = GCS, raylet and Ray's other processes) and the journal file's growth per
invocation. Prints two tables (with Restate 1.7.12's figures and our ratio to them) and, with
``--jsonl`` or ``--json``, one JSON object per cell: ``--json`` alone prints them after the
tables, ``--json PATH`` writes them to PATH, ``--jsonl`` prints only JSON lines on stdout (the
tables go to stderr).

With ``--restate`` the real Restate runs the same workloads at the same concurrencies first
(``benchmarks.restate_peer``: hot, keys1k, three_step, food), before Ray and the runtime start,
so the two never share the machine; the report then compares with those figures, measured in
this run on this machine, instead of the published ones, and prints the peer's table and JSON
lines (``"system": "restate-1.7.12"``) too.

With ``--partitions 1,2,4`` every cell runs at each partition count (``Runtime.start(...,
partitions=N)``), Ray and the runtime started anew on a fresh data dir for each count; with
``--rounds 2`` the counts run again in reverse order (1,2,4 then 4,2,1), so that a drift of the
machine falls on every count alike. The tables then have a column P (and the round), each JSON
line says its ``partitions``, ``round``, each journal's CPU (``cpu_s_journals``) and how many
host processes ran, and a comparison table follows (``benchmarks.compare``): per workload and
concurrency, inv/s and p50/p99 at each count with the ratio to the smallest, CPU ms per
invocation by process kind (the journal's also divided by the partitions), and the scaling model
that the journal's CPU per invocation gives. Every partition has its own pool of hosts, of
the size ``Runtime.start`` gives it (``--pool-size`` per service in each partition, or the
runtime's default); ``--pool-per-partition`` gives every partition the whole pool
(``--pool-size`` or one host per two CPUs), so 4 partitions run 4 times the hosts, and
``--split-pool`` divides it over the partitions (at least one host per service in each), so
every count runs about as many (the comparison table says how many host processes ran).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from typing import IO, Any

import duckdb
import ray

from actors import Runtime
from actors.client.tables import console
from actors.cluster.names import default_pool_size
from benchmarks import compare, report
from benchmarks.cell_runner import NAMESPACE, CellRunner
from benchmarks.restate_peer import baseline, bench, install
from benchmarks.restate_peer import table as peer_table
from benchmarks.workloads import WORKLOADS, Workload
from journal.partitions import MAX_PARTITIONS, directories

DEFAULT = ("hot", "keys1k", "keys100k", "three_step", "timers", "food")


def _names(text: str, parser: argparse.ArgumentParser) -> list[str]:
    aliases = {a: w.name for w in WORKLOADS.values() for a in (w.name, *w.aliases)}
    names: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if part == "all":
            names += DEFAULT
        elif part in aliases:
            names.append(aliases[part])
        elif part:
            parser.error(f"unknown workload {part!r} (known: {', '.join(WORKLOADS)}, all)")
    return list(dict.fromkeys(names))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[5:]),
    )
    parser.add_argument(
        "--workloads", help=f"comma-separated workloads (default: all of them, {','.join(DEFAULT)})"
    )
    parser.add_argument(
        "--workload",
        help="one workload, or all (older spelling; keys = keys1k, steps = three_step)",
    )
    parser.add_argument(
        "--concurrency",
        default="1,16,64",
        help="comma-separated client concurrencies (default 1,16,64)",
    )
    parser.add_argument(
        "--seconds", type=float, default=5.0, help="measured seconds per cell (default 5)"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=1.0,
        help="warm-up seconds per cell, not measured (default 1)",
    )
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="PATH",
        help="JSON lines, one per cell: to PATH, or after the tables",
    )
    parser.add_argument(
        "--jsonl",
        action="store_true",
        help="JSON lines on stdout as cells finish; the tables go to stderr",
    )
    parser.add_argument(
        "--timers",
        type=int,
        default=10_000,
        help="timers workload: invocations asleep at once (default 10000)",
    )
    parser.add_argument(
        "--timers-budget",
        type=float,
        default=60.0,
        help="timers workload: at most this many seconds of submitting per "
        "cell, fewer timers if it runs out (default 60)",
    )
    parser.add_argument(
        "--spread",
        type=float,
        default=5.0,
        help="timers workload: the timers are due within this many seconds",
    )
    parser.add_argument(
        "--pool-size",
        type=int,
        default=None,
        help="host actors per service (default: the runtime's own default)",
    )
    parser.add_argument(
        "--restate",
        action="store_true",
        help="run the real Restate on the same workloads first and compare "
        "with it (benchmarks.restate_peer) instead of the published figures",
    )
    parser.add_argument(
        "--partitions",
        default="1",
        help="comma-separated partition counts to compare, e.g. 1,2,4 (default 1)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the partition counts this many times, every other round in reverse order "
        "(default 1)",
    )
    pools = parser.add_mutually_exclusive_group()
    pools.add_argument(
        "--pool-per-partition",
        action="store_true",
        help="the whole host pool (--pool-size or one host per two CPUs) in every partition",
    )
    pools.add_argument(
        "--split-pool",
        action="store_true",
        help="the host pool divided over the partitions, at least one host per service in each",
    )
    args = parser.parse_args(argv)
    try:
        args.partitions = list(
            dict.fromkeys(int(n) for n in args.partitions.split(",") if n.strip())
        )
    except ValueError:
        parser.error(f"--partitions wants integers like 1,2,4, not {args.partitions!r}")
    if not args.partitions or not all(1 <= n <= MAX_PARTITIONS for n in args.partitions):
        parser.error(f"--partitions wants counts from 1 to {MAX_PARTITIONS}")
    if args.rounds < 1:
        parser.error("--rounds must be positive")
    args.comparing = args.partitions != [1] or args.rounds > 1
    if args.workloads and args.workload:
        parser.error("give --workloads or --workload, not both")
    args.names = _names(args.workloads or args.workload or "all", parser)
    try:
        args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    except ValueError:
        parser.error(f"--concurrency wants integers like 1,16,64, not {args.concurrency!r}")
    if not args.concurrency or min(args.concurrency) < 1:
        parser.error("--concurrency wants positive integers")
    if (
        args.seconds <= 0
        or args.warmup < 0
        or args.timers < 1
        or args.timers_budget <= 0
        or (args.pool_size is not None and args.pool_size < 1)
    ):
        parser.error(
            "--seconds, --timers, --timers-budget and --pool-size must be positive, "
            "--warmup not negative"
        )
    return args


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def settled_journal(data_dir: str) -> dict[str, Any]:
    """Checkpoint the journal files (every partition's) once the runtime is gone: their size
    per invocation."""
    invocations = rows = size = 0
    for directory in directories(data_dir):
        path = directory / "journal.duckdb"
        for _ in range(50):  # the journal process may still hold the lock for a moment
            try:
                con = duckdb.connect(str(path))
                break
            except duckdb.IOException:
                time.sleep(0.2)
        else:
            return {}
        try:
            con.execute("CHECKPOINT")
            invocations += con.execute("SELECT count(*) FROM sys_invocation").fetchall()[0][0]
            rows += con.execute("SELECT count(*) FROM log").fetchall()[0][0]
        finally:
            con.close()
        size += sum(f.stat().st_size for f in directory.glob("journal.duckdb*"))
    return {
        "journal_bytes": size,
        "invocations": invocations,
        "log_rows": rows,
        "bytes_per_invocation": round(size / invocations) if invocations else None,
    }


def pool_for(args: argparse.Namespace, count: int, cpus: float) -> int | None:
    """The ``pool_size`` (hosts per service in each partition) to start ``count`` partitions
    with: ``--pool-size`` as given (None: the runtime's default), unless ``--pool-per-partition``
    or ``--split-pool`` says how the whole pool goes to the partitions."""
    if not (args.pool_per_partition or args.split_pool):
        return args.pool_size
    whole = args.pool_size or default_pool_size(cpus)
    return max(whole // count, 1) if args.split_pool else whole


def run_runtime(
    args: argparse.Namespace,
    runnable: list[Workload],
    count: int,
    round_: int,
    emit: Callable[[dict[str, Any]], None],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Start a private Ray and the runtime with ``count`` partitions on a fresh data dir, run
    every cell, stop them; the cells' rows and the journal files' size afterwards."""
    services = list({id(s): s for w in runnable for s in w.services()}.values())
    began = time.monotonic()
    rows: list[dict[str, Any]] = []
    settled: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="raystate-bench-") as data_dir:
        ray.init(
            address="local",
            namespace=NAMESPACE,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
        )
        try:
            rt = Runtime.start(
                services,
                data_dir=data_dir,
                namespace=NAMESPACE,
                pool_size=pool_for(args, count, ray.cluster_resources().get("CPU", 1)),
                partitions=count,
            )
            # Pool hosts start on first use (1-2 s each here); start them all now, so that
            # every cell measures the steady state, not the creation of host processes.
            ray.get(
                [
                    rt.router.pooled(d, i, p).ready.remote()
                    for p in rt.partitions
                    for d in services
                    for i in range(rt.pool_size)
                ]
            )
            parts = (
                f", partitions {count} (round {round_ + 1}), host processes "
                f"{count * rt.pool_size * len(services)}"
                if args.comparing
                else ""
            )
            print(
                f"raystate benchmarks: {os.cpu_count()} CPUs, python "
                f"{platform.python_version()}, ray {ray.__version__}, duckdb "
                f"{duckdb.__version__}, host pool {rt.pool_size} per service{parts}; started in "
                f"{time.monotonic() - began:.1f}s; {args.warmup:g}s warm-up + "
                f"{args.seconds:g}s per cell; load average {_load()}",
                file=sys.stderr,
            )
            try:
                runner = CellRunner(
                    ray.get_runtime_context().gcs_address, data_dir, args, rt.partitions
                )
                for w in runnable:
                    for c in args.concurrency:
                        t0 = time.monotonic()
                        result, snaps = runner.run(w, c)
                        r = report.row(w, c, result, snaps)
                        if args.comparing:
                            r.update(
                                report.partition_fields(result, snaps, count, round_, args.rounds)
                            )
                        r["cell_s"] = round(time.monotonic() - t0, 1)
                        r["load_avg_1m"] = round(os.getloadavg()[0], 1)
                        rows.append(r)
                        emit(r)
                        print(
                            f"  {w.name} x{c}{f' P{count}' if args.comparing else ''}: "
                            f"{r['inv_per_s']} inv/s, p50 {r['p50_ms']}"
                            f" ms, p99 {r['p99_ms']} ms, {r['check']}",
                            file=sys.stderr,
                        )
            finally:
                rt.shutdown()
        finally:
            ray.shutdown()
        with contextlib.suppress(Exception):
            settled = settled_journal(data_dir)
    return rows, settled


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workloads = [WORKLOADS[n] for n in args.names]
    skipped = {w.name: why for w in workloads if (why := w.missing())}
    runnable = [w for w in workloads if w.name not in skipped]
    for name, why in skipped.items():
        print(f"{name}: {why}; skipped", file=sys.stderr)
    tables_to = sys.stderr if args.jsonl else sys.stdout
    json_file = open(args.json, "w") if args.json not in (None, "-") else None  # noqa: SIM115
    rows: list[dict[str, Any]] = [
        {"workload": n, "concurrency": None, "skipped": why} for n, why in skipped.items()
    ]

    def emit(r: dict[str, Any]) -> None:
        if args.jsonl:
            print(report.json_line(r), flush=True)
        if json_file is not None:
            json_file.write(report.json_line(r) + "\n")
            json_file.flush()

    for r in rows:
        emit(r)
    peer_rows: list[dict[str, Any]] = []
    if args.restate:  # before Ray starts: the two systems never run at the same time
        try:
            peer_rows = bench.run(
                [w.name for w in runnable], args.concurrency, args.seconds, args.warmup, emit=emit
            )
        except install.SetupError as e:
            print(f"--restate: {e}", file=sys.stderr)
            return 2
        runnable = baseline.measured(runnable, peer_rows)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # the driver processes connect
    began = time.monotonic()
    settled: list[tuple[int, int, dict[str, Any]]] = []
    if runnable:
        for round_, count in compare.run_order(args.partitions, args.rounds):
            run_rows, run_settled = run_runtime(args, runnable, count, round_, emit)
            rows += run_rows
            if run_settled:
                settled.append((count, round_, run_settled))
    measured = [r for r in rows if "skipped" not in r]
    title = (
        f"raystate benchmarks, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, "
        f"driver in a separate process; {time.monotonic() - began:.0f}s in all, load "
        f"average now {_load()}"
    )
    if peer_rows:
        peer_table.print_table(peer_rows, bench.title(), file=tables_to)
    report.print_tables(
        measured, title, file=tables_to, restate=baseline.LABEL if args.restate else report.RESTATE
    )
    for name, why in skipped.items():
        print(f"{name}: {why}", file=tables_to)
    for count, round_, s in settled:
        where = f"partitions={count}, round {round_ + 1}: " if args.comparing else ""
        print(
            f"{where}journal file after the run, checkpointed: {s['journal_bytes']:,} bytes "
            f"for {s['invocations']:,} invocations ({s['log_rows']:,} log rows),"
            f" {s['bytes_per_invocation']:,} bytes per invocation",
            file=tables_to,
        )
        which = {"partitions": count, "round": round_} if args.comparing else {}
        emit({"summary": "journal", **which, **s})
    if args.comparing:
        print_comparison(measured, args, tables_to)
    if args.json == "-":
        for r in [*peer_rows, *rows]:
            print(report.json_line(r))
    if json_file is not None:
        json_file.close()
    return 0 if all(r["check"] == "OK" for r in measured) else 1


def _pool_label(args: argparse.Namespace) -> str:
    if args.split_pool:
        return ", the host pool split over the partitions"
    return ", the whole host pool in every partition" if args.pool_per_partition else ""


def print_comparison(rows: list[dict[str, Any]], args: argparse.Namespace, file: IO[str]) -> None:
    """The partition counts compared, and the scaling model from the smallest count."""
    compared = compare.combine(rows)
    out = console(file)
    out.print(
        compare.table(
            compared,
            f"partitions {','.join(map(str, args.partitions))} compared, {args.rounds} "
            f"round(s){_pool_label(args)}",
        )
    )
    found = compare.models(compared)
    if found:
        cores = list(dict.fromkeys([os.cpu_count() or 1, 16, 64]))
        out.print(compare.model_table(found, cores, min(args.partitions)))

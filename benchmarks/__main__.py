"""Throughput and latency of raystate on a private, local Ray cluster.

    python -m benchmarks [--workload hot|keys|steps|all] [--concurrency 1,64] [--seconds S]
                         [--warmup S] [--json]

Workloads (each at each client concurrency, one ``rt.call_async`` per call):
  hot    Counter add on one key (exclusive handlers of a key run one at a time)
  keys   Counter add spread round-robin over 1,000 keys (at a few hundred calls/s most calls
         are a key's first in the cell, so they include loading its state from the journal)
  steps  a Service handler with three ``ctx.run`` steps

Each cell uses fresh keys. After a counter cell the counters' sum is read back with SQL from
the ``state`` view and must equal the number of acknowledged adds (OK/FAIL); a steps cell checks
every result. ``commits/s`` is the journal's DuckDB transactions per second in the window, so
``inv/s`` over ``commits/s`` shows how much group commit batches.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa
import ray

from actors import Runtime
from actors.routing import JOURNAL
from actors.tables import write
from benchmarks import apps
from benchmarks.runner import Samples, drive

NAMESPACE = "raystate-bench"
KEYS = 1_000
WORKLOADS = ("hot", "keys", "steps")


@dataclass
class Workload:
    call: Callable[[int], Awaitable[Any]]
    expect: Callable[[int], Any] | None = None
    counter_prefix: str | None = None  # the keys whose sum is checked afterwards


def workload(rt: Runtime, name: str, concurrency: int) -> Workload:
    prefix = f"{name}-c{concurrency}-"
    if name == "hot":
        return Workload(lambda n: rt.call_async(apps.add, key=prefix + "0", arg=1),
                        counter_prefix=prefix)
    if name == "keys":
        keys = [f"{prefix}{i}" for i in range(KEYS)]
        return Workload(lambda n: rt.call_async(apps.add, key=keys[n % KEYS], arg=1),
                        counter_prefix=prefix)
    if name == "steps":
        return Workload(lambda n: rt.call_async(apps.three_steps, arg=n),
                        expect=apps.three_steps_expected)
    raise ValueError(f"unknown workload {name!r}")


async def counted(rt: Runtime, prefix: str) -> int:
    table = await rt.sql_async(
        "SELECT coalesce(sum(value::BIGINT), 0)::BIGINT AS total FROM state"
        f" WHERE service_name = '{apps.counter.name}' AND starts_with(service_key, '{prefix}')")
    return table.column("total")[0].as_py()


async def run_cell(rt: Runtime, name: str, concurrency: int, warmup_s: float,
                   seconds: float) -> dict[str, Any]:
    w = workload(rt, name, concurrency)
    journal = ray.get_actor(JOURNAL, namespace=rt.namespace)
    commits: dict[str, int] = {}

    async def on_window(edge: str) -> None:
        commits[edge] = (await journal.info.remote())["transactions"]

    s: Samples = await drive(w.call, concurrency=concurrency, warmup_s=warmup_s,
                             seconds=seconds, expect=w.expect, on_window=on_window)
    problems = []
    if s.errors:
        problems.append(f"{s.errors} errors, first: {s.first_error}")
    if s.wrong:
        problems.append(f"{s.wrong} wrong results")
    if w.counter_prefix is not None:
        total = await counted(rt, w.counter_prefix)
        if total != s.ok:
            problems.append(f"counters sum to {total}, {s.ok} adds were acknowledged")
    return {
        "workload": name,
        "concurrency": concurrency,
        "calls": s.completed_in_window,
        "inv/s": round(s.per_s, 1),
        "p50 ms": round(s.percentile_ms(0.50), 2),
        "p90 ms": round(s.percentile_ms(0.90), 2),
        "p99 ms": round(s.percentile_ms(0.99), 2),
        "commits/s": round((commits["end"] - commits["start"]) / seconds, 1),
        "check": "FAIL: " + "; ".join(problems) if problems else "OK",
    }


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=[*WORKLOADS, "all"], default="all")
    parser.add_argument("--concurrency", default="1,64",
                        help="comma-separated client concurrencies (default 1,64)")
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="measured seconds per cell (default 5)")
    parser.add_argument("--warmup", type=float, default=1.0,
                        help="warm-up seconds per cell, not measured (default 1)")
    parser.add_argument("--json", action="store_true", help="also print the rows as JSON lines")
    args = parser.parse_args(argv)
    try:
        args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    except ValueError:
        parser.error(f"--concurrency wants integers like 1,64, not {args.concurrency!r}")
    if not args.concurrency or min(args.concurrency) < 1:
        parser.error("--concurrency wants positive integers")
    if args.seconds <= 0 or args.warmup < 0:
        parser.error("--seconds must be positive and --warmup not negative")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = list(WORKLOADS) if args.workload == "all" else [args.workload]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="raystate-bench-") as data_dir:
        began = time.monotonic()
        ray.init(address="local", namespace=NAMESPACE, include_dashboard=False,
                 log_to_driver=False, logging_level=logging.ERROR)
        try:
            rt = Runtime.start(apps.ALL, data_dir=data_dir, namespace=NAMESPACE)
            try:
                print(f"raystate benchmarks: {os.cpu_count()} CPUs, python "
                      f"{platform.python_version()}, ray {ray.__version__}, duckdb "
                      f"{duckdb.__version__}, host pool {rt.pool_size} per service; started in "
                      f"{time.monotonic() - began:.1f}s; {args.warmup:g}s warm-up + "
                      f"{args.seconds:g}s per cell; load average {_load()}", file=sys.stderr)
                for name in names:
                    for concurrency in args.concurrency:
                        row = asyncio.run(run_cell(rt, name, concurrency, args.warmup,
                                                   args.seconds))
                        print(f"  {name} x{concurrency}: {row['inv/s']} inv/s, "
                              f"p50 {row['p50 ms']} ms, {row['check']}", file=sys.stderr)
                        rows.append(row)
            finally:
                rt.shutdown()
        finally:
            ray.shutdown()
    write(pa.Table.from_pylist(rows), title=f"raystate benchmarks (load average now {_load()})")
    if args.json:
        for row in rows:
            print(json.dumps(row))
    return 0 if all(r["check"] == "OK" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

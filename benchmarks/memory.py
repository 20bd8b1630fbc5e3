"""Host memory over many keys: what idle-key eviction holds it to.

    python -m benchmarks.memory [--keys 100000] [--seconds 60] [--idle-timeout 5,300]

For each idle timeout: start a runtime whose counter object has that ``idle_timeout``, run
closed-loop ``add(1)`` calls cycling over ``--keys`` keys for ``--seconds`` (each key's first
call finds no state; after a key was evicted, its next call loads it from the journal), and
every ``--every`` seconds print the throughput of the last interval, the keys the hosts hold in
memory and the host actors' RSS. A short timeout holds only the keys of the last few seconds;
the default (5 minutes) holds every key of the run. The clients run in this process (memory is
what is measured here, not the client's cost). Check at the end: every key's stored count
equals its acknowledged adds, each add returned the next count.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import tempfile
import time
from datetime import timedelta
from typing import Any

import pyarrow as pa
import ray

from actors import Runtime, VirtualObject
from actors.client.tables import write
from benchmarks import apps
from benchmarks.runner import drive
from benchmarks.timers import rss_mb
from benchmarks.workloads import CounterLoad


async def sample(
    rt: Runtime,
    hosts: list[Any],
    pids: list[int],
    calls: list[int],
    every: float,
    started: float,
    rows: list[dict[str, Any]],
) -> None:
    """Append one row per ``every`` seconds: throughput since the last, keys held, RSS."""
    last_t, last_n = started, 0
    while True:
        await asyncio.sleep(every)
        stats = await asyncio.gather(*(h.ready.remote() for h in hosts))
        now, n = time.perf_counter(), calls[0]
        row = {
            "t_s": round(now - started),
            "calls": n,
            "inv_per_s": round((n - last_n) / (now - last_t)),
            "keys_in_memory": sum(s["keys"] for s in stats),
            "host_rss_mb": round(sum(rss_mb(p) for p in pids)),
        }
        rows.append(row)
        print("  " + ", ".join(f"{k} {v:,}" for k, v in row.items()), flush=True)
        last_t, last_n = now, n


async def load(
    rt: Runtime,
    counter_def: VirtualObject,
    keys: int,
    seconds: float,
    concurrency: int,
    every: float,
) -> dict[str, Any]:
    hosts = [rt.router.pooled(counter_def, i) for i in range(rt.pool_size)]  # started now
    pids: list[int] = await asyncio.gather(*(h.pid.remote() for h in hosts))
    counter = CounterLoad(rt, "m", lambda n: str(n % keys))
    calls = [0]

    async def call(n: int) -> int:
        result = await counter.call(n)
        calls[0] += 1
        return result

    rows: list[dict[str, Any]] = []
    sampler = asyncio.create_task(sample(rt, hosts, pids, calls, every, time.perf_counter(), rows))
    s = await drive(call, concurrency=concurrency, warmup_s=0, seconds=seconds)
    sampler.cancel()
    problems = await counter.check()
    if s.errors:
        problems.append(f"{s.errors} calls failed, first: {s.first_error}")
    second_half = rows[len(rows) // 2 :]
    return {
        "calls": s.ok,
        "inv_per_s": round(s.per_s),
        "p50_ms": round(s.percentile_ms(0.5), 2),
        "p99_ms": round(s.percentile_ms(0.99), 2),
        "keys_touched": len(counter.returned),
        "max_keys_in_memory": max((r["keys_in_memory"] for r in rows), default=0),
        "host_rss_mb_second_half": "-".join(
            str(f(r["host_rss_mb"] for r in second_half)) for f in (min, max)
        )
        if second_half
        else "",
        "check": "; ".join(problems) or "OK",
    }


def run(keys: int, seconds: float, idle: float, concurrency: int, every: float) -> dict:
    counter = dataclasses.replace(apps.counter, idle_timeout=timedelta(seconds=idle))
    counter.handlers.update(apps.counter.handlers)  # replace() starts a fresh registry
    rt = Runtime.start(
        [counter],
        data_dir=tempfile.mkdtemp(prefix="raystate-memory-"),
        namespace=f"bench-memory-{idle}",
    )
    try:
        print(
            f"idle_timeout {idle:g}s: {keys:,} keys, {concurrency} clients, {seconds:g}s",
            flush=True,
        )
        return {
            "idle_timeout_s": idle,
            **asyncio.run(load(rt, counter, keys, seconds, concurrency, every)),
        }
    finally:
        rt.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument(
        "--idle-timeout",
        default="5,300",
        help="comma-separated idle timeouts in seconds, one run each",
    )
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--every", type=float, default=5.0, help="seconds between samples")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    rows = [
        run(args.keys, args.seconds, float(s), args.concurrency, args.every)
        for s in args.idle_timeout.split(",")
    ]
    write(pa.Table.from_pylist(rows))
    ray.shutdown()


if __name__ == "__main__":
    main()

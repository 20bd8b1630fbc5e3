"""Timer lateness and the memory of sleeping invocations.

    python -m benchmarks.timers [--timers 1000,10000] [--spread 5] [--suspend-after 0,3600]

For each count N and eviction setting: send N invocations that each sleep until a random moment
in a window of ``spread`` seconds that opens after all N are submitted (a lead time estimated
from N), wait until all completed, then read from ``sys_timer`` how late each timer fired
(fired_at - fire_at) and report p50/p99/max; RSS of the host actors is read when all N are
sleeping. ``--suspend-after 0`` evicts every sleeping invocation from
memory (replayed from its journal when its timer fires); ``3600`` keeps them all in memory.
Checks: none early, none twice, all completed.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray

from actors import Runtime
from actors.client.tables import write
from benchmarks import apps


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def submit_until(
    rt: Runtime,
    n: int,
    due: Callable[[int], float],
    *,
    concurrency: int = 64,
    stop_at: float | None = None,
) -> list[float]:
    """Send up to ``n`` ``nap_until(due(i))`` invocations from ``concurrency`` clients, each
    sending its next when the last is durable; stop early once ``stop_at`` (epoch seconds) has
    passed. Returns the send latencies (seconds), one per invocation sent."""
    latencies: list[float] = []
    numbers = itertools.count()

    async def client() -> None:
        while (i := next(numbers)) < n and (stop_at is None or time.time() < stop_at):
            t0 = time.perf_counter()
            await rt.send_async(apps.nap_until, arg=due(i))
            latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies


async def submit(
    rt: Runtime, n: int, spread: float, opens_at: float, concurrency: int = 64
) -> None:
    rng = random.Random(n)
    await submit_until(rt, n, lambda _: opens_at + rng.random() * spread, concurrency=concurrency)


def _since(since_ms: int) -> str:
    return (
        f"SELECT id FROM sys_invocation WHERE target_service_name = '{apps.sleepy.name}'"
        f" AND epoch_ms(created_at) >= {int(since_ms)}"
    )


async def completed(rt: Runtime, since_ms: int = 0) -> int:
    """How many ``BenchSleepy`` invocations created since ``since_ms`` have completed."""
    table = await rt.sql_async(
        "SELECT count(*) AS n FROM sys_invocation WHERE status = 'completed'"
        f" AND id IN ({_since(since_ms)})"
    )
    return int(table.column("n")[0].as_py())


async def lateness(rt: Runtime, since_ms: int = 0) -> dict[str, Any]:
    """Lateness (fired_at - fire_at, ms) of the sleeps of ``BenchSleepy`` invocations created
    since ``since_ms``: p50, p99, max, min, and how many timers there are and have fired."""
    table = await rt.sql_async(
        "SELECT quantile_cont(fired_at_ms - fire_at_ms, 0.5) AS p50,"
        " quantile_cont(fired_at_ms - fire_at_ms, 0.99) AS p99,"
        " max(fired_at_ms - fire_at_ms) AS max, min(fired_at_ms - fire_at_ms) AS min,"
        " count(*) AS timers, count(*) FILTER (WHERE fired) AS fired"
        " FROM (SELECT epoch_ms(fire_at) AS fire_at_ms, epoch_ms(fired_at) AS fired_at_ms,"
        f" fired FROM sys_timer WHERE kind = 'sleep' AND invocation_id IN ({_since(since_ms)}))"
    )
    return table.to_pylist()[0]


def run(n: int, spread: float, suspend_after: float) -> dict:
    data = tempfile.mkdtemp(prefix="raystate-timers-")
    rt = Runtime.start(
        [apps.sleepy],
        data_dir=data,
        namespace=f"bench-timers-{n}-{suspend_after}",
        suspend_after=suspend_after,
    )
    try:
        # pooled hosts start on their first use: start them now, to read their idle RSS
        hosts = [rt.router.pooled(apps.sleepy, i) for i in range(rt.pool_size)]
        pids: list[int] = ray.get([h.pid.remote() for h in hosts])
        base = sum(rss_mb(p) for p in pids)
        t0 = time.time()
        lead = 5 + n / (100 if suspend_after <= 0 else 300)  # submission rate seen here
        asyncio.run(submit(rt, n, spread, t0 + lead))
        submitted = time.time() - t0
        if submitted > lead:
            print(f"warning: submitting took {submitted:.0f}s, longer than the {lead:.0f}s lead")
        sleeping = sum(rss_mb(p) for p in pids)
        stats: list[dict[str, int]] = ray.get([h.ready.remote() for h in hosts])
        deadline = time.time() + spread + 120
        while (done := asyncio.run(completed(rt))) < n and time.time() < deadline:
            time.sleep(0.5)
        late = asyncio.run(lateness(rt))
        return {
            "timers": n,
            "suspend_after_s": suspend_after,
            "submit_s": round(submitted, 1),
            "completed": done,
            "lateness_p50_ms": late["p50"],
            "lateness_p99_ms": late["p99"],
            "lateness_max_ms": late["max"],
            "early": (late["min"] or 0) < 0,
            "host_rss_idle_mb": round(base),
            "host_rss_sleeping_mb": round(sleeping),
            "kb_per_sleeping": round((sleeping - base) * 1024 / n, 2),
            "in_memory": sum(s["active"] for s in stats),
            "check": "OK"
            if done == n and late["fired"] == n and (late["min"] or 0) >= 0
            else "FAIL",
        }
    finally:
        rt.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timers", default="1000,10000")
    parser.add_argument("--spread", type=float, default=5.0)
    parser.add_argument("--suspend-after", default="0,3600")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    rows = [
        run(int(n), args.spread, float(s))
        for n in args.timers.split(",")
        for s in args.suspend_after.split(",")
    ]
    write(pa.Table.from_pylist(rows))
    ray.shutdown()


if __name__ == "__main__":
    main()

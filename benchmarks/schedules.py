"""Schedule fire lateness and the schedule runner's memory.

    python -m benchmarks.schedules [--schedules 10000] [--every 10] [--seconds 40]

Creates N schedules of ``every`` seconds on a no-op handler (32 clients at a time), then lets
them tick for ``seconds`` and reports, over the ticks due after the last schedule was created:

- fire lateness: how long after its tick time the runner submitted a tick (the tick recorded
  in the journal first), p50/p99/max, from the runner;
- accept lateness: ``sys_invocation.created_at`` (stamped when the runner submits) minus the
  tick time (from ``invoked_by_id``, the tick key), p50/p99, and that none is negative (early);
- completed: the ticks' invocations that completed (all of them, once the runner is paused);
- the runner process's RSS before the schedules and with all N of them;
- the CPU (cores busy) of the runner, the journal and the hosts while the ticks run, and the
  machine's load average: the ticks' invocations are real ones, so on a busy machine the
  whole runtime's throughput bounds how many ticks a second it can start on time.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import ray

from actors import Context, Runtime, Service
from actors.client.tables import write
from actors.cluster.names import SCHEDULES, find_journal
from scheduler.schedules import tick_time_ms

bench = Service("BenchSchedules")


@bench.handler()
async def noop(ctx: Context) -> None:
    return None


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[int], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


async def create(rt: Runtime, n: int, every: float, concurrency: int = 32) -> None:
    numbers = itertools.count()

    async def client() -> None:
        while (i := next(numbers)) < n:
            await rt.schedule_async(f"s{i:05d}", noop, every=timedelta(seconds=every))

    await asyncio.gather(*(client() for _ in range(concurrency)))


def run(n: int, every: float, seconds: float) -> dict:
    data = tempfile.mkdtemp(prefix="raystate-schedules-")
    rt = Runtime.start([bench], data_dir=data, namespace=f"bench-schedules-{n}")
    try:
        rt.schedule("warm", noop, every=timedelta(seconds=every))  # makes the runner
        runner = ray.get_actor(SCHEDULES, namespace=rt.namespace)
        pid = ray.get(runner.info.remote())["pid"]
        rss_before = rss_mb(pid)
        t0 = time.time()
        rt._loop.run(create(rt, n, every))
        created_s = time.time() - t0
        ready_ms = int(time.time() * 1000)
        pids = {
            "runner": pid,
            "journal": ray.get(find_journal(rt.namespace).info.remote())["pid"],
            **{
                f"host{i}": ray.get(rt.router.pooled(bench, i).pid.remote())
                for i in range(rt.pool_size)
            },
        }
        cpu0 = {k: cpu_s(p) for k, p in pids.items()}
        while time.time() < ready_ms / 1000 + seconds:
            time.sleep(1)  # the ticks run meanwhile (a benchmark, not a test)
        busy = {k: round((cpu_s(p) - cpu0[k]) / seconds, 2) for k, p in pids.items()}
        rss_after = rss_mb(pid)
        info = ray.get(runner.info.remote())
        fired = [late for tick, late in ray.get(runner.lateness.remote()) if tick >= ready_ms]
        rows = rt.sql(
            "SELECT epoch_ms(created_at) AS at, invoked_by_id AS k, status FROM sys_invocation"
            " WHERE starts_with(invoked_by_id, 'schedule:s')"
        ).to_pylist()
        accepted = []
        for r in rows:
            parsed = tick_time_ms(r["k"])
            if parsed is not None and parsed[1] >= ready_ms:
                accepted.append(r["at"] - parsed[1])
        return {
            "schedules": n,
            "every_s": every,
            "create_s": round(created_s, 1),
            "ticks": len(fired),
            "fire_p50_ms": pct(fired, 0.5),
            "fire_p99_ms": pct(fired, 0.99),
            "fire_max_ms": max(fired, default=None),
            "accept_p50_ms": pct(accepted, 0.5),
            "accept_p99_ms": pct(accepted, 0.99),
            "early": sum(1 for a in accepted if a < 0),
            "skipped": info["skipped"],
            "runner_rss_mb_before": round(rss_before),
            "runner_rss_mb_after": round(rss_after),
            "cpu_cores": " ".join(f"{k}={v}" for k, v in busy.items()),
            "load_avg": round(os.getloadavg()[0], 1),
        }
    finally:
        rt.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--every", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=40.0)
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    write(pa.Table.from_pylist([run(args.schedules, args.every, args.seconds)]))
    ray.shutdown()


if __name__ == "__main__":
    main()

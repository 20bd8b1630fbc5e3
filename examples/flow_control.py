"""Flow control and schedules: a provider that takes at most 2 calls at once and 4 a second,
and a schedule that polls it every second.

Run: python examples/flow_control.py  (data goes to ./raystate-data)

Twelve "summaries" are sent at once; the limiter lets two run at a time, at most four start
in any second, and the rest wait (``sys_waiting`` says for what). A schedule ticks every
second meanwhile; each tick is one invocation, exactly once.
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta

from actors import Context, RateLimit, Runtime, Service
from actors.client.tables import write

provider = Service("Provider", concurrency=2, rate=RateLimit(4, per=timedelta(seconds=1)))


def call_provider(text: str) -> str:
    time.sleep(0.3)  # a slow, paid API
    return text.upper()


@provider.handler()
async def summarize(ctx: Context, text: str) -> str:
    return await ctx.run("call", call_provider, text)


monitor = Service("Monitor")


@monitor.handler()
async def poll(ctx: Context) -> float:
    return await ctx.time()


def main(data_dir: str = "raystate-data") -> None:
    rt = Runtime.start([provider, monitor], data_dir=data_dir, namespace="flow-example")
    try:
        rt.schedule("poll", poll, every=timedelta(seconds=1), catchup=timedelta(0))
        t0 = time.monotonic()
        handles = [rt.send(summarize, arg=f"report {i}") for i in range(12)]
        time.sleep(0.5)
        print("Waiting for a slot, half a second in:")
        write(rt.sql("SELECT target, waiting_for FROM sys_waiting ORDER BY since LIMIT 3"))
        results = [h.result(timeout=60) for h in handles]
        print(f"{len(results)} summaries in {time.monotonic() - t0:.1f}s: {results[:3]} ...")
        print("\nThe schedule, and its ticks so far:")
        write(rt.sql("SELECT id, target, spec, paused, last_fire_at FROM sys_schedule"))
        ticks = rt.sql(
            "SELECT count(*) FROM sys_invocation WHERE starts_with(invoked_by_id, 'schedule:poll@')"
        ).column(0)[0]
        print(f"poll ran {ticks} times, once per tick")
        rt.delete_schedule("poll")
    finally:
        rt.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])

"""What a concurrency limit that is never reached costs an invocation: the same handler with
and without a limit, alternated in one run.

    python -m benchmarks.limits [--seconds 5] [--concurrency 1,64] [--rounds 2] [--json]

Both services have one handler that does one ``ctx.run`` (a journaled step, as real handlers
do). ``Capped`` has ``concurrency=100_000``, so every invocation asks the limiter and is
admitted at once; ``Free`` has no limit. Each round runs every concurrency on both, so a
drift of the machine hits both alike; the figures are medians over rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
from functools import partial
from typing import Any

from actors import Context, Runtime, Service
from benchmarks.closed_loop import closed_loop

free = Service("Free")
capped = Service("Capped", concurrency=100_000)


def _one() -> int:
    return 1


@free.handler()
async def free_step(ctx: Context) -> int:
    return await ctx.run("one", _one)


@capped.handler()
async def capped_step(ctx: Context) -> int:
    return await ctx.run("one", _one)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.limits")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", default="1,64")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    levels = [int(c) for c in args.concurrency.split(",")]
    runs: dict[tuple[str, int], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        rt = Runtime.start([free, capped], data_dir=os.path.join(tmp, "data"))
        try:

            async def run() -> None:
                for c in levels:  # warm up both
                    await closed_loop(lambda: rt.call_async(free_step), c, 1.0)
                    await closed_loop(lambda: rt.call_async(capped_step), c, 1.0)
                for _ in range(args.rounds):
                    for c in levels:
                        for name, handler in (("free", free_step), ("capped", capped_step)):
                            r = await closed_loop(partial(rt.call_async, handler), c, args.seconds)
                            runs.setdefault((name, c), []).append(r)

            asyncio.run(run())
        finally:
            rt.shutdown()
    report = []
    for c in levels:
        row: dict[str, Any] = {"concurrency": c}
        for name in ("free", "capped"):
            rs = runs[(name, c)]
            row[name] = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        row["overhead_p50_ms"] = row["capped"]["p50_ms"] - row["free"]["p50_ms"]
        row["throughput_ratio"] = row["capped"]["per_s"] / row["free"]["per_s"]
        report.append(row)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for row in report:
        f, k = row["free"], row["capped"]
        print(
            f"c={row['concurrency']:<3} no limit {f['per_s']:7.0f}/s p50 {f['p50_ms']:6.2f} ms "
            f"p99 {f['p99_ms']:6.2f} | limit not reached {k['per_s']:7.0f}/s p50 "
            f"{k['p50_ms']:6.2f} ms p99 {k['p99_ms']:6.2f} | overhead p50 "
            f"{row['overhead_p50_ms']:+.2f} ms, throughput {row['throughput_ratio']:.0%}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

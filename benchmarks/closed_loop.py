"""A closed-loop load in one event loop: ``concurrency`` coroutines, each awaiting ``call()``
in turn for ``seconds``; throughput and p50/p99 latency (the small benchmarks share it)."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def closed_loop(
    call: Callable[[], Awaitable[Any]], concurrency: int, seconds: float
) -> dict[str, float]:
    latencies: list[float] = []
    stop = time.monotonic() + seconds

    async def worker() -> None:
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - t0)

    t0 = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.monotonic() - t0
    latencies.sort()
    return {
        "per_s": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1e3,
        "p99_ms": latencies[max(int(len(latencies) * 0.99) - 1, 0)] * 1e3,
        "n": len(latencies),
    }

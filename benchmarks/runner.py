"""Closed-loop load: N client coroutines, each issuing its next call when the last returns.

Load runs without a break from warm-up into measurement. Throughput counts the calls that
complete inside the measured window; latencies are those of the calls that start inside it.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Samples:
    """What one load run observed."""

    window_s: float
    completed_in_window: int = 0
    ok: int = 0  # successful calls over the whole run, warm-up included
    errors: int = 0
    wrong: int = 0  # calls that returned something other than expected
    latencies_s: list[float] = field(default_factory=list)
    first_error: str = ""
    sampled: int | None = None
    """Calls completed between the window's two ``on_window`` samples: what the CPU and file
    figures sampled there span (a sample takes a while, so that span is not the window)."""

    @property
    def per_s(self) -> float:
        return self.completed_in_window / self.window_s if self.window_s > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        """Nearest-rank percentile of the measured latencies, in milliseconds."""
        if not self.latencies_s:
            return math.nan
        ordered = sorted(self.latencies_s)
        return ordered[max(math.ceil(q * len(ordered)) - 1, 0)] * 1000


async def drive(
    call: Callable[[int], Awaitable[Any]],
    *,
    concurrency: int,
    warmup_s: float,
    seconds: float,
    expect: Callable[[int], Any] | None = None,
    on_window: Callable[[str], Awaitable[None]] | None = None,
) -> Samples:
    """Run ``call(n)`` (n = 0, 1, 2, ...) from ``concurrency`` coroutines for
    ``warmup_s + seconds``; ``expect(n)``, if given, is the result each call must return;
    ``on_window("start"|"end")`` is awaited when the measured window opens and closes."""
    clock = time.perf_counter
    warm_end = clock() + warmup_s
    stop = warm_end + seconds
    samples = Samples(window_s=seconds)
    numbers = itertools.count()

    async def client() -> None:
        while (t0 := clock()) < stop:
            n = next(numbers)
            try:
                result = await call(n)
            except Exception as e:  # counted and reported, the load goes on
                samples.errors += 1
                samples.first_error = samples.first_error or f"{type(e).__name__}: {e}"
                continue
            t1 = clock()
            samples.ok += 1
            if expect is not None and result != expect(n):
                samples.wrong += 1
            if warm_end <= t1 <= stop:
                samples.completed_in_window += 1
            if t0 >= warm_end:
                samples.latencies_s.append(t1 - t0)

    async def window() -> None:
        if on_window is None:
            return
        await asyncio.sleep(max(warm_end - clock(), 0))
        await on_window("start")
        first = samples.ok
        await asyncio.sleep(max(stop - clock(), 0))
        samples.sampled = samples.ok - first
        await on_window("end")

    await asyncio.gather(window(), *(client() for _ in range(concurrency)))
    return samples

"""Handlers under concurrency and rate limits, for ``test_limits``. Every attempt writes
``enter``/``exit`` lines with the wall clock to a ledger outside the processes; an attempt that
kills its host writes ``die`` with its pid first, which ends every attempt of that process."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import timedelta
from pathlib import Path

from pydantic import BaseModel

from actors import Context, RateLimit, Service
from tests.integration.apps import append, crash_once


class Job(BaseModel):
    ledger: str
    n: int
    hold_s: float = 0.3
    crash_marker: str | None = None  # kill the host in this job's first attempt
    sleep_s: float = 0.0  # a durable sleep inside (holds no slot)


def _mark(ledger: str, what: str, n: int) -> None:
    append(ledger, f"{what} {n} {os.getpid()} {time.time_ns()}")


limited = Service("Limited", concurrency=3)


@limited.handler()
async def work(ctx: Context, job: Job) -> int:
    _mark(job.ledger, "enter", job.n)
    await asyncio.sleep(job.hold_s)  # the work that the limit protects
    if job.crash_marker is not None and not os.path.exists(job.crash_marker):
        _mark(job.ledger, "die", job.n)
        crash_once(job.crash_marker)
    _mark(job.ledger, "exit", job.n)
    await ctx.run("done", append, job.ledger, f"done {job.n}")
    return job.n


fan = Service("Fan")


@fan.handler()
async def spray(ctx: Context, jobs: list[Job]) -> int:
    """Sends from a handler fall under the callee's limit too."""
    for job in jobs:
        ctx.service_send(work, job)
    return len(jobs)


rated = Service("Rated", rate=RateLimit(5, per=timedelta(seconds=1)))


@rated.handler()
async def tick(ctx: Context, job: Job) -> int:
    await ctx.run("ran", append, job.ledger, f"ran {job.n}")
    return job.n


solo = Service("Solo")


@solo.handler(concurrency=1)
async def nap(ctx: Context, job: Job) -> int:
    await ctx.run("start", append, job.ledger, f"start {job.n}")
    if job.sleep_s:
        await ctx.sleep(timedelta(seconds=job.sleep_s))
    await ctx.run("end", append, job.ledger, f"end {job.n}")
    return job.n


@solo.handler(concurrency=1)
async def hold(ctx: Context, job: Job) -> int:
    """Holds its slot until the ledger says ``go`` (plain code, not a suspension)."""
    _mark(job.ledger, "enter", job.n)
    while "go" not in Path(job.ledger).read_text().split():
        await asyncio.sleep(0.02)
    return job.n


ALL = [limited, fan, rated, solo]

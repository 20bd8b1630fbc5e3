"""Handlers whose ``ctx.run`` steps are Ray tasks and actor methods (tests/integration/
test_ray_steps.py). Side effects go to ledger files; crash points and gates are files."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
from pydantic import BaseModel

from actors import DurableRef, ObjectContext, VirtualObject
from tests.integration.apps import append, crash_once

MB = 1 << 20
ray_steps = VirtualObject("RaySteps")


class Job(BaseModel):
    ledger: str
    marker: str = ""  # crash point, armed by this file not existing yet
    gate: str = ""  # a file the step (or handler) waits for
    megabytes: int = 1
    actor: str = ""  # a named Ray actor
    namespace: str = ""  # the actor's


def _wait_for(path: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.02)


@ray.remote(num_cpus=0.5)
def where(x: int) -> dict[str, Any]:
    ctx = ray.get_runtime_context()
    return {"x": x, "task": ctx.get_task_name(), "cpus": ctx.get_assigned_resources().get("CPU")}


@ray.remote(num_cpus=0.5, max_retries=3)
def exits_once(ledger: str, marker: str) -> str:
    append(ledger, "try")
    crash_once(marker)  # the worker process dies; Ray retries the task
    append(ledger, "done")
    return "survived"


@ray.remote(num_cpus=0.5)
def gated(ledger: str, gate: str) -> int:
    append(ledger, "start")
    _wait_for(gate)
    append(ledger, "done")
    return 42


@ray.remote(num_cpus=0.5)
def make_array(megabytes: int, ledger: str) -> np.ndarray:
    append(ledger, "make")
    return np.full(megabytes * MB // 8, 1.5)


@ray.remote(num_cpus=0.5)
def double(arr: np.ndarray) -> np.ndarray:
    return arr * 2


@ray.remote(num_cpus=0.5)
def total(arr: np.ndarray) -> float:
    return float(arr.sum())


class Opaque:
    """Neither JSON nor a supported binary type."""


@ray.remote(num_cpus=0.5)
def opaque() -> Opaque:
    return Opaque()


@ray.remote(num_cpus=0.5)
def blob_bytes(megabytes: int, ledger: str) -> bytes:
    append(ledger, "blob")
    return bytes(range(256)) * (megabytes * MB // 256)


@ray.remote
class Model:
    def predict(self, values: list[float]) -> list[float]:
        return [v * 10 for v in values]


@ray_steps.handler()
async def options_and_actor(ctx: ObjectContext, job: Job) -> dict[str, Any]:
    """A remote function as it is and with ``.options``, and an actor's method."""
    a = await ctx.run("plain", where, 1)
    b = await ctx.run("opts", where.options(num_cpus=0.25), 2)
    model = ray.get_actor(job.actor, namespace=job.namespace)
    c = await ctx.run("predict", model.predict, [1.0, 2.0])
    return {"a": a, "b": b, "c": c}


@ray_steps.handler()
async def worker_exits(ctx: ObjectContext, job: Job) -> str:
    out = await ctx.run("exits", exits_once, job.ledger, job.marker)
    append(job.ledger, f"journaled:{out}")
    return out


@ray_steps.handler()
async def wait_gate(ctx: ObjectContext, job: Job) -> int:
    append(job.ledger, "body")
    return await ctx.run("gated", gated, job.ledger, job.gate)


@ray_steps.handler()
async def quick(ctx: ObjectContext, job: Job) -> str:
    return await ctx.run("quick", lambda: "quick")


@ray_steps.handler()
async def big_ref(ctx: ObjectContext, job: Job) -> float:
    """A large array through three steps by reference: it never passes through the host."""
    ref = await ctx.run("make", make_array, job.megabytes, job.ledger, durable_ref=True)
    assert isinstance(ref, DurableRef), ref
    doubled = await ctx.run("double", double, ref, durable_ref=True)
    return await ctx.run("total", total, doubled)


@ray_steps.handler()
async def unsupported(ctx: ObjectContext, job: Job) -> None:
    await ctx.run("opaque", opaque)


@ray_steps.handler()
async def object_array(ctx: ObjectContext, job: Job) -> None:
    await ctx.run("objects", lambda: np.array([object()], dtype=object))


@ray_steps.handler()
async def blob_then_crash(ctx: ObjectContext, job: Job) -> dict[str, Any]:
    """A blob result, then (once) a wait at the gate and a crash: the replay reads the blob."""
    data = await ctx.run("blob", blob_bytes, job.megabytes, job.ledger)
    small = await ctx.run("small", lambda: np.arange(10, dtype=np.int32))
    if job.gate and not os.path.exists(job.marker):
        while not os.path.exists(job.gate):
            await asyncio.sleep(0.02)
    if job.marker:
        crash_once(job.marker)
    return {
        "size": len(data),
        "head": list(data[:3]),
        "small": small.tolist(),
        "dtype": str(small.dtype),
    }


@ray_steps.handler()
async def blob_store_down(ctx: ObjectContext, job: Job) -> int:
    data = await ctx.run("blob", blob_bytes, job.megabytes, job.ledger)
    return len(data)


def blobs_of(data_dir: str | Path, invocation_id: str) -> list[Path]:
    root = Path(data_dir) / "blobs" / invocation_id
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


@ray_steps.handler()
async def adopts(ctx: ObjectContext, job: Job) -> float:
    """Waits at the gate, dies once, then runs a step whose result may be adopted."""
    append(job.ledger, "body")
    while not os.path.exists(job.gate):
        await asyncio.sleep(0.02)
    crash_once(job.marker)
    ref = await ctx.run("make", make_array, job.megabytes, job.ledger, durable_ref=True)
    return float((await ref.get()).sum())


@ray.remote(num_cpus=0.5)
def until_cancelled(ledger: str) -> None:
    append(ledger, "start")
    try:
        for _ in range(12_000):  # short sleeps: the interrupt is raised between them
            time.sleep(0.01)
    except KeyboardInterrupt:  # ray.cancel interrupts a running task so
        append(ledger, "cancelled")
        raise


@ray_steps.handler()
async def long_step(ctx: ObjectContext, job: Job) -> None:
    await ctx.run("long", until_cancelled, job.ledger)

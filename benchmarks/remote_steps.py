"""Remote steps (``actors.steps.remote``) against raw Ray, in the same run.

    python -m benchmarks.remote_steps [--seconds 5] [--concurrency 1,64] [--megabytes 100]
                                      [--json]

A no-op task awaited through ``run_remote`` (the wrapper task, its ``_Outcome``, the error
mapping) against the same no-op as a plain ``@ray.remote`` task awaited directly, at each
concurrency (that many coroutines on one event loop, each awaiting its step in turn): p50/p99
latency and throughput. Then one array of ``--megabytes`` made in a worker: through
``durable_ref=True`` (the worker encodes it and writes the blob store) against the raw object
store (the worker returns it, the driver gets it). Last, the same no-op as the one step of a durable
invocation (``rt.call_async`` of a handler that does ``await ctx.run("noop", noop)``): what a
caller sees end to end, the journal's commits included, against the raw task.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from typing import Any

import ray

from actors import Context, Runtime, Service
from actors.steps.remote import StepSpec, run_remote
from benchmarks.closed_loop import closed_loop

bench = Service("RemoteStepBench")


@ray.remote(num_cpus=1)  # as many at once as there are CPUs (0 would start a worker per task)
def noop() -> int:
    return 1


@ray.remote(num_cpus=0)
def array(megabytes: int) -> Any:
    import numpy as np

    return np.ones(megabytes * (1 << 20) // 8)


def _spec(store: str, idx: int, durable_ref: bool = False) -> StepSpec:
    return StepSpec("Bench", "run", "noop", "bench", idx, store_uri=store, durable_ref=durable_ref)


async def _noop_runs(store: str, concurrency: list[int], seconds: float) -> list[dict[str, Any]]:
    out = []
    for c in concurrency:

        def raw_call() -> Any:
            return noop.remote()

        def step_call() -> Any:
            return run_remote(noop, (), {}, _spec(store, 0))

        await closed_loop(raw_call, c, 1.0)  # warm up: the workers, and the wrapper task's export
        await closed_loop(step_call, c, 1.0)
        raw = await closed_loop(raw_call, c, seconds)
        step = await closed_loop(step_call, c, seconds)
        out.append(
            {
                "concurrency": c,
                "raw": raw,
                "step": step,
                "overhead_p50_ms": step["p50_ms"] - raw["p50_ms"],
                "throughput_ratio": step["per_s"] / raw["per_s"],
            }
        )
    return out


@bench.handler()
async def one_step(ctx: Context) -> int:
    return await ctx.run("noop", noop)  # type: ignore[no-any-return]


def _durable_runs(data_dir: str, concurrency: list[int], seconds: float) -> list[dict[str, Any]]:
    rt = Runtime.start([bench], data_dir=data_dir, namespace="bench-remote-steps", pool_size=1)
    out = []
    try:

        async def run() -> None:
            for c in concurrency:

                def raw_call() -> Any:
                    return noop.remote()

                def call() -> Any:
                    return rt.call_async(one_step)

                await closed_loop(call, c, 1.0)
                raw = await closed_loop(raw_call, c, seconds)
                durable = await closed_loop(call, c, seconds)
                out.append({"concurrency": c, "raw": raw, "invocation": durable})

        asyncio.run(run())
    finally:
        rt.shutdown()
    return out


async def _big(store: str, megabytes: int) -> dict[str, float]:
    t0 = time.perf_counter()
    ref = (await run_remote(array, (megabytes,), {}, _spec(store, 1, durable_ref=True))).value
    durable = time.perf_counter() - t0
    t0 = time.perf_counter()
    value = await array.remote(megabytes)
    raw = time.perf_counter() - t0
    del value
    return {
        "megabytes": megabytes,
        "durable_ref_s": durable,
        "object_store_s": raw,
        "blob_bytes": ref.size,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.remote_steps")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", default="1,64")
    parser.add_argument("--megabytes", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as tmp:
        store = os.path.join(tmp, "blobs")
        levels = [int(c) for c in args.concurrency.split(",")]
        report = {
            "noop": asyncio.run(_noop_runs(store, levels, args.seconds)),
            "big": asyncio.run(_big(store, args.megabytes)),
            "invocation": _durable_runs(os.path.join(tmp, "data"), levels, args.seconds),
        }
    ray.shutdown()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for row in report["noop"]:
        raw, step = row["raw"], row["step"]
        print(
            f"c={row['concurrency']:<3} raw {raw['per_s']:8.0f}/s p50 {raw['p50_ms']:6.2f} ms"
            f" | step {step['per_s']:8.0f}/s p50 {step['p50_ms']:6.2f} ms p99 "
            f"{step['p99_ms']:6.2f} ms | overhead p50 {row['overhead_p50_ms']:+.2f} ms, "
            f"throughput {row['throughput_ratio']:.0%}"
        )
    for row in report["invocation"]:
        raw, inv = row["raw"], row["invocation"]
        print(
            f"c={row['concurrency']:<3} raw {raw['per_s']:8.0f}/s p50 {raw['p50_ms']:6.2f} ms"
            f" | invocation with the step {inv['per_s']:8.0f}/s p50 {inv['p50_ms']:6.2f} ms "
            f"p99 {inv['p99_ms']:6.2f} ms"
        )
    big = report["big"]
    print(
        f"{big['megabytes']} MB array: durable_ref {big['durable_ref_s']:.2f} s (worker "
        f"writes {big['blob_bytes']:,} bytes) | object store {big['object_store_s']:.2f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The load driver: a separate process that connects to a running runtime and runs one cell.

    python -m benchmarks.driver --address HOST:PORT --namespace NS --cell '{"workload": "hot",
        "concurrency": 16, "seconds": 5}' [--sync]

It does what any client of raystate would do, ``Runtime.connect(namespace=..., address=...)``
and ``call_async``, so its figures include the client's side of each call. ``python -m
benchmarks`` starts one per cell. With ``--sync`` it prints ``@@sample LABEL`` at the edges of
the measured window and waits for a line on stdin (the benchmark command samples CPU and memory
meanwhile). At the end it prints ``@@result`` and the cell's figures as JSON (also without
``--sync``, so it can drive a runtime started by anyone).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import traceback
from typing import Any

import ray

from actors import Runtime
from benchmarks.workloads import WORKLOADS, Cell


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.driver", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--address", required=True, help="the Ray cluster's GCS address")
    parser.add_argument("--namespace", required=True, help="the runtime's Ray namespace")
    parser.add_argument("--cell", required=True, help="the cell, as JSON (benchmarks.Cell)")
    parser.add_argument(
        "--sync",
        action="store_true",
        help="hand-shake with the benchmark command at the window's edges",
    )
    return parser.parse_args(argv)


def sampler(enabled: bool) -> Any:
    async def sample(label: str) -> None:
        if enabled:
            print(f"@@sample {label}", flush=True)
            await asyncio.to_thread(sys.stdin.readline)

    return sample


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cell = Cell(**json.loads(args.cell))
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(
        address=args.address,
        namespace=args.namespace,
        log_to_driver=False,
        logging_level=logging.ERROR,
    )
    rt = Runtime.connect(namespace=args.namespace, address=args.address)
    try:
        run = WORKLOADS[cell.workload].run(rt, cell, sampler(args.sync))
        result: dict[str, Any] = asyncio.run(run)
    except Exception as e:
        traceback.print_exc()
        result = {"problems": [f"the driver failed: {type(e).__name__}: {e}"]}
    print("@@result " + json.dumps(result, default=str), flush=True)
    rt.close()
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The peer's load driver: a separate process that runs one cell against Restate's ingress.

    python -m benchmarks.restate_peer.driver --ingress-port PORT --admin-url URL \\
        --cell '{"workload": "hot", "concurrency": 16, "seconds": 5}' [--sync]

Like ``benchmarks.driver`` for raystate: closed-loop clients (``benchmarks.runner.drive``, the
same warm-up, window and percentiles), here over raw HTTP/1.1 keep-alive connections, one per
client. With ``--sync`` it prints ``@@sample LABEL`` at the window's edges and waits for a line
on stdin; at the end it prints ``@@result`` and the cell's figures as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import sys
import traceback
from typing import Any

from benchmarks.restate_peer import cluster, rawhttp
from benchmarks.restate_peer.loads import LOADS, PeerCell, summary
from benchmarks.runner import drive


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.restate_peer.driver", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--ingress-port", type=int, required=True)
    parser.add_argument("--admin-url", required=True)
    parser.add_argument("--cell", required=True, help="the cell, as JSON (loads.PeerCell)")
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


async def run_cell(cell: PeerCell, ingress_port: int, admin_url: str, sync: Any) -> dict[str, Any]:
    client = rawhttp.Client(cluster.HOST, ingress_port)
    try:
        load = LOADS[cell.workload](client, functools.partial(cluster.query, admin_url), cell)
        warm = getattr(load, "warm", None)
        if warm is not None:
            await warm()
        s = await drive(
            load.call,
            concurrency=cell.concurrency,
            warmup_s=cell.warmup,
            seconds=cell.seconds,
            on_window=sync,
        )
        problems = []
        if s.errors:
            problems.append(f"{s.errors} calls failed, first: {s.first_error}")
        problems += await load.check()
        return {
            **summary(s),
            "problems": problems,
            "notes": load.notes(),
            "connections": len(client.idle),
        }
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cell = PeerCell(**json.loads(args.cell))
    try:
        result = asyncio.run(run_cell(cell, args.ingress_port, args.admin_url, sampler(args.sync)))
    except Exception as e:
        traceback.print_exc()
        result = {"problems": [f"the driver failed: {type(e).__name__}: {e}"]}
    print("@@result " + json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

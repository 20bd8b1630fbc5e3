"""``python -m benchmarks.restate_peer``: the real Restate under raystate's workloads.

Starts a private Restate (``cluster``), then for each cell a separate driver process
(``driver``), sampling CPU and RSS of restate-server, the SDK process and the driver at the
edges of the measured window; prints a table and, with ``--json``, one JSON line per cell.
``run`` is the same without the command line, for ``python -m benchmarks --restate``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import IO, Any

from benchmarks.restate_peer import cluster, install, procstat, table
from benchmarks.restate_peer.loads import LOADS, PeerCell

Emit = Callable[[dict[str, Any]], None]


def _lines(stream: IO[str]) -> queue.Queue[str]:
    """Lines of ``stream`` on a queue (an empty string at the end), read by a thread."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line.rstrip("\n") or " ")
        lines.put("")

    threading.Thread(target=pump, daemon=True).start()
    return lines


def run_cell(peer: cluster.Peer, cell: PeerCell) -> dict[str, Any]:
    """One cell in its own driver process; the row (``table.row``)."""
    timeout = cell.warmup + cell.seconds + 180
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.restate_peer.driver",
        "--ingress-port",
        str(peer.ingress_port),
        "--admin-url",
        peer.admin_url,
        "--cell",
        json.dumps(dataclasses.asdict(cell)),
        "--sync",
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(cluster.ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
    }
    snaps: dict[str, tuple[float, dict[str, procstat.Usage | None]]] = {}
    result: dict[str, Any] | None = None
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            cmd,
            cwd=cluster.ROOT,
            env=env,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
        )
        assert proc.stdin is not None and proc.stdout is not None
        pids = {**peer.pids(), "driver": proc.pid}
        lines = _lines(proc.stdout)
        deadline = time.monotonic() + timeout
        try:
            while line := lines.get(timeout=max(deadline - time.monotonic(), 0.1)):
                if line.startswith("@@sample "):
                    snaps[line.split()[1]] = (
                        time.monotonic(),
                        {k: procstat.usage(p) for k, p in pids.items()},
                    )
                    proc.stdin.write("ok\n")
                    proc.stdin.flush()
                elif line.startswith("@@result "):
                    result = json.loads(line[len("@@result ") :])
            proc.wait(timeout=60)
        except (queue.Empty, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
            result = {"problems": [f"the driver did not finish within {timeout:.0f}s"]}
        if result is None:
            err.seek(0)
            tail = " | ".join(err.read().strip().splitlines()[-3:])
            result = {"problems": [f"the driver exited with {proc.returncode}: {tail}"]}
    return table.row(cell.workload, cell.concurrency, result, snaps)


def run(
    names: list[str],
    concurrency: list[int],
    seconds: float,
    warmup: float,
    *,
    http1: bool = False,
    emit: Emit | None = None,
) -> list[dict[str, Any]]:
    """Every cell of the workloads the peer has (others are left out), one after another on
    one Restate; progress on stderr. Raises ``install.SetupError`` where something is missing."""
    install.check_sdk()
    binary = install.server_binary()
    names = [n for n in names if n in LOADS]
    rows: list[dict[str, Any]] = []
    if not names:
        return rows
    began = time.monotonic()
    with cluster.running(binary, http1=http1) as peer:
        print(
            f"restate peer: restate-server {install.VERSION}, restate-sdk "
            f"{_sdk_version()} on hypercorn, {os.cpu_count()} CPUs, python "
            f"{platform.python_version()}; started in {time.monotonic() - began:.1f}s; "
            f"{warmup:g}s warm-up + {seconds:g}s per cell",
            file=sys.stderr,
            flush=True,
        )
        for name in names:
            for c in concurrency:
                t0 = time.monotonic()
                r = run_cell(peer, PeerCell(name, c, seconds, warmup, f"{name}-c{c}-"))
                r["cell_s"] = round(time.monotonic() - t0, 1)
                r["load_avg_1m"] = round(os.getloadavg()[0], 1)
                rows.append(r)
                if emit is not None:
                    emit(r)
                print(
                    f"  restate {name} x{c}: {r['inv_per_s']} inv/s, p50 {r['p50_ms']} ms, "
                    f"p99 {r['p99_ms']} ms, {r['check']}",
                    file=sys.stderr,
                    flush=True,
                )
    return rows


def _sdk_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("restate-sdk")
    except PackageNotFoundError:
        return "?"


def title(http1: bool = False) -> str:
    sdk = "HTTP/1.1, request-response" if http1 else "h2c, bidirectional stream"
    return (
        f"Restate {install.VERSION} measured in this run on this machine, "
        f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs (restate-server + "
        f"restate-sdk on hypercorn over {sdk}; driver in a separate process, raw HTTP/1.1 "
        "keep-alive, one connection per client)"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.restate_peer", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--workloads",
        default=",".join(LOADS),
        help=f"comma-separated, of {', '.join(LOADS)} (default: all)",
    )
    parser.add_argument(
        "--concurrency",
        default="1,16,64",
        help="comma-separated client concurrencies (default 1,16,64)",
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per cell")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per cell")
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="PATH",
        help="JSON lines, one per cell: to PATH, or after the table",
    )
    parser.add_argument(
        "--http1",
        action="store_true",
        help="register the deployment with use_http_11 (default: h2c)",
    )
    args = parser.parse_args(argv)
    args.names = [n.strip() for n in args.workloads.split(",") if n.strip()]
    if unknown := [n for n in args.names if n not in LOADS]:
        parser.error(f"unknown workloads {unknown} (known: {', '.join(LOADS)})")
    try:
        args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    except ValueError:
        parser.error(f"--concurrency wants integers like 1,16,64, not {args.concurrency!r}")
    if not args.concurrency or min(args.concurrency) < 1 or args.seconds <= 0 or args.warmup < 0:
        parser.error("--concurrency and --seconds must be positive, --warmup not negative")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    json_file = open(args.json, "w") if args.json not in (None, "-") else None  # noqa: SIM115

    def emit(r: dict[str, Any]) -> None:
        if json_file is not None:
            json_file.write(table.json_line(r) + "\n")
            json_file.flush()

    try:
        rows = run(
            args.names, args.concurrency, args.seconds, args.warmup, http1=args.http1, emit=emit
        )
    except install.SetupError as e:
        print(f"restate peer: {e}", file=sys.stderr)
        return 2
    finally:
        if json_file is not None:
            json_file.close()
    table.print_table(rows, title(args.http1))
    if args.json == "-":
        for r in rows:
            print(table.json_line(r))
    return 0 if all(r["check"] == "OK" for r in rows) else 1

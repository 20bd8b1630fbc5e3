"""What spreading the same journal writes over more processes costs on this machine, without Ray.

    python -m benchmarks.process_spread [--processes 4] [--ops 3000] [--rounds 2]

Each server is a fresh interpreter (spawned, as Ray starts its workers) that owns a
``JournalStore`` in a directory of its own and writes each batch it is sent (one log frame and
one ``fdatasync``), draining into DuckDB every ``--drain-s`` (default ``DRAIN_DELAY_S``, the journal
actor's). One
client sends a typical invocation's batch and waits for the answer, one at a time, in three
layouts, interleaved over the rounds so machine noise hits all alike:

- ``1 process``: one server gets every batch (one partition);
- ``N alive, 1 used``: N servers run, the first gets every batch (idle processes' cost);
- ``N used``: batch k goes to server k mod N (N partitions sharing the load).

It prints per-write latency (p50/p99), writes per second, and the servers' CPU per write. The
gap between the last two layouts is what the same work costs when it is spread over N
processes, on whatever machine runs it (docs/performance.md, "Partitions").
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import pickle
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection

from benchmarks.journal_write import Batches
from journal.actor import DRAIN_DELAY_S


def _serve(directory: str, conn: Connection, drain_s: float) -> None:
    """One partition's writer: a store, its writes, and its drains every ``drain_s``."""
    from journal.store import JournalStore

    store = JournalStore(directory)
    last_drain = time.monotonic()
    conn.send(b"ready")
    while True:
        timeout = max(0.0, last_drain + drain_s - time.monotonic())
        if conn.poll(timeout if store.undrained else None):
            frame = conn.recv_bytes()
            if not frame:
                break
            store.write([pickle.loads(frame)])
            conn.send_bytes(b"ok")
        if store.undrained and time.monotonic() - last_drain >= drain_s:
            store.drain()
            last_drain = time.monotonic()
    store.close()


def _cpu_s(pid: int) -> float:
    """User and system CPU seconds of a process, from /proc (0 where there is none)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    layout: str
    p50_us: float
    p99_us: float
    writes_per_s: float
    cpu_ms_per_write: float


def run_layout(processes: int, used: int, ops: int, label: str, drain_s: float) -> Result:
    """``ops`` writes over the first ``used`` of ``processes`` fresh servers."""
    ctx = mp.get_context("spawn")
    root = tempfile.mkdtemp(prefix="raystate-spread-")
    servers = []
    for i in range(processes):
        ours, theirs = ctx.Pipe()
        proc = ctx.Process(
            target=_serve, args=(os.path.join(root, str(i)), theirs, drain_s), daemon=True
        )
        proc.start()
        servers.append((proc, ours))
    for _, conn in servers:
        conn.recv()
    factory = Batches()
    frames = [pickle.dumps(batch) for batch in factory.make(ops + ops // 10)]
    warmup, frames = frames[: ops // 10], frames[ops // 10 :]
    for k, frame in enumerate(warmup):
        conn = servers[k % used][1]
        conn.send_bytes(frame)
        conn.recv_bytes()
    cpu0 = sum(_cpu_s(proc.pid or 0) for proc, _ in servers)
    samples = []
    started = time.perf_counter()
    for k, frame in enumerate(frames):
        conn = servers[k % used][1]
        t0 = time.perf_counter()
        conn.send_bytes(frame)
        conn.recv_bytes()
        samples.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    cpu = sum(_cpu_s(proc.pid or 0) for proc, _ in servers) - cpu0
    for proc, conn in servers:
        conn.send_bytes(b"")
        proc.join(10)
        if proc.exitcode != 0:
            proc.kill()
            raise RuntimeError(f"a server of {label!r} ended with {proc.exitcode}")
    samples.sort()
    return Result(
        label,
        statistics.median(samples) * 1e6,
        samples[min(len(samples) - 1, round(0.99 * (len(samples) - 1)))] * 1e6,
        len(frames) / elapsed,
        cpu / len(frames) * 1e3,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=4, help="servers of the spread layouts")
    parser.add_argument("--ops", type=int, default=3000, help="measured writes per layout")
    parser.add_argument("--rounds", type=int, default=2, help="times each layout runs")
    parser.add_argument(
        "--drain-s",
        type=float,
        default=DRAIN_DELAY_S,
        help="seconds between drains into DuckDB (default: the journal actor's)",
    )
    args = parser.parse_args(argv)
    if args.processes < 2 or args.ops < 10 or args.rounds < 1:
        parser.error("--processes must be at least 2, --ops at least 10, --rounds at least 1")
    n = args.processes
    layouts = [(1, 1, "1 process"), (n, 1, f"{n} alive, 1 used"), (n, n, f"{n} used")]
    results: dict[str, list[Result]] = {label: [] for _, _, label in layouts}
    for round_no in range(1, args.rounds + 1):
        for processes, used, label in layouts:
            result = run_layout(processes, used, args.ops, label, args.drain_s)
            results[label].append(result)
            print(
                f"round {round_no}  {label:>16}: p50 {result.p50_us:6.0f} us, p99"
                f" {result.p99_us:6.0f} us, {result.writes_per_s:6.0f} writes/s,"
                f" {result.cpu_ms_per_write:.3f} CPU ms/write",
                file=sys.stderr,
            )
    base = statistics.mean(r.writes_per_s for r in results["1 process"])
    header = ("layout".rjust(16), "p50 us".rjust(7), "p99 us".rjust(7), "writes/s", "x".rjust(5))
    print(" | ".join(header) + " | CPU ms/write")
    for label, runs in results.items():
        rate = statistics.mean(r.writes_per_s for r in runs)
        print(
            f"{label:>16} | {statistics.mean(r.p50_us for r in runs):7.0f} |"
            f" {statistics.mean(r.p99_us for r in runs):7.0f} | {rate:8.0f} |"
            f" {rate / base:4.2f}x | {statistics.mean(r.cpu_ms_per_write for r in runs):.3f}"
        )


if __name__ == "__main__":
    main()

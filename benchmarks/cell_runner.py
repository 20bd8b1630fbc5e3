"""One benchmark cell, driven from a separate process (``benchmarks.driver``).

``CellRunner`` starts the load driver for a cell, answers its ``@@sample`` lines with a snapshot of
every process's CPU and RSS (``benchmarks.procs``) and reads its ``@@result`` line; a driver that
does not finish in time, or exits without a result, becomes a cell with a problem instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

import ray

from benchmarks import procs
from benchmarks.workloads import Cell, Workload
from journal.partitions import Partitions

NAMESPACE = "raystate-bench"
ROOT = Path(__file__).resolve().parents[1]


class CellRunner:
    """Runs cells: a driver process each, sampling processes when it says so."""

    def __init__(
        self, address: str, data_dir: str, args: argparse.Namespace, layout: Partitions
    ) -> None:
        self.address, self.data_dir, self.args = address, data_dir, args
        self.journals = {
            layout.journal(p): ray.get_actor(layout.journal(p), namespace=NAMESPACE) for p in layout
        }

    def snapshot(self, driver_pid: int | None) -> procs.Snapshot:
        """Every process's CPU and RSS, and the journals' counters summed over partitions."""
        infos: list[Any] = ray.get([j.info.remote() for j in self.journals.values()], timeout=30)
        return procs.snapshot(
            self.data_dir,
            driver_pid,
            {k: sum(int(i[k]) for i in infos) for k in ("transactions", "drains", "reads")},
            {int(i["pid"]): name for name, i in zip(self.journals, infos, strict=True)},
        )

    def run(self, w: Workload, concurrency: int) -> tuple[dict[str, Any], dict]:
        a = self.args
        cell = Cell(
            w.name,
            concurrency,
            a.seconds,
            a.warmup,
            f"{w.name}-c{concurrency}-",
            a.timers,
            a.timers_budget,
            a.spread,
        )
        timeout = (
            a.warmup
            + a.seconds
            + 180
            + (a.timers_budget + a.spread + 300 if w.name == "timers" else 0)
        )
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.driver",
            "--address",
            self.address,
            "--namespace",
            NAMESPACE,
            "--cell",
            json.dumps(dataclasses.asdict(cell)),
            "--sync",
        ]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
        }
        snaps: dict[str, procs.Snapshot] = {}
        result: dict[str, Any] | None = None
        with tempfile.TemporaryFile("w+") as err:
            proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=env,
                text=True,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
            )
            assert proc.stdin is not None and proc.stdout is not None
            lines = _reader(proc.stdout)
            deadline = time.monotonic() + timeout
            try:
                while line := lines.get(timeout=max(deadline - time.monotonic(), 0.1)):
                    if line.startswith("@@sample "):
                        snaps[line.split()[1]] = self.snapshot(proc.pid)
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
        return result, snaps


def _reader(stream: IO[str]) -> queue.Queue[str]:
    """Lines of ``stream`` on a queue (an empty string at the end), read by a thread."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line.rstrip("\n") or " ")
        lines.put("")

    threading.Thread(target=pump, daemon=True).start()
    return lines

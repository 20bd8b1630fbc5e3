"""A driver process for the full-restart test: it starts a Ray of its own, submits work and
stops that whole Ray runtime mid-flight (the test then starts the runtime again on the same data
dir)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import ray

from actors import Runtime
from tests.integration import apps

KEYS = [f"r{i}" for i in range(5)]


def phase1(data_dir: str, ledger: str, gate: str) -> None:
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    rt = Runtime.start(apps.ALL, data_dir=data_dir, namespace="restart")
    ids = [
        rt.send(apps.gated, key=k, arg=apps.Job(ledger=ledger, gate=gate, tag="r")).id for k in KEYS
    ]
    ids += [rt.send(apps.add, key="total", arg=i).id for i in range(1, 4)]
    ids.append(rt.send(apps.nap, key="sleepy", arg=apps.Nap(ledger=ledger, seconds=4)).id)
    ids.append(rt.send(apps.stamp, key="later", arg=apps.Nap(ledger=ledger, seconds=0), delay=4).id)
    print(json.dumps({"sent_at": time.time()}), flush=True)
    deadline = time.monotonic() + 60
    while not all(
        f"b:{k}:r" in apps_lines(ledger) for k in KEYS
    ) or "before:sleepy:" not in apps_lines(ledger):
        if time.monotonic() > deadline:
            raise SystemExit("phase 1: handlers never reached step b")
        time.sleep(0.05)
    print(json.dumps(ids), flush=True)
    ray.shutdown()  # the whole runtime stops, handlers mid-flight


def apps_lines(path: str) -> list[str]:
    return Path(path).read_text().splitlines() if os.path.exists(path) else []


if __name__ == "__main__":
    {"phase1": phase1}[sys.argv[1]](*sys.argv[2:])

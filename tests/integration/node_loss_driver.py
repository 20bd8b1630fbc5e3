"""Driver processes for the node-loss test (``test_node_loss.py``), run against a two-node Ray
cluster started with ``ray start``:

- ``load ADDRESS NAMESPACE DATA_DIR WORK``: starts the runtime with two partitions spread over
  the nodes, writes where each partition's journal runs to ``WORK/placement.json``, then sends
  to counter keys from several threads, each send under an idempotency key of its own and sent
  again until acknowledged, and appends each acknowledged send to the ledger ``WORK/ledger``
  (outside every process that may die). It stops starting new sends once ``WORK/stop`` exists.
- ``rebalance ADDRESS NAMESPACE NODES``: once NODES nodes are alive, moves the partitions to
  their preferred nodes (``Runtime.rebalance_partitions``) and reports what moved.
- ``check ADDRESS NAMESPACE WORK``: reports where each partition's journal runs now, how often
  each acknowledged invocation is in its partition's ``sys_invocation``, and the counters.

Each prints one line ``RESULT <json>`` (worker logs may share stdout).
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import ray

from actors import Runtime
from journal.partitions import Partitions
from tests.integration import apps

PARTITIONS = Partitions(2)
CLIENTS = 4
POOL_SIZE = 2
KEYS = [f"c{i}" for i in range(24)]
RESEND_PAUSE_S = 0.05  # between attempts of one send while its partition is away


def report(result: dict[str, Any]) -> None:
    print("RESULT " + json.dumps(result), flush=True)


def journal_of(namespace: str, p: int) -> Any:
    return ray.get_actor(PARTITIONS.journal(p), namespace=namespace)


def where(namespace: str, p: int, timeout: float = 60.0) -> dict[str, Any]:
    """Partition ``p``'s journal: its node, pid, epoch and socket (asked until it answers)."""
    deadline = time.monotonic() + timeout
    while True:
        actor = journal_of(namespace, p)
        try:
            info = ray.get(actor.info.remote(), timeout=10)
            node = ray.get(
                actor.__ray_call__.remote(lambda _s: ray.get_runtime_context().get_node_id()),
                timeout=10,
            )
            _, address, token = ray.get(actor.wire_endpoint.remote(), timeout=10)
            return {
                "node": node,
                "pid": info["pid"],
                "epoch": info["epoch"],
                "wire": [address, token],  # its socket, for callers on its node
            }
        except (ray.exceptions.RayError, ValueError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def load(address: str, namespace: str, data_dir: str, work: str) -> None:
    rt = Runtime.start(
        [apps.counter],
        data_dir=data_dir,
        namespace=namespace,
        address=address,
        pool_size=POOL_SIZE,
        partitions=PARTITIONS.count,
        partition_placement="spread",
    )
    root = Path(work)
    nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
    write_json(
        root / "placement.json",
        {
            "nodes": nodes,
            "head": ray.get_runtime_context().get_node_id(),
            "partitions": [where(namespace, p) for p in PARTITIONS],
        },
    )
    stop, lock, numbers = root / "stop", threading.Lock(), itertools.count()
    errors: Tally[str] = Tally()
    with (root / "ledger").open("a", buffering=1) as ledger:

        def client() -> None:
            while not stop.exists():
                with lock:
                    n = next(numbers)
                key = KEYS[n % len(KEYS)]
                while True:
                    try:
                        h = rt.send(apps.add, key=key, arg=1, idempotency_key=f"send-{n}")
                        break
                    except Exception as e:  # sent again under its idempotency key: once at most
                        with lock:
                            errors[type(e).__name__] += 1
                        time.sleep(RESEND_PAUSE_S)
                with lock:
                    ledger.write(f"{key} {h.id}\n")

        threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    report({"sent": next(numbers), "errors": dict(errors)})
    rt.close()


def check(address: str, namespace: str, work: str) -> None:
    rt = Runtime.connect(namespace=namespace, address=address)
    acked = [line.split() for line in (Path(work) / "ledger").read_text().splitlines()]
    seen: Tally[str] = Tally()
    foreign = []
    for p in PARTITIONS:
        table = ray.get(
            journal_of(namespace, p).sql.remote(
                "SELECT id FROM sys_invocation WHERE target_service_name = 'Counter'"
                " AND target_handler_name = 'add'"
            ),
            timeout=60,
        )
        for inv in table.column("id").to_pylist():
            seen[inv] += 1
            if PARTITIONS.of_id(inv) != p:
                foreign.append(inv)
    want = Tally(key for key, _ in acked)
    deadline = time.monotonic() + 60
    while True:  # sends run on after their acknowledgement: wait until every one ran
        counters = {k: rt.call(apps.get, key=k) for k in KEYS}
        if counters == {k: want[k] for k in KEYS} or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    report(
        {
            "partitions": [where(namespace, p) for p in PARTITIONS],
            "cli": partitions_cli(namespace),
            "nodes": sorted(n["NodeID"] for n in ray.nodes() if n["Alive"]),
            "acked": len(acked),
            "distinct": len({inv for _, inv in acked}),
            "not_once": {inv: seen[inv] for _, inv in acked if seen[inv] != 1},
            "unacked_in_journal": len(set(seen) - {inv for _, inv in acked}),
            "foreign": foreign,
            "counters": counters,
            "want": {k: want[k] for k in KEYS},
        }
    )
    rt.close()


def rebalance(address: str, namespace: str, nodes: str) -> None:
    """Once ``nodes`` nodes are alive, ``Runtime.rebalance_partitions``; report what moved and
    where each partition's journal runs now."""
    rt = Runtime.connect(namespace=namespace, address=address)
    deadline = time.monotonic() + 60
    while sum(1 for n in ray.nodes() if n["Alive"]) < int(nodes):
        assert time.monotonic() < deadline, "the new node did not join"
        time.sleep(0.2)
    moved = rt.rebalance_partitions()

    def node(name: str) -> str:
        actor = ray.get_actor(name, namespace=namespace)
        return str(
            ray.get(actor.__ray_call__.remote(lambda _s: ray.get_runtime_context().get_node_id()))
        )

    report(
        {
            "moved": moved,
            "partitions": [where(namespace, p) for p in PARTITIONS],
            "schedulers": [node(PARTITIONS.scheduler(p)) for p in PARTITIONS],
            "nodes": sorted(n["NodeID"] for n in ray.nodes() if n["Alive"]),
        }
    )
    rt.close()


def partitions_cli(namespace: str) -> list[dict[str, Any]]:
    """``raystate partitions`` of the runtime, as its JSON lines (this driver's Ray)."""
    from typer.testing import CliRunner

    from actors.client.cli import app

    result = CliRunner().invoke(app, ["partitions", "-f", "json", "--namespace", namespace])
    assert result.exit_code == 0, (result.stdout, result.exception)
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


COMMANDS: dict[str, Callable[..., None]] = {"load": load, "check": check, "rebalance": rebalance}

if __name__ == "__main__":
    COMMANDS[sys.argv[1]](*sys.argv[2:])

"""Driver processes for the cluster test (``test_cluster.py``), each run against a two-node Ray
cluster started with ``ray start``:

- ``start ADDRESS NAMESPACE DATA_DIR``: starts the runtime with ``Runtime.start(...,
  address=ADDRESS)``, calls handlers and exits (the runtime's actors keep running);
- ``connect ADDRESS NAMESPACE``: a second driver reaches it with ``Runtime.connect``, calls
  handlers, and reports on which nodes the runtime's actors run.

Each prints one line ``RESULT <json>`` (worker logs may share stdout).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import ray

from actors import Runtime
from actors.cluster.names import JOURNAL, host_name
from tests.integration import apps

SERVICES = [apps.counter]
KEYS = [f"k{i}" for i in range(8)]


def report(result: dict[str, Any]) -> None:
    print("RESULT " + json.dumps(result), flush=True)


def alive_nodes() -> list[dict[str, Any]]:
    return [n for n in ray.nodes() if n["Alive"]]


POOL_SIZE = 4


def start(address: str, namespace: str, data_dir: str) -> None:
    # two hosts per node (the default would be one); the test checks that the pool covers
    # both nodes, though the worker joined moments ago (Runtime.start moves misplaced hosts)
    rt = Runtime.start(
        SERVICES, data_dir=data_dir, namespace=namespace, address=address, pool_size=POOL_SIZE
    )
    results = [rt.call(apps.add, key=k, arg=i + 1) for i, k in enumerate(KEYS)]
    report(
        {
            "node": ray.get_runtime_context().get_node_id(),
            "pool_size": rt.pool_size,
            "nodes": len(alive_nodes()),
            "results": results,
        }
    )
    rt.close()


def node_of(name: str, namespace: str) -> str:
    actor = ray.get_actor(name, namespace=namespace)
    return ray.get(
        actor.__ray_call__.remote(lambda _self: ray.get_runtime_context().get_node_id()), timeout=60
    )


def connect(address: str, namespace: str) -> None:
    rt = Runtime.connect(namespace=namespace, address=address)
    results = [rt.call("Counter/add", key=k, arg=100) for k in KEYS]
    results += [rt.object(apps.counter, k).get() for k in KEYS]
    heads = [n["NodeID"] for n in alive_nodes() if "node:__internal_head__" in n["Resources"]]
    report(
        {
            "results": results,
            "nodes": sorted(n["NodeID"] for n in alive_nodes()),
            "head": heads[0] if len(heads) == 1 else heads,
            "journal": node_of(JOURNAL, namespace),
            "hosts": {
                host_name(d.name, i): node_of(host_name(d.name, i), namespace)
                for d in SERVICES
                for i in range(rt.pool_size)
            },
        }
    )
    rt.close()


if __name__ == "__main__":
    {"start": start, "connect": connect}[sys.argv[1]](*sys.argv[2:])

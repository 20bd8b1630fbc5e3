"""Running on a real Ray cluster: a head (``ray start --head``) and a second node
(``ray start --address``) on this machine (``raycluster``); one driver process starts the
runtime, a second one connects with ``Runtime.connect``, the ``raystate`` CLI queries it with
``--address``. Pooled hosts spread over both nodes; the journal stays on the head, next to its
data dir.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.raycluster import BIN, HAS_PROC, finish, spawn, two_nodes

pytestmark = pytest.mark.skipif(not HAS_PROC, reason="teardown reads the process tree from /proc")

DRIVER = Path(__file__).with_name("cluster_driver.py")
KEYS = [f"k{i}" for i in range(8)]


@pytest.fixture
def cluster() -> Iterator[str]:
    """A head and a worker node on this machine; yields the head's address."""
    with two_nodes() as nodes:
        yield nodes.address


def driver(*args: str) -> dict:
    out = finish(spawn(sys.executable, str(DRIVER), *args))
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, out
    return json.loads(lines[0].removeprefix("RESULT "))


def json_rows(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_two_nodes_two_drivers_and_the_cli(cluster: str, tmp_path: Path) -> None:
    address, namespace, data = cluster, f"cluster-{os.getpid()}", tmp_path / "data"

    first = driver("start", address, namespace, str(data))
    assert first["nodes"] == 2
    assert first["pool_size"] == 4  # two per node (cluster_driver.POOL_SIZE)
    assert first["results"] == list(range(1, 9))
    assert (data / "journal.duckdb").is_file()

    second = driver("connect", address, namespace)
    assert second["results"] == [*range(101, 109)] * 2
    assert second["head"] == first["node"], "driver 1 did not run on the head node"
    assert second["journal"] == second["head"], "the journal is not on the head, by its data dir"
    assert len(second["hosts"]) == first["pool_size"]
    assert set(second["hosts"].values()) == set(second["nodes"]), (
        f"hosts not spread over both nodes: {second['hosts']}"
    )

    ns = ["--address", address, "--namespace", namespace, "-f", "json"]
    raystate = str(BIN / "raystate")
    listing = spawn(raystate, "invocations", "--service", "Counter", "--limit", "100", *ns)
    per_key = spawn(
        raystate,
        "sql",
        "SELECT target_service_key AS key, count(*) AS n,"
        " sum(output::INTEGER)::INTEGER AS total FROM sys_invocation"
        " WHERE target_handler_name = 'add' GROUP BY 1 ORDER BY 1",
        *ns,
    )
    state = spawn(raystate, "state", "Counter", KEYS[0], *ns)
    try:
        rows, totals = json_rows(finish(listing)), json_rows(finish(per_key))
        kept = json_rows(finish(state))
        described = json.loads(finish(spawn(raystate, "describe", rows[0]["id"], *ns)))
    finally:
        for proc in (listing, per_key, state):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert sorted(r["target"] for r in rows) == sorted(
        f"Counter/{k}/{h}" for k in KEYS for h in ("add", "add", "get")
    )
    assert {r["status"] for r in rows} == {"completed"}
    assert totals == [{"key": k, "n": 2, "total": 2 * (i + 1) + 100} for i, k in enumerate(KEYS)]
    assert kept == [{"key": "count", "value": 101}], kept  # k0: add 1, then add 100
    assert described["invocation"]["id"] == rows[0]["id"]

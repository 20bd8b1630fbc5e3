"""Running on a real Ray cluster: a head (``ray start --head``) and a second node
(``ray start --address``) on this machine, each with its own ports and temp dir; one driver
process starts the runtime, a second one connects with ``Runtime.connect``, the ``raystate`` CLI
queries it with ``--address``. Pooled hosts spread over both nodes; the journal stays on the head,
next to its data dir.

Each node runs in the foreground (``ray start --block``) as the leader of its own process group.
Teardown stops those leaders and the processes they spawned (Ray gives actor workers process
groups of their own, so those are found through the process tree) and nothing else: never a
blanket ``ray stop``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="teardown reads the process tree from /proc"
)

DRIVER = Path(__file__).with_name("cluster_driver.py")
BIN = Path(sys.executable).parent
ANSI = re.compile(r"\x1b\[[0-9;]*m")
NODE_CPUS = 2
KEYS = [f"k{i}" for i in range(8)]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAYSTATE_NAMESPACE")}
    return {**env, "RAY_AUTH_MODE": "disabled", **extra}


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports that are free right now (held open together while picked)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("", 0))
        return [s.getsockname()[1] for s in socks]


# -- the process tree, from /proc: (pid, start time) identifies a process across pid reuse --


Proc = tuple[int, int]


def processes() -> dict[Proc, tuple[int, int]]:
    """Every live (non-zombie) process: (pid, start time) -> (parent pid, process group)."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rpartition(")")[2].split()
            if fields[0] != "Z":
                table[(int(stat.parent.name), int(fields[19]))] = (int(fields[1]), int(fields[2]))
    return table


def family(leaders: list[int]) -> set[Proc]:
    """The live processes in the leaders' process groups, and all their descendants."""
    table = processes()
    found = {p for p, (_, pgid) in table.items() if pgid in leaders}
    pids = {pid for pid, _ in found}
    while True:
        more = {p for p, (ppid, _) in table.items() if ppid in pids and p not in found}
        if not more:
            return found
        found |= more
        pids |= {pid for pid, _ in more}


def alive(procs: set[Proc]) -> set[Proc]:
    return procs & processes().keys()


class Node:
    """One ``ray start --block`` process, the leader of its own process group."""

    def __init__(self, name: str, temp_root: Path, args: list[str]) -> None:
        self.name = name
        self.log = temp_root / f"{name}.log"
        flags = [
            "--node-manager-port",
            "--object-manager-port",
            "--dashboard-agent-listen-port",
            "--dashboard-agent-grpc-port",
            "--metrics-export-port",
            "--runtime-env-agent-port",
        ]
        ports = [
            x
            for flag, port in zip(flags, free_ports(len(flags)), strict=True)
            for x in (flag, str(port))
        ]
        cmd = [
            str(BIN / "ray"),
            "start",
            "--block",
            "--num-cpus",
            str(NODE_CPUS),
            "--object-store-memory",
            str(100 * 2**20),
            "--temp-dir",
            str(temp_root / name),
            "--include-log-monitor=false",
            "--disable-usage-stats",
            "--log-color=false",
            *ports,
            *args,
        ]
        # without the drain timeout, SIGTERM stops the node at once instead of after 30 s
        env = clean_env(PYTHONUNBUFFERED="1", RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0")
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    def output(self) -> str:
        return ANSI.sub("", self.log.read_text())

    def check_running(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(
                f"{self.name} node exited ({self.proc.returncode}):\n{self.output()}"
            )

    def wait_for(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        """Wait until the node's output matches ``pattern``; fail if the node exits first."""
        deadline = time.monotonic() + timeout
        while not (match := re.search(pattern, self.output())):
            self.check_running()
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name} node: no {pattern!r} within {timeout}s:\n{self.output()}"
                )
            time.sleep(0.1)
        return match


def stop(nodes: list[Node], timeout: float = 30.0) -> None:
    """SIGTERM each node's ``ray start`` (it stops its node's processes, and the raylet its
    workers); SIGKILL whatever of theirs is left at the deadline. Fails if anything survives."""
    ours = family([n.proc.pid for n in nodes])
    for node in nodes:
        with contextlib.suppress(ProcessLookupError):
            node.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive(ours) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid, _ in alive(ours):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for node in nodes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            node.proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while alive(ours) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(ours), f"processes left behind: {sorted(alive(ours))}"


def _ray_client_missing() -> bool:
    from ray._private.utils import get_ray_client_dependency_error

    return get_ray_client_dependency_error() is not None


@pytest.fixture
def cluster() -> Iterator[str]:
    """A head and a worker node on this machine; yields the head's address."""
    # a short temp root: Ray's Unix socket paths below it must stay under 108 characters
    temp_root = Path(tempfile.mkdtemp(prefix="rs-", dir="/tmp"))
    nodes: list[Node] = []
    try:
        gcs, client, dashboard = free_ports(3)
        # a Ray client server starts (on 10001 by default) only where ray[client] is installed;
        # there, give it a free port; without it, the flag is refused
        client_flags = [] if _ray_client_missing() else ["--ray-client-server-port", str(client)]
        head = Node(
            "head",
            temp_root,
            [
                "--head",
                "--port",
                str(gcs),
                *client_flags,
                "--include-dashboard=false",
                "--dashboard-port",
                str(dashboard),
            ],
        )
        nodes.append(head)
        address = head.wait_for(r"ray start --address='([^']+)'", timeout=90).group(1)
        worker = Node("worker", temp_root, ["--address", address])
        nodes.append(worker)
        worker.wait_for("Ray runtime started", timeout=90)
        yield address
    finally:
        try:
            stop(nodes)
        finally:
            shutil.rmtree(temp_root, ignore_errors=True)


def spawn(*cmd: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env()
    )


def finish(proc: subprocess.Popen[str], timeout: float = 90) -> str:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    assert proc.returncode == 0, f"{proc.args} -> {proc.returncode}:\n{out}\n{err}"
    return out


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

"""A Ray cluster of two nodes on this machine, for tests that run raystate on a real cluster
(``test_cluster.py``, ``test_node_loss.py``): a head (``ray start --head``) and a worker node
(``ray start --address``), each with its own ports and temp dir.

Each node runs in the foreground (``ray start --block``) as the leader of its own process group.
Teardown stops those leaders and the processes they spawned (Ray gives actor workers process
groups of their own, so those are found through the process tree) and nothing else: never a
blanket ``ray stop``. The process tree is read from ``/proc`` (Linux only).
"""

from __future__ import annotations

import contextlib
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
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent
ANSI = re.compile(r"\x1b\[[0-9;]*m")
NODE_CPUS = 2
HAS_PROC = sys.platform.startswith("linux")


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


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (or is stopped): not gone, not a zombie."""
    return any(p == pid for p, _ in processes())


def end(proc: Proc) -> None:
    """SIGKILL ``proc`` if it still runs: a worker process that outlived its raylet has left
    the node's process tree (``stop`` no longer finds it)."""
    if proc in processes():
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc[0], signal.SIGKILL)


def command_line(pid: int) -> list[str]:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    return []


class Node:
    """One ``ray start --block`` process, the leader of its own process group. ``env``: extra
    environment of the node's processes (``RAY_<config>`` settings, say)."""

    def __init__(
        self, name: str, temp_root: Path, args: list[str], env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.log = temp_root / f"{name}.log"
        self.temp_dir = temp_root / name
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
            str(self.temp_dir),
            "--include-log-monitor=false",
            "--disable-usage-stats",
            "--log-color=false",
            *ports,
            *args,
        ]
        # without the drain timeout, SIGTERM stops the node at once instead of after 30 s
        environ = clean_env(
            PYTHONUNBUFFERED="1", RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0", **(env or {})
        )
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=environ, start_new_session=True
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

    def logs(self) -> str:
        """The text of this node's session logs (its workers' output among them)."""
        texts = []
        for path in sorted(self.temp_dir.glob("session_latest/logs/*")):
            with contextlib.suppress(OSError, UnicodeDecodeError):
                if path.is_file():
                    texts.append(path.read_text())
        return "\n".join(texts)

    def raylet(self) -> int:
        """The pid of this node's raylet (a child of its ``ray start``)."""
        found = [
            pid
            for pid, _ in family([self.proc.pid])
            if Path((command_line(pid) or [""])[0]).name == "raylet"
        ]
        assert len(found) == 1, f"{self.name} node: raylets {found}"
        return found[0]


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


@dataclass
class Cluster:
    address: str  # the head's GCS address, for ``ray.init``/``Runtime.start(address=)``
    head: Node
    worker: Node | None  # the first worker (None: a head alone, so far)
    temp_root: Path
    nodes: list[Node]  # every node, stopped at the end

    def join(self, name: str) -> Node:
        """Start another node that joins the cluster (stopped with the others)."""
        node = Node(name, self.temp_root, ["--address", self.address])
        self.nodes.append(node)
        node.wait_for("Ray runtime started", timeout=90)
        return node


@contextlib.contextmanager
def two_nodes(head_env: dict[str, str] | None = None, workers: int = 1) -> Iterator[Cluster]:
    """A head and a worker node on this machine (``workers=0``: the head alone, for a test
    that adds nodes with ``Cluster.join``), stopped (and their temp dirs removed) at the end.
    ``head_env``: extra environment of the head's processes (the GCS's settings)."""
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
            env=head_env,
        )
        nodes.append(head)
        address = head.wait_for(r"ray start --address='([^']+)'", timeout=90).group(1)
        cluster = Cluster(address, head, None, temp_root, nodes)
        if workers:
            cluster.worker = cluster.join("worker")
        yield cluster
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
    assert proc.returncode == 0, f"{proc.args!r} -> {proc.returncode}:\n{out}\n{err}"
    return out

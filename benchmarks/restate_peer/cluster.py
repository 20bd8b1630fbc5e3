"""A private Restate for one benchmark run: restate-server on a fresh temporary data dir and
free local ports, the SDK app in its own process, the deployment registered.

The server runs with its defaults (the dev profile, 24 partitions), as Restate's published
figures were taken, except for logging (warnings only) and TCP-only listening.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"


@dataclass
class Peer:
    server: subprocess.Popen[bytes]
    sdk: subprocess.Popen[bytes]
    ingress_port: int
    admin_port: int
    sdk_port: int
    data_dir: str
    log: IO[bytes]

    @property
    def admin_url(self) -> str:
        return f"http://{HOST}:{self.admin_port}"

    def pids(self) -> dict[str, int]:
        return {"restate": self.server.pid, "sdk": self.sdk.pid}

    def log_tail(self, lines: int = 5) -> str:
        self.log.flush()
        text = Path(self.log.name).read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:])


def free_ports(n: int) -> list[int]:
    """Ports free right now (held open together, so they differ)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind((HOST, 0))
        return [s.getsockname()[1] for s in socks]


def admin(url: str, path: str, payload: Any = None, timeout: float = 30.0) -> Any:
    """A JSON request to Restate's admin API (POST when there is a payload)."""
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(
        url + path,
        data=data,
        headers={"content-type": "application/json", "accept": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = response.read()
    return json.loads(body) if body else None


def query(url: str, sql: str) -> list[dict[str, Any]]:
    """Rows of a SQL query on Restate's introspection tables (admin ``POST /query``)."""
    return admin(url, "/query", {"query": sql})["rows"]


def _wait(what: str, ready: Any, peer: Peer, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        for proc, name in ((peer.server, "restate-server"), (peer.sdk, "the SDK process")):
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {proc.returncode} while waiting for "
                    f"{what}: {peer.log_tail()}"
                )
        try:
            if ready():
                return
        except (OSError, urllib.error.URLError, ValueError) as e:
            last = f"{type(e).__name__}: {e}"
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what} ({last}): {peer.log_tail()}")


def _connects(port: int) -> bool:
    with socket.create_connection((HOST, port), timeout=1):
        return True


def _answers(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status == 200


def _registered(peer: Peer, http1: bool) -> bool:
    payload = {"uri": f"http://{HOST}:{peer.sdk_port}", "force": True}
    if http1:
        payload["use_http_11"] = True
    admin(peer.admin_url, "/deployments", payload)
    return True


def _ingress_serves(peer: Peer) -> bool:
    """The ingress knows the services once a call goes through (it learns them shortly after
    the registration)."""
    conn = http.client.HTTPConnection(HOST, peer.ingress_port, timeout=10)
    try:  # http.client sends no Content-Type for an empty body, as this handler needs
        conn.request("POST", "/BenchCounter/__ready__/get", body=b"")
        return conn.getresponse().status == 200
    finally:
        conn.close()


@contextlib.contextmanager
def running(binary: Path, http1: bool = False) -> Iterator[Peer]:
    """Start everything, yield it, stop it and remove the data dir."""
    with (
        tempfile.TemporaryDirectory(prefix="restate-peer-") as data_dir,
        open(Path(data_dir) / "peer.log", "wb") as log,
    ):
        ingress, admin_port, node, sdk_port = free_ports(4)
        env = {
            **os.environ,
            "RESTATE_ADMIN__BIND_ADDRESS": f"{HOST}:{admin_port}",
            "RESTATE_INGRESS__BIND_ADDRESS": f"{HOST}:{ingress}",
            "RESTATE_LOG_FILTER": "warn",
            "RESTATE_LOG_DISABLE_ANSI_CODES": "true",
            "RESTATE_DISABLE_TELEMETRY": "true",
        }
        server = subprocess.Popen(
            [
                str(binary),
                "--no-logo",
                "--listen-mode",
                "tcp",
                "--node-name",
                "bench",
                "--base-dir",
                str(Path(data_dir) / "restate-data"),
                "--bind-address",
                f"{HOST}:{node}",
            ],
            cwd=data_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        sdk_env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
        }
        sdk = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.restate_peer.serve", "--port", str(sdk_port)],
            cwd=ROOT,
            env=sdk_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        peer = Peer(server, sdk, ingress, admin_port, sdk_port, data_dir, log)
        try:
            _wait("the SDK process", lambda: _connects(sdk_port), peer)
            _wait("the admin API", lambda: _answers(peer.admin_url + "/health"), peer)
            _wait("the registration", lambda: _registered(peer, http1), peer)
            _wait("the ingress", lambda: _ingress_serves(peer), peer)
            yield peer
        finally:
            for proc in (sdk, server):
                proc.terminate()
            for proc in (sdk, server):
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

"""What other local processes can do to a running runtime (issue 24): other users read none of
its files nor reach its sockets, and a process of the same user that floods the journal's
socket without the token neither wedges it nor runs it out of file descriptors."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import ray

from actors import Runtime
from benchmarks.neighbour import oversized
from journal.transport.wire import MAX_HANDSHAKES
from tests.conftest import assert_eventually, loose_paths, loosen
from tests.integration import apps
from tests.integration.helpers import host_of, journal_of


def socket_of(actor) -> str:
    _, address, _ = ray.get(actor.wire_endpoint.remote())
    return address


def assert_owner_only_socket(address: str) -> None:
    assert not address.startswith("\0"), "a socket in the abstract namespace: anyone reaches it"
    path = Path(address)
    directory = path.parent.lstat()
    assert stat.S_ISDIR(directory.st_mode) and directory.st_uid == os.getuid()
    assert stat.S_IMODE(directory.st_mode) == 0o700
    assert path.is_socket() and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_data_dir_and_the_sockets_are_owner_only(start_runtime, tmp_path) -> None:
    data = tmp_path / "data"
    rt: Runtime = start_runtime(data_dir=data)
    assert rt.call(apps.add, key="private", arg=2) == 2
    assert rt.sql("SELECT count(*) AS n FROM state").column("n")[0].as_py() >= 1
    assert loose_paths(data) == []  # journal.duckdb and its .wal, wal/, config, secret
    assert_owner_only_socket(socket_of(journal_of(rt)))
    assert_owner_only_socket(socket_of(host_of(rt, "Counter", "private")))
    rt.shutdown()

    loosen(data)  # as an older version left it: tightened when the runtime starts on it
    rt = start_runtime(data_dir=data)
    assert rt.call(apps.add, key="private", arg=1) == 3
    assert loose_paths(data) == []


def connect(address: str) -> socket.socket | None:
    """A connection that sends nothing; None while the server's backlog is full."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        sock.connect(address)
    except BlockingIOError:
        sock.close()
        return None
    return sock


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_a_flood_without_the_token_leaves_the_journal_serving(shared_rt: Runtime) -> None:
    """Idle connections that never send the token (20,000 of them exhausted the journal's
    file descriptors and wedged the runtime) and a first frame claiming 1 GiB (the journal
    grew by 2 GB): the journal holds a bounded number, refuses the frame unread, and serves."""
    rt = shared_rt
    assert rt.call(apps.add, key="flooded", arg=1) == 1  # the journal's socket is up
    journal = journal_of(rt)
    pid = ray.get(journal.info.remote())["pid"]
    address = socket_of(journal)
    before = _fds(pid)
    idle = []
    try:
        for _ in range(8 * MAX_HANDSHAKES):
            idle.append(
                assert_eventually(
                    lambda: connect(address),
                    timeout=10,
                    interval=0.01,
                    message="a connection accepted",
                )
            )
        assert rt.call(apps.add, key="flooded", arg=1) == 2
        assert rt.sql("SELECT 1 AS one").column("one")[0].as_py() == 1
        assert _fds(pid) <= before + MAX_HANDSHAKES + 32  # not one per idle connection
        assert oversized(address), "the journal read a first frame bigger than the token"
        assert rt.call(apps.add, key="flooded", arg=1) == 3
    finally:
        for sock in idle:
            sock.close()

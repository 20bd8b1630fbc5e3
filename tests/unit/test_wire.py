"""The Unix-socket fast path (``journal.transport.wire``) without Ray: calls, errors, refusals,
breaks."""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import os
import socket
import stat
import struct
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from journal import private
from journal.transport import wire
from journal.transport.remote import RemoteActor
from journal.transport.wire import (
    MAX_HANDSHAKES,
    Unsendable,
    WireClient,
    WireClosed,
    WireRoute,
    WireServer,
)


class Target:
    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.calls: list[str] = []

    async def slow(self, x: int) -> int:
        await self.gate.wait()
        return x * 2

    def fast(self, x: int) -> int:
        self.calls.append("fast")
        return x + 1

    def fails(self) -> None:
        raise KeyError("missing")

    def _private(self) -> str:
        self.calls.append("private")
        return "secret"

    def big(self, size: int) -> bytes:
        self.calls.append("big")
        return b"x" * size

    def unpicklable(self) -> Any:
        self.calls.append("unpicklable")
        return lambda: None


def test_calls_run_side_by_side_and_errors_come_back_as_raised() -> None:
    async def main() -> None:
        target = Target()
        server = WireServer(target)
        await server.serve()
        client = WireClient(server.address, server.token)
        slow = asyncio.create_task(client.call("slow", 21))
        assert await client.call("fast", 1) == 2  # answered while ``slow`` waits
        target.gate.set()
        assert await slow == 42
        with pytest.raises(KeyError):
            await client.call("fails")
        with pytest.raises(AttributeError):
            await client.call("_private")
        assert target.calls == ["fast"]
        await client.aclose()

    asyncio.run(asyncio.wait_for(main(), 10))


def test_a_wrong_token_is_refused_before_any_call() -> None:
    async def main() -> None:
        target = Target()
        server = WireServer(target)
        await server.serve()
        client = WireClient(server.address, "not-the-token")
        with pytest.raises(WireClosed):
            await client.call("fast", 1)
        assert target.calls == []
        assert client.closed

    asyncio.run(asyncio.wait_for(main(), 10))


def test_a_broken_connection_fails_the_calls_in_flight() -> None:
    async def main() -> None:
        target = Target()
        server = WireServer(target)
        await server.serve()
        client = WireClient(server.address, server.token)
        slow = asyncio.create_task(client.call("slow", 1))
        while not client._pending:  # sent
            await asyncio.sleep(0.01)
        assert client._writer is not None
        client._writer.transport.abort()  # as when the serving process dies
        with pytest.raises(WireClosed):
            await slow
        with pytest.raises(WireClosed):
            await client.call("fast", 1)

    asyncio.run(asyncio.wait_for(main(), 10))


def test_no_server_at_the_address_is_a_closed_wire() -> None:
    async def main() -> None:
        client = WireClient("\0raystate-wire-nobody-here", "token")
        with pytest.raises(WireClosed):
            await client.call("fast", 1)

    asyncio.run(asyncio.wait_for(main(), 10))


class Endpoint:
    """An actor handle's ``wire_endpoint`` as ``WireRoute`` calls it; counts the questions."""

    def __init__(self, server: WireServer, node: str) -> None:
        self.server, self.node, self.asked = server, node, 0
        self.wire_endpoint = self

    def remote(self) -> Any:
        async def answer() -> tuple[str, str, str]:
            self.asked += 1
            await asyncio.sleep(0.01)  # as a Ray call takes a while
            return self.node, self.server.address, self.server.token

        return answer()


def test_a_route_asks_once_and_replaces_only_a_broken_client() -> None:
    async def main() -> None:
        server = WireServer(Target())
        await server.serve()
        handle = Endpoint(server, "node-a")
        route = WireRoute(node=lambda: "node-a")
        first = await asyncio.gather(*(route.client(handle) for _ in range(5)))
        assert handle.asked == 1 and all(c is first[0] for c in first)
        old = first[0]
        assert old is not None and await old.call("fast", 1) == 2
        assert old._writer is not None
        old._writer.transport.abort()  # the actor died (its successor serves the same here)
        with pytest.raises(WireClosed):
            await old.call("fast", 1)
        new = await route.client(handle)
        assert new is not None and new is not old and handle.asked == 2
        assert await new.call("fast", 2) == 3
        old.close()  # a late failure of the old client leaves the new one alone
        assert not new.closed and await route.client(handle) is new
        assert await new.call("fast", 3) == 4
        await route.aclose()

    asyncio.run(asyncio.wait_for(main(), 10))


def test_an_actor_on_another_node_gets_no_client() -> None:
    async def main() -> None:
        server = WireServer(Target())
        handle = Endpoint(server, "node-b")
        route = WireRoute(node=lambda: "node-a")
        assert await route.client(handle) is None
        assert await route.client(handle) is None and handle.asked == 1

    asyncio.run(asyncio.wait_for(main(), 10))


def test_each_event_loop_gets_a_client_of_its_own() -> None:
    """A driver calls from its own loop and from the runtime client's: a client's futures
    belong to one loop, so one route must not hand a client across loops."""
    import threading

    ready = threading.Event()
    box: dict[str, Any] = {}

    def serve() -> None:
        async def main() -> None:
            server = WireServer(Target())
            await server.serve()
            box["server"] = server
            ready.set()
            await asyncio.sleep(5)

        asyncio.run(main())

    threading.Thread(target=serve, daemon=True).start()
    assert ready.wait(5)
    handle = Endpoint(box["server"], "node-a")
    route = WireRoute(node=lambda: "node-a")

    async def use() -> tuple[Any, int]:
        client = await route.client(handle)
        assert client is not None
        return client, await client.call("fast", 1)

    first, second = asyncio.run(use()), asyncio.run(use())
    assert first[1] == second[1] == 2
    assert first[0] is not second[0] and handle.asked == 2


# -- what a careless or hostile local process can do without the token ----------------------


async def _served(target: Target | None = None, **limits: Any) -> tuple[WireServer, WireClient]:
    """A server serving ``target`` (with ``limits``), and a client of it."""
    server = WireServer(target or Target(), **limits)
    await server.serve()
    return server, WireClient(server.address, server.token)


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "raystate.wire" and r.levelno >= logging.WARNING
    ]


def test_idle_connections_without_the_token_leave_the_server_serving_with_bounded_fds() -> None:
    """Idle connections that never send the token (the issue: 20,000 of them exhausted the
    journal's file descriptors): the server holds a bounded number, and real calls go on."""

    async def main() -> None:
        server = WireServer(Target())
        await server.serve()
        before = _fds()
        idle = [
            await asyncio.open_unix_connection(server.address) for _ in range(5 * MAX_HANDSHAKES)
        ]
        client = WireClient(server.address, server.token)
        assert await client.call("fast", 1) == 2  # served with all of them connected
        # The idle sockets are this process's too: what is left is the server's.
        assert _fds() - before - len(idle) <= MAX_HANDSHAKES + 2
        assert server.connections <= MAX_HANDSHAKES + 1  # the real client, too
        closed = 0
        for reader, _ in idle:  # the dropped ones see their connection closed
            closed += await asyncio.wait_for(reader.read(), 10) == b""
            if closed == len(idle) - MAX_HANDSHAKES:
                break
        assert closed == len(idle) - MAX_HANDSHAKES
        assert await client.call("fast", 2) == 3
        for _, writer in idle:
            writer.close()
        await client.aclose()
        server.close()

    asyncio.run(asyncio.wait_for(main(), 60))


def test_a_connection_that_sends_no_token_is_closed_at_the_handshake_deadline() -> None:
    async def main() -> None:
        server = WireServer(Target(), handshake_timeout=0.2)
        await server.serve()
        reader, writer = await asyncio.open_unix_connection(server.address)
        writer.write(struct.pack("!IQ", len(server.token), 0) + b"ab")  # a part, then nothing
        assert await asyncio.wait_for(reader.read(), 10) == b""
        assert server.dropped == 1 and server.connections == 0
        writer.close()
        server.close()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_an_oversized_frame_before_the_token_is_refused_unread() -> None:
    """A first frame claiming 512 MiB (a frame could claim 1 GiB, and the journal went from
    164 MB to 2.2 GB): the server closes the connection without reading it."""
    chunk = b"\0" * (1 << 20)

    async def main() -> None:
        server = WireServer(Target())
        await server.serve()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(server.address)

        def flood() -> int:
            sent = 0
            try:
                sock.sendall(struct.pack("!IQ", 512 << 20, 0))
                for _ in range(64):
                    sock.sendall(chunk)
                    sent += len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass
            return sent

        tracemalloc.start()
        try:
            sent = await asyncio.to_thread(flood)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            sock.close()
        assert sent < 64 * len(chunk)  # refused, not read
        assert peak < 8 << 20
        client = WireClient(server.address, server.token)
        assert await client.call("fast", 1) == 2
        await client.aclose()
        server.close()

    asyncio.run(asyncio.wait_for(main(), 60))


def test_connections_beyond_the_cap_are_refused_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        server, first = await _served(max_connections=3)
        clients = [first, *(WireClient(server.address, server.token) for _ in range(2))]
        for c in clients:
            assert await c.call("fast", 1) == 2
        for _ in range(30):
            reader, writer = await asyncio.open_unix_connection(server.address)
            assert await asyncio.wait_for(reader.read(), 10) == b""
            writer.close()
        assert server.refused == 30
        assert len(_warnings(caplog)) == 1
        for c in clients:  # the real clients go on
            assert await c.call("fast", 2) == 3
            await c.aclose()
        server.close()

    with caplog.at_level(logging.WARNING, logger="raystate.wire"):
        asyncio.run(asyncio.wait_for(main(), 30))


def test_accept_errors_are_retried_and_logged_rarely(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out of file descriptors, accept fails while the connection waits: the journal logged
    368,053 such errors in 2.5 minutes. One warning, and the connection is served after."""
    monkeypatch.setattr(wire, "ACCEPT_RETRY_S", 0.001)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        real_accept = loop.sock_accept
        failures = 0

        async def sock_accept(sock: socket.socket) -> Any:
            nonlocal failures
            if failures < 50:
                failures += 1
                raise OSError(errno.EMFILE, "Too many open files")
            return await real_accept(sock)

        monkeypatch.setattr(loop, "sock_accept", sock_accept)
        server, client = await _served()
        assert await client.call("fast", 1) == 2
        assert failures == 50
        assert len(_warnings(caplog)) == 1
        await client.aclose()
        server.close()

    with caplog.at_level(logging.WARNING, logger="raystate.wire"):
        asyncio.run(asyncio.wait_for(main(), 30))


def test_the_socket_is_a_file_in_an_owner_only_directory() -> None:
    """Not Linux's abstract namespace, which every process of every user can reach."""

    async def main() -> None:
        server = WireServer(Target())
        await server.serve()
        path = Path(server.address)
        assert not server.address.startswith("\0") and path.is_socket()
        directory = path.parent.lstat()
        assert stat.S_ISDIR(directory.st_mode) and directory.st_uid == os.getuid()
        assert stat.S_IMODE(directory.st_mode) == 0o700
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert len(os.fsencode(server.address)) <= 107
        server.close()
        assert not path.exists()

    asyncio.run(asyncio.wait_for(main(), 10))


def test_a_socket_left_by_a_dead_process_is_removed() -> None:
    directory = private.socket_dir(private.SOCKET_NAME_MAX)
    pid = os.fork()
    if pid == 0:  # a process that makes a socket and dies without removing it
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(str(directory / f"wire-{os.getpid()}-deadbeefdeadbeef.sock"))
        os._exit(0)
    os.waitpid(pid, 0)
    path = directory / f"wire-{pid}-deadbeefdeadbeef.sock"
    assert path.exists()
    private._swept.discard(directory)
    private.sweep_stale(directory)
    assert not path.exists()


# -- replies (and requests) the socket cannot carry -----------------------------------------


def test_a_reply_too_big_fails_only_its_own_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """Over the frame limit (1 GiB; 4 GiB and more raised ``struct.error`` in the server and
    the caller waited forever): that call gets a clear error; the calls beside it on the same
    connection, and the connection, go on."""
    monkeypatch.setattr(wire, "MAX_FRAME", 1 << 20)

    async def main() -> None:
        target = Target()
        server, client = await _served(target)
        slow = asyncio.create_task(client.call("slow", 21))
        with pytest.raises(Unsendable, match="frame limit"):
            await client.call("big", 2 << 20)
        with pytest.raises(Unsendable, match="does not pickle"):
            await client.call("unpicklable")
        assert await client.call("big", 10) == b"x" * 10
        target.gate.set()
        assert await slow == 42 and not client.closed
        with pytest.raises(Unsendable, match="arguments"):  # nor a request too big to send
            await client.call("fast", b"x" * (2 << 20))
        assert await client.call("fast", 1) == 2
        await client.aclose()
        server.close()

    asyncio.run(asyncio.wait_for(main(), 30))


async def _remote_on_this_node(
    target: Target, monkeypatch: pytest.MonkeyPatch
) -> tuple[WireServer, RemoteActor, Endpoint]:
    """A ``RemoteActor`` of ``target`` served on this node; its Ray path (a call the socket
    failed) is faked: it notes "<method> through ray" in ``target.calls``, then calls it."""
    server = WireServer(target)
    await server.serve()
    remote = RemoteActor("journal", "ns")
    remote._wire = WireRoute(node=lambda: "node-a")
    handle = Endpoint(server, "node-a")
    monkeypatch.setattr(remote, "_actor", lambda: handle)

    async def through_ray(method: str, *args: Any, **kwargs: Any) -> Any:
        target.calls.append(f"{method} through ray")
        return getattr(target, method)(*args)

    monkeypatch.setattr(remote, "_ray_call", through_ray)
    return server, remote, handle


def test_a_reply_too_big_is_not_sent_again_through_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 1 GiB SQL result broke the frame limit, the call was made again through Ray, and the
    query ran twice: now its caller gets the error, and it ran once."""
    monkeypatch.setattr(wire, "MAX_FRAME", 1 << 20)

    async def main() -> None:
        target = Target()
        server, remote, _ = await _remote_on_this_node(target, monkeypatch)
        with pytest.raises(Unsendable):
            await remote.call("big", 2 << 20)
        assert target.calls == ["big"]
        await remote.close_wire()
        server.close()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_a_closed_connection_cancels_its_calls_at_the_server() -> None:
    # a caller that gives up (its process died, its socket closed) leaves no work behind:
    # a user's SQL query, for one, is interrupted when its call is cancelled
    async def main() -> None:
        class Waiting:
            def __init__(self) -> None:
                self.started = asyncio.Event()
                self.cancelled = asyncio.Event()

            async def wait(self) -> None:
                self.started.set()
                try:
                    await asyncio.Event().wait()
                except asyncio.CancelledError:
                    self.cancelled.set()
                    raise

        target = Waiting()
        server = WireServer(target)
        await server.serve()
        client = WireClient(server.address, server.token)
        call = asyncio.create_task(client.call("wait"))
        await target.started.wait()
        await client.aclose()
        with pytest.raises(WireClosed):
            await call
        await target.cancelled.wait()

    asyncio.run(asyncio.wait_for(main(), 10))


def test_a_write_failing_with_any_socket_error_is_a_broken_wire_and_goes_through_ray(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A write to the socket of a process that died can fail with an ``OSError`` that is not a
    ``ConnectionError`` (ENOTCONN, seen in the chaos run's long mode when the journal died):
    it escaped ``WireClient.call`` as it was, so ``RemoteActor`` did not make the call again
    through Ray, and the schedule runner, whose tick asked the journal, lost that tick."""

    async def main() -> None:
        unretrieved: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: unretrieved.append(ctx))
        target = Target()
        server, remote, handle = await _remote_on_this_node(target, monkeypatch)
        assert await remote.call("fast", 1) == 2  # over the socket: connected
        client = await remote._wire.client(handle)
        assert client is not None and client._writer is not None

        async def refused() -> None:
            client.close()  # as the reading side finds the break too (the call's future fails)
            raise OSError(errno.ENOTCONN, os.strerror(errno.ENOTCONN))

        monkeypatch.setattr(client._writer, "write", lambda data: None)  # the send failed
        monkeypatch.setattr(client._writer, "drain", refused)
        assert await remote.call("fast", 2) == 3
        assert target.calls == ["fast", "fast through ray", "fast"]  # (once, through Ray)
        assert client.closed
        with pytest.raises(WireClosed):  # the client itself says so, whatever the errno
            await client.call("fast", 3)
        gc.collect()  # a failed call's future, unread, would be reported when collected
        await asyncio.sleep(0)
        assert not unretrieved, unretrieved
        server.close()

    asyncio.run(asyncio.wait_for(main(), 10))

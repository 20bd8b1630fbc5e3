"""Wire: calls to an actor on the same node over a Unix socket instead of through Ray.

A Ray call into an async actor costs the receiver much CPU (the request crosses Ray's threads
into the actor's event loop); the same request over a Unix socket costs a small fraction of it
at each end (docs/performance.md). The journal serves its methods
both ways, and a host on its node sends its commits (and reads) over the socket: see
``journal.transport.remote.RemoteJournal``. Ray still places, names and restarts the actors;
the socket is only the fast path, and any failure on it falls back to a Ray call.

Frames: a 12-byte header (payload length, request id) and a pickled payload. The first frame a
client sends is the server's token, compared before anything is unpickled: only a process that
asked the actor through Ray knows the token. The socket's file is in an owner-only directory
(``journal.private.socket_dir``), so other users cannot even connect; against a careless or
hostile process of the same user, a server bounds what a connection costs it before its token
(see ``WireServer``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import logging
import os
import pickle
import secrets
import socket
import struct
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from journal.errors import RaystateError
from journal.private import FILE_MODE, new_socket_path, remove_socket

HEADER = struct.Struct("!IQ")  # payload bytes, request id
MAX_FRAME = 1 << 30
TOKEN_HEX_BYTES = 16  # the token is twice as many hex characters: the first frame's size
HANDSHAKE_TIMEOUT_S = 5.0  # a real client sends its token with its connection
MAX_CONNECTIONS = 2048  # per server; each is a file descriptor
MAX_HANDSHAKES = 64  # connections at once that have not sent their token yet
ACCEPT_RETRY_S = 0.5  # after an accept error (out of file descriptors, say)
LOG_EVERY_S = 60.0  # a flood of refusals or accept errors: one warning a minute
BACKLOG = 128
ACCEPT_BURST = 32  # connections accepted in one go before the loop's other work
log = logging.getLogger("raystate.wire")


def _ray_node() -> str:
    import ray

    return str(ray.get_runtime_context().get_node_id())


class WireClosed(RaystateError, ConnectionError):
    """The connection broke: the call may or may not have been carried out."""


class Unsendable(RaystateError, RuntimeError):
    """A request or reply the socket cannot carry (over ``MAX_FRAME`` bytes, or not picklable).
    Only its own call fails, and it is not sent again through Ray as after ``WireClosed``:
    when the reply could not be sent, the method has run."""


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    size, request_id = HEADER.unpack(await reader.readexactly(HEADER.size))
    if size > MAX_FRAME:
        raise WireClosed(f"frame of {size} bytes")
    return request_id, await reader.readexactly(size)


def _frame(request_id: int, payload: bytes) -> bytes:
    return HEADER.pack(len(payload), request_id) + payload


def _reply(method: object, ok: bool, value: Any) -> bytes:
    """The payload answering a call; one that cannot be sent becomes an ``Unsendable`` error
    for its caller alone."""
    try:
        payload = pickle.dumps((ok, value), protocol=5)
    except Exception as e:
        if not ok:  # an exception that does not pickle: send its text
            return pickle.dumps((False, RuntimeError(f"{type(value).__name__}: {value}")))
        return pickle.dumps(
            (
                False,
                Unsendable(
                    f"the result of {method!r} cannot be sent over the socket: it does not pickle "
                    f"({type(e).__name__}: {e})"
                ),
            )
        )
    if len(payload) > MAX_FRAME:
        return pickle.dumps(
            (
                False,
                Unsendable(
                    f"the result of {method!r} is {len(payload):,} bytes pickled, more than the "
                    f"socket's frame limit of {MAX_FRAME:,}: it was computed but cannot be sent"
                ),
            )
        )
    return payload


class _Throttled:
    """A warning logged at most once a period, saying how many were held back meanwhile: a
    flood of refused connections must not become a flood of log lines."""

    def __init__(self, period_s: float = LOG_EVERY_S) -> None:
        self.period_s = period_s
        self._next = 0.0
        self._held = 0

    def warn(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now < self._next:
            self._held += 1
            return
        if self._held:
            message += " (and %d more since the last such warning)"
            args = (*args, self._held)
        log.warning(message, *args)
        self._held = 0
        self._next = now + self.period_s


class WireServer:
    """Serves the public methods of ``target`` (sync or async) on a Unix socket in an
    owner-only directory.

    What a local process can cost it without the token is bounded: at most
    ``max_connections`` open at once (more are closed as they come, with a warning a minute at
    most), at most ``max_handshakes`` of them still to send their token (the oldest of those is
    dropped for a newer one, since a real client sends its token with its connection), each
    for ``handshake_timeout`` seconds at most, and a first frame that claims more bytes than
    the token has is refused unread. Accept errors (out of file descriptors) are retried after
    a pause and logged at most once a minute."""

    def __init__(
        self,
        target: object,
        *,
        max_connections: int = MAX_CONNECTIONS,
        max_handshakes: int = MAX_HANDSHAKES,
        handshake_timeout: float = HANDSHAKE_TIMEOUT_S,
    ) -> None:
        self.target = target
        self.token = secrets.token_hex(TOKEN_HEX_BYTES)
        self._token = self.token.encode()
        self.address = new_socket_path()
        self.max_connections = max_connections
        self.max_handshakes = max_handshakes
        self.handshake_timeout = handshake_timeout
        self.refused = 0  # connections closed at once: the cap was reached
        self.dropped = 0  # connections closed before their token (too slow, or the oldest)
        self._listener: socket.socket | None = None
        self._accepter: asyncio.Task[None] | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._handshaking: dict[asyncio.Task[None], None] = {}  # oldest first
        self._refusals = _Throttled()
        self._accept_errors = _Throttled()

    @property
    def connections(self) -> int:
        """Connections open now (with or without their token)."""
        return len(self._connections)

    async def serve(self) -> None:
        """Start serving (once, however many ask at once). Raises ``OSError`` if the socket
        cannot be made."""
        if self._listener is not None:
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(self.address)
            os.chmod(self.address, FILE_MODE)
            sock.listen(BACKLOG)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._listener = sock
        self._accepter = asyncio.create_task(self._accept(sock))

    async def endpoint(self) -> tuple[str, str, str]:
        """(node id, address, token), serving from now on: what an actor's
        ``wire_endpoint`` method returns to callers (``WireRoute``)."""
        await self.serve()
        return _ray_node(), self.address, self.token

    def close(self) -> None:
        """Stop serving: close the socket and every connection, and remove the socket's file."""
        if self._accepter is not None:
            self._accepter.cancel()
        for task in list(self._connections):
            task.cancel()
        if self._listener is not None:
            self._listener.close()
            remove_socket(self.address)

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(listener)
                self._admit(conn)
                for _ in range(ACCEPT_BURST - 1):  # and what else waits, as asyncio's servers
                    conn, _ = listener.accept()
                    self._admit(conn)
            except BlockingIOError:
                pass
            except OSError as e:  # out of file descriptors, say: it waits in the backlog
                self._accept_errors.warn(
                    "wire %s: cannot accept a connection (%s); trying again every %s s",
                    self.address,
                    e,
                    ACCEPT_RETRY_S,
                )
                await asyncio.sleep(ACCEPT_RETRY_S)
                continue
            await asyncio.sleep(0)  # a flood of connections must not starve the calls

    def _admit(self, conn: socket.socket) -> None:
        full = len(self._connections) >= self.max_connections
        if full or len(self._handshaking) >= self.max_handshakes:
            if not self._handshaking:  # every connection is a real client's
                conn.close()
                self.refused += 1
                self._refusals.warn(
                    "wire %s: connection refused: %d open, the cap",
                    self.address,
                    len(self._connections),
                )
                return
            oldest = next(iter(self._handshaking))
            del self._handshaking[oldest]
            oldest.cancel()
            self.dropped += 1
            self._refusals.warn(
                "wire %s: dropped a connection that had not sent its token: "
                "%d were waiting for theirs",
                self.address,
                self.max_handshakes,
            )
        task = asyncio.create_task(self._connection(conn))
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)
        self._handshaking[task] = None

    async def _connection(self, conn: socket.socket) -> None:
        me = asyncio.current_task()
        assert me is not None
        writer: asyncio.StreamWriter | None = None
        try:
            reader, writer = await asyncio.open_unix_connection(sock=conn)
            try:
                async with asyncio.timeout(self.handshake_timeout):
                    if not await self._handshake(reader):
                        return
            except TimeoutError:
                self.dropped += 1
                return
            finally:
                self._handshaking.pop(me, None)
            await self._serve(reader, writer)
        except (asyncio.IncompleteReadError, OSError, WireClosed):  # (OSError: ENOTCONN too)
            pass
        finally:
            self._handshaking.pop(me, None)
            if writer is not None:
                writer.close()
            else:
                conn.close()

    async def _handshake(self, reader: asyncio.StreamReader) -> bool:
        """The first frame is the token: a claim of any other size is refused unread."""
        size, _ = HEADER.unpack(await reader.readexactly(HEADER.size))
        if size != len(self._token):
            return False
        return hmac.compare_digest(await reader.readexactly(size), self._token)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tasks: set[asyncio.Task[None]] = set()
        try:
            while True:
                request_id, payload = await _read_frame(reader)
                task = asyncio.create_task(self._answer(writer, request_id, payload))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            for task in tasks:  # nobody waits for their answers (a user's query stops)
                task.cancel()

    async def _answer(self, writer: asyncio.StreamWriter, request_id: int, payload: bytes) -> None:
        method: object = None
        try:
            method, args = pickle.loads(payload)
            if not isinstance(method, str) or method.startswith("_"):
                raise AttributeError(f"no public method {method!r}")
            result = getattr(self.target, method)(*args)
            if asyncio.iscoroutine(result):
                result = await result
            reply = _reply(method, True, result)
        except Exception as e:
            reply = _reply(method, False, e)
        if not writer.is_closing():
            writer.write(_frame(request_id, reply))
            with contextlib.suppress(OSError):  # the caller is gone (ENOTCONN as well)
                await writer.drain()


class WireClient:
    """One connection to a ``WireServer``, with calls in flight side by side. Bound to the
    event loop that first uses it."""

    def __init__(self, address: str, token: str) -> None:
        self.address = address
        self.token = token
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[tuple[bool, Any]]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._connecting: asyncio.Lock | None = None
        self.closed = False

    @property
    def in_flight(self) -> int:
        """Calls sent (each is written before its caller first waits) and not answered."""
        return len(self._pending)

    async def call(self, method: str, *args: Any) -> Any:
        """The method's result (its exception re-raised); ``WireClosed`` if the connection
        broke before the answer came."""
        payload = pickle.dumps((method, args), protocol=5)
        if len(payload) > MAX_FRAME:
            raise Unsendable(
                f"the arguments of {method!r} are {len(payload):,} bytes pickled, "
                f"more than the socket's frame limit of {MAX_FRAME:,}"
            )
        writer = await self._connected()
        request_id = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._pending[request_id] = fut
        try:
            writer.write(_frame(request_id, payload))
            try:
                await writer.drain()
            except OSError as e:  # not only ConnectionError: a dead peer's socket gave ENOTCONN
                self.close()
                raise WireClosed(str(e)) from e
            ok, value = await fut
        finally:
            self._pending.pop(request_id, None)
            if fut.done() and not fut.cancelled():
                fut.exception()  # read: a break that the write found first leaves it unawaited
        if ok:
            return value
        raise value

    async def _connected(self) -> asyncio.StreamWriter:
        if self.closed:
            raise WireClosed("connection closed")
        if self._writer is not None:
            return self._writer
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._writer is None:
                try:
                    reader, writer = await asyncio.open_unix_connection(path=self.address)
                except OSError as e:
                    self.closed = True
                    raise WireClosed(f"cannot connect: {e}") from e
                writer.write(_frame(0, self.token.encode()))
                self._reader_task = asyncio.create_task(self._read(reader))
                self._writer = writer
        return self._writer

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                request_id, payload = await _read_frame(reader)
                fut = self._pending.get(request_id)
                if fut is not None and not fut.done():
                    fut.set_result(pickle.loads(payload))
        except (asyncio.IncompleteReadError, OSError, WireClosed):
            pass
        finally:
            self.close()

    async def aclose(self) -> None:
        """``close``, and wait until the reading task is done."""
        self.close()
        if self._reader_task is not None and self._reader_task is not asyncio.current_task():
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._reader_task

    def close(self) -> None:
        """Fail the calls in flight; later calls raise ``WireClosed``."""
        self.closed = True
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(WireClosed("connection lost"))
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()


class WireRoute:
    """A caller's route to one actor: a ``WireClient`` when the actor serves a socket
    (``wire_endpoint``) on this node, else None (use Ray). Asks the actor once, and again
    once that client is closed (the connection broke: the actor died, and its successor has
    another socket). Only a broken client is replaced, never one that other calls use. Each
    event loop has a client of its own: a client's futures belong to one loop, and a driver
    may call from its own loop and from the runtime client's at once."""

    def __init__(self, node: Callable[[], str] | None = None) -> None:
        """``node``: this process's node id (default: Ray's)."""
        self._node = node or _ray_node
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopRoute] = (
            weakref.WeakKeyDictionary()
        )

    def _here(self) -> _LoopRoute:
        loop = asyncio.get_running_loop()
        route = self._loops.get(loop)
        if route is None:
            route = self._loops[loop] = _LoopRoute()
        return route

    async def client(self, handle: Any) -> WireClient | None:
        """Raises what the Ray call to ``handle.wire_endpoint`` raises (the actor is down)."""
        route = self._here()
        if route.client is not None and route.client.closed:
            route.client, route.checked = None, False
        if not route.checked:
            if route.asking is None:  # one question, however many calls wait for the answer
                route.asking = asyncio.ensure_future(self._ask(route, handle))
            asking = route.asking
            try:
                await asyncio.shield(asking)
            finally:
                if route.asking is asking and asking.done():
                    route.asking = None
        return route.client

    async def _ask(self, route: _LoopRoute, handle: Any) -> None:
        node, address, token = await handle.wire_endpoint.remote()
        if node == self._node():
            route.client = WireClient(address, token)
        route.checked = True

    async def aclose(self) -> None:
        """Close this event loop's client."""
        route = self._loops.pop(asyncio.get_running_loop(), None)
        if route is not None and route.client is not None:
            await route.client.aclose()


@dataclass
class _LoopRoute:
    client: WireClient | None = None
    checked: bool = False
    asking: asyncio.Future[None] | None = None


class WireServed:
    """Mixin for an async actor class: serves its public methods on a socket as well, for the
    callers on its node (``WireRoute``)."""

    _wire_server: WireServer | None = None

    async def wire_endpoint(self) -> tuple[str, str, str]:
        """(node id, address, token); no node id if no socket can be made here (the
        callers then use Ray)."""
        try:
            if self._wire_server is None:
                self._wire_server = WireServer(self)
            return await self._wire_server.endpoint()
        except OSError as e:
            log.warning("no socket for %s: %s; callers use Ray", type(self).__name__, e)
            return "", "", ""

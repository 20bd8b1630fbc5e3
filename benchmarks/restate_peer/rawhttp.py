"""A minimal HTTP/1.1 keep-alive client on asyncio streams, for Restate's ingress.

Restate's published figures were taken with such a client (a raw socket per client, no HTTP
library), so its own cost stays small and alike on both sides. It speaks only what the ingress
answers: a status line, headers, and a body of ``Content-Length`` bytes or chunked.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

NO_BODY = object()
"""``Client.call``'s payload for a handler without input: an empty request body."""


class ProtocolError(Exception):
    """The peer answered something this client does not parse."""


class HttpError(Exception):
    """A response with a status other than 2xx."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}")
        self.status, self.body = status, body


@dataclass
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def keep_alive(self) -> bool:
        return self.headers.get("connection", "").lower() != "close"


def request_bytes(
    method: str,
    path: str,
    host: str,
    body: bytes = b"",
    content_type: str | None = "application/json",
) -> bytes:
    """One request; ``Content-Type`` only when there is a body (Restate rejects a typed empty
    body for a handler that takes no input)."""
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    if body and content_type:
        head.append(f"Content-Type: {content_type}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """Status and headers (names lower-cased) of a response head, without its blank line."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ProtocolError(f"bad status line {lines[0]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise ProtocolError(f"bad header line {line!r}")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


async def _chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, if any
                pass
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise ProtocolError("chunk not followed by CRLF")


async def read_response(reader: asyncio.StreamReader) -> Response:
    """The next whole response on ``reader`` (interim 1xx responses skipped)."""
    while True:
        status, headers = parse_head((await reader.readuntil(b"\r\n\r\n"))[:-4])
        if not 100 <= status < 200:
            break
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _chunked(reader)
    elif "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif status in (204, 304):
        body = b""
    else:
        raise ProtocolError(f"HTTP {status} without a length: cannot keep the connection")
    return Response(status, headers, body)


class Connection:
    """One keep-alive connection; one request at a time."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str
    ) -> None:
        self.reader, self.writer, self.host = reader, writer, host
        self.usable = True

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, f"{host}:{port}")

    async def request(self, method: str, path: str, body: bytes = b"") -> Response:
        self.usable = False  # until the whole response is read
        self.writer.write(request_bytes(method, path, self.host, body))
        await self.writer.drain()
        response = await read_response(self.reader)
        self.usable = response.keep_alive
        return response

    def close(self) -> None:
        self.writer.close()


class Client:
    """JSON calls over a pool of keep-alive connections. A closed loop of N coroutines holds at
    most N at once, so each client coroutine in effect has its own connection."""

    def __init__(self, host: str, port: int, timeout_s: float = 60.0) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.idle: list[Connection] = []

    async def request(self, method: str, path: str, body: bytes = b"") -> Response:
        conn = self.idle.pop() if self.idle else await Connection.open(self.host, self.port)
        try:
            response = await asyncio.wait_for(conn.request(method, path, body), self.timeout_s)
        finally:
            if conn.usable:
                self.idle.append(conn)
            else:
                conn.close()
        return response

    async def call(self, path: str, payload: Any = NO_BODY) -> Any:
        """POST ``payload`` as JSON to ``path``; the decoded JSON answer (None if empty)."""
        body = b"" if payload is NO_BODY else json.dumps(payload).encode()
        response = await self.request("POST", path, body)
        if not 200 <= response.status < 300:
            raise HttpError(response.status, response.body)
        return json.loads(response.body) if response.body else None

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()

"""A hostile neighbour: a local process that floods actors' Unix sockets
(``journal.transport.wire``) without their token, as a careless or malicious process of the
same user could.

    python -m benchmarks.neighbour --seconds 4 --out flood.json ADDRESS [ADDRESS ...]

It holds up to ``--idle`` connections per socket that never send a byte, opens new ones as
fast as it can, and now and then sends a first frame that claims 1 GiB and streams data after
it. The servers must go on serving their real clients with bounded file descriptors and memory
(``WireServer``: a handshake deadline, caps, refusal of a first frame bigger than the token).
The chaos run (``benchmarks.chaos``, fault ``hostile_neighbour``) and the integration tests
use it.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import socket
import struct
import time
from pathlib import Path

CLAIM = struct.pack("!IQ", 1 << 30, 0)  # a first frame of 1 GiB (the old limit)
CHUNK = b"\0" * (256 << 10)


def _connect(address: str) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(1.0)
    try:
        sock.connect(address)
    except OSError:
        sock.close()
        return None
    return sock


def oversized(address: str, chunks: int = 64) -> bool | None:
    """Claim a 1 GiB first frame and stream ``chunks`` of 256 KiB after it; True if the
    server cut the connection before taking them all (it refused the frame unread), None if
    it could not connect."""
    sock = _connect(address)
    if sock is None:
        return None
    try:
        sock.sendall(CLAIM)
        for _ in range(chunks):
            sock.sendall(CHUNK)
    except OSError:  # reset, broken pipe, or a timeout: it stopped reading
        return True
    finally:
        sock.close()
    return False


def flood(
    addresses: list[str], seconds: float, idle: int = 300, oversized_every: int = 50
) -> dict[str, int]:
    """Flood ``addresses`` for ``seconds``; what it did and what the servers did about it."""
    stats: collections.Counter[str] = collections.Counter()
    held: dict[str, collections.deque[socket.socket]] = {a: collections.deque() for a in addresses}
    until = time.monotonic() + seconds
    try:
        while time.monotonic() < until:
            for address in addresses:
                stats["attempts"] += 1
                if stats["attempts"] % oversized_every == 0:
                    refused = oversized(address)
                    stats[
                        {
                            True: "oversized_refused",
                            False: "oversized_taken",
                            None: "connect_failed",
                        }[refused]
                    ] += 1
                    continue
                sock = _connect(address)
                if sock is None:
                    stats["connect_failed"] += 1
                    continue
                stats["connected"] += 1
                queue = held[address]
                queue.append(sock)
                if len(queue) > idle:
                    queue.popleft().close()
    finally:
        for queue in held.values():
            for sock in queue:
                stats["closed_by_server"] += _closed(sock)
                sock.close()
    return dict(stats)


def _closed(sock: socket.socket) -> bool:
    """The server closed this idle connection (its handshake deadline, or the cap)."""
    sock.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        try:
            return sock.recv(1) == b""
        except OSError:
            return True
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("addresses", nargs="+")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--idle", type=int, default=300)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    stats = flood(args.addresses, args.seconds, args.idle)
    args.out.write_text(json.dumps(stats))


if __name__ == "__main__":
    main()

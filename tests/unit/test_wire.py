"""The Unix-socket fast path (``journal.wire``) without Ray: calls, errors, refusals, breaks."""

from __future__ import annotations

import asyncio

import pytest

from journal.wire import WireClient, WireClosed, WireServer


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

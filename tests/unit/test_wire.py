"""The Unix-socket fast path (``journal.wire``) without Ray: calls, errors, refusals, breaks."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from journal.wire import WireClient, WireClosed, WireRoute, WireServer


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

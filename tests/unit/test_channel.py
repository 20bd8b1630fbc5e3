"""Batched submission without Ray: a host's ``Mailboxes`` and a caller's ``HostChannel`` over a
fake host handle whose calls can fail as a dead actor's do."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from ray.exceptions import ActorDiedError

from actors.cluster.channel import HostChannel
from actors.host.mailbox import Mailboxes
from journal.records import Outcome
from journal.transport.wire import WireClosed
from tests.unit.engine_apps import request


def test_mailbox_results_wait_for_the_callers_poll() -> None:
    async def main() -> None:
        boxes = Mailboxes()
        gates = {n: asyncio.Event() for n in ("a", "b", "c")}

        async def invoke(req: Any) -> Outcome:
            await gates[req.handler].wait()
            if req.handler == "c":
                raise ConnectionError("journal unreachable")
            return Outcome(True, f'"{req.handler}"')

        reqs = [request("S", h, inv_id=h) for h in ("a", "b", "c")]
        boxes.submit("caller", reqs, invoke)
        assert await boxes.poll("caller", timeout=0.01) == {}, "nothing finished yet"
        gates["a"].set()
        assert await boxes.poll("caller", timeout=5) == {"a": (True, Outcome(True, '"a"'))}
        gates["b"].set()
        gates["c"].set()
        got: dict[str, Any] = {}
        while len(got) < 2:
            got.update(await boxes.poll("caller", timeout=5))
        assert got["b"] == (True, Outcome(True, '"b"'))
        assert isinstance(got["c"][1], ConnectionError) and got["c"][0] is False
        assert await boxes.poll("other", timeout=0.01) == {}, "each caller has its own box"
        assert boxes.expire(idle_s=0) == 2 and len(boxes) == 0

    asyncio.run(main())


class FakeHost:
    """A host handle: ``submit_many``/``poll`` answer from a real ``Mailboxes``; ``dead`` makes
    every call fail as a dead actor's would."""

    def __init__(self, name: str, outcomes: dict[str, Outcome]) -> None:
        self.name = name
        self.boxes = Mailboxes()
        self.outcomes = outcomes
        self.dead = False
        self.death: type[Exception] = ActorDiedError
        self.seen: list[tuple[str, bool]] = []
        self.release = asyncio.Event()
        self.submit_many = self._Method(self._submit_many)
        self.poll = self._Method(self._poll)

    class _Method:
        def __init__(self, fn: Any) -> None:
            self.fn = fn

        def remote(self, *args: Any) -> Any:
            return self.fn(*args)

    def _check(self) -> None:
        if self.dead:
            raise self.death()

    async def _submit_many(self, token: str, reqs: list[Any]) -> None:
        self._check()
        self.seen += [(r.id, r.resubmit) for r in reqs]

        async def invoke(req: Any) -> Outcome:
            await self.release.wait()
            return self.outcomes[req.id]

        self.boxes.submit(token, reqs, invoke)

    async def _poll(self, token: str, timeout: float) -> Any:
        self._check()
        result = await self.boxes.poll(token, min(timeout, 0.05))
        self._check()  # died while the poll waited
        return result


def calling(host: Any) -> Any:
    """A channel's ``call`` to the host ``host()`` returns (as the router's, over Ray)."""
    return lambda method, *args: getattr(host(), method).remote(*args)


@pytest.mark.parametrize("death", [ActorDiedError, WireClosed])
def test_a_dead_hosts_unanswered_requests_go_to_its_successor_marked_resubmitted(
    death: type[Exception],
) -> None:
    async def main() -> None:
        outcomes = {i: Outcome(True, f'"{i}"') for i in ("x", "y")}
        first, second = FakeHost("first", outcomes), FakeHost("second", outcomes)
        first.death = death  # Ray's error, or the socket's (``journal.transport.wire``)
        current = [first]
        idle: list[HostChannel] = []
        channel = HostChannel(
            calling(lambda: current[0]),
            lambda: current.append(second) or current.pop(0),
            idle.append,
        )
        calls = [
            asyncio.ensure_future(channel.submit(request("S", "h", inv_id=i))) for i in ("x", "y")
        ]
        while len(first.seen) < 2:
            await asyncio.sleep(0.01)
        first.dead = True  # it dies with both requests accepted, neither answered
        second.release.set()
        assert await asyncio.gather(*calls) == [outcomes["x"], outcomes["y"]]
        assert first.seen == [("x", False), ("y", False)]
        assert sorted(second.seen) == [("x", True), ("y", True)]
        assert idle == [channel] and channel.idle()

    asyncio.run(asyncio.wait_for(main(), 10))


def test_an_exception_raised_on_the_host_reaches_the_caller() -> None:
    async def main() -> None:
        host = FakeHost("h", {})
        host.release.set()
        channel = HostChannel(calling(lambda: host), lambda: None, lambda _: None)
        with pytest.raises(KeyError):
            await channel.submit(request("S", "h", inv_id="unknown"))

    asyncio.run(asyncio.wait_for(main(), 10))


def test_a_call_and_a_send_of_one_invocation_get_their_own_answers() -> None:
    """Every submission of a workflow's main names one invocation: over one channel, a send
    returns once it is durable (None) while a call of the same id waits for the outcome."""

    class Durable(FakeHost):
        async def _submit_many(self, token: str, reqs: list[Any]) -> None:
            async def invoke(req: Any) -> Outcome | None:
                if req.mode == "send":
                    return None
                await self.release.wait()
                return self.outcomes[req.id]

            self.boxes.submit(token, reqs, invoke)

    async def main() -> None:
        host = Durable("h", {"wf": Outcome(True, '"done"')})
        channel = HostChannel(calling(lambda: host), lambda: None, lambda _: None)
        call = asyncio.ensure_future(channel.submit(request("W", "run", "k", inv_id="wf")))
        send = asyncio.ensure_future(
            channel.submit(request("W", "run", "k", inv_id="wf", mode="send"))
        )
        assert await send is None
        assert not call.done(), "the call waits for the outcome"
        host.release.set()
        assert await call == Outcome(True, '"done"')

    asyncio.run(asyncio.wait_for(main(), 10))

"""StateLoader: keys asked for while a load is in flight go together in the next one."""

from __future__ import annotations

import asyncio

import pytest

from actors.loader import State, StateLoader


class Journal:
    """Answers each load when the test releases it; records which keys went together."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.release: asyncio.Queue[Exception | None] = asyncio.Queue()

    async def load_many(self, keys: list[str]) -> dict[str, State]:
        self.calls.append(keys)
        failure = await self.release.get()
        if failure is not None:
            raise failure
        return {k: {"n": k} for k in keys if k != "empty"}


def test_keys_asked_for_during_a_load_go_together() -> None:
    async def main() -> None:
        journal = Journal()
        loader = StateLoader(journal.load_many)
        first = loader.load("a")
        await asyncio.sleep(0)  # the first load is in flight now
        later = [loader.load(k) for k in ("b", "c", "b", "empty")]
        assert later[0] is later[2], "the same key waits on one future"
        journal.release.put_nowait(None)
        assert await first == {"n": "a"}
        journal.release.put_nowait(None)
        assert await asyncio.gather(*later) == [{"n": "b"}, {"n": "c"}, {"n": "b"}, {}]
        assert journal.calls == [["a"], ["b", "c", "empty"]]

    asyncio.run(main())


def test_a_failed_load_fails_its_keys_and_the_next_load_works() -> None:
    async def main() -> None:
        journal = Journal()
        loader = StateLoader(journal.load_many)
        failed = loader.load("a")
        journal.release.put_nowait(ConnectionError("journal unreachable"))
        with pytest.raises(ConnectionError):
            await failed
        again = loader.load("a")
        journal.release.put_nowait(None)
        assert await again == {"n": "a"}

    asyncio.run(main())

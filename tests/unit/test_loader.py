"""StateLoader: keys asked for while a load is in flight go together in the next one."""

from __future__ import annotations

import asyncio

import pytest

from actors.host.loader import State, StateLoader
from journal.keyfilter import MIN_CAPACITY, KeyFilter


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


# -- the key filter: no load for a key that never had state -----------------------------------


class FilteredJournal(Journal):
    """A journal whose filter holds ``with_state``; fetches wait for the test's release."""

    def __init__(self, with_state: list[str]) -> None:
        super().__init__()
        self.with_state = list(with_state)
        self.fetches = 0
        self.filter_release: asyncio.Queue[None] = asyncio.Queue()

    async def fetch_filter(self) -> bytes:
        self.fetches += 1
        snapshot = list(self.with_state)  # what is durable when the fetch reaches the journal
        await self.filter_release.get()
        return KeyFilter.of(snapshot, len(snapshot)).to_bytes()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_key_outside_the_filter_is_not_loaded() -> None:
    async def main() -> None:
        journal = FilteredJournal(["old"])
        loader = StateLoader(journal.load_many, journal.fetch_filter)
        first = loader.load("old")  # no filter yet: loaded, and the filter is fetched
        journal.release.put_nowait(None)
        journal.filter_release.put_nowait(None)
        assert await first == {"n": "old"}
        await settle()
        assert await loader.load("new") == {} and loader.skipped == 1
        again = loader.load("old")  # in the filter: loaded
        journal.release.put_nowait(None)
        assert await again == {"n": "old"}
        assert journal.calls == [["old"], ["old"]] and journal.fetches == 1

    asyncio.run(main())


def test_keys_written_before_and_during_a_fetch_are_never_taken_for_new() -> None:
    async def main() -> None:
        journal = FilteredJournal([])
        loader = StateLoader(journal.load_many, journal.fetch_filter)
        loader.wrote("queued")  # not durable when the journal reads its log
        loader.wrote("durable")
        loader.committed("durable")
        journal.with_state.append("durable")
        first = loader.load("x")  # starts the fetch
        await settle()
        loader.wrote("during")  # written while the filter is on its way
        journal.filter_release.put_nowait(None)
        journal.release.put_nowait(None)
        await first
        await settle()
        for key in ("queued", "durable", "during"):
            pending = loader.load(key)
            journal.release.put_nowait(None)
            await pending
        assert journal.calls == [["x"], ["queued"], ["durable"], ["during"]]
        assert await loader.load("brand-new") == {}

    asyncio.run(main())


def test_a_full_filter_is_fetched_again() -> None:
    async def main() -> None:
        journal = FilteredJournal([])
        loader = StateLoader(journal.load_many, journal.fetch_filter)
        loader.load("a")
        journal.release.put_nowait(None)
        journal.filter_release.put_nowait(None)
        await settle()
        assert journal.fetches == 1
        for i in range(MIN_CAPACITY + 1):  # fills it past its capacity
            loader.wrote(f"k{i}")
        await settle()
        assert journal.fetches == 2, "a full filter is fetched again"
        journal.filter_release.put_nowait(None)
        await settle()
        assert "k7" in loader._filter and loader._filter.items == MIN_CAPACITY + 1

    asyncio.run(main())


def test_when_the_filter_cannot_be_fetched_every_key_is_loaded() -> None:
    async def main() -> None:
        journal = Journal()

        async def broken() -> bytes:
            raise ConnectionError("journal unreachable")

        loader = StateLoader(journal.load_many, broken)
        first = loader.load("new")
        journal.release.put_nowait(None)
        assert await first == {"n": "new"}
        await settle()
        second = loader.load("newer")
        journal.release.put_nowait(None)
        assert await second == {"n": "newer"} and loader.skipped == 0

    asyncio.run(main())

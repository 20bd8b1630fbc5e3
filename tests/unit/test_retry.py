"""The one retry helper: back-off, deadline, attempt limit, which failures it retries and the
per-failure hook; sleep and clock are injected, so nothing here waits."""

from __future__ import annotations

import asyncio
import itertools
import logging

import pytest

from journal.retry import Backoff, retry, retry_sync


class Flaky:
    """Fails with ``error`` the first ``failures`` calls, then returns the call count."""

    def __init__(self, failures: int, error: type[BaseException] = ConnectionError) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error(f"failure {self.calls}")
        return self.calls

    async def coro(self) -> int:
        return self()


class FakeTime:
    """A clock that the injected sleep advances."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)

    def clock(self) -> float:
        return self.now


def test_backoff_grows_and_caps() -> None:
    assert list(itertools.islice(Backoff(0.05, 2, 1.0).delays(), 7)) == pytest.approx(
        [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    )
    assert list(itertools.islice(Backoff(0.5, 1, 0.5).delays(), 3)) == [0.5, 0.5, 0.5]


def test_async_retry_waits_per_backoff_until_it_succeeds() -> None:
    t, fn = FakeTime(), Flaky(3)
    seen: list[str] = []
    result = asyncio.run(
        retry(
            fn.coro,
            retry_on=ConnectionError,
            backoff=Backoff(0.1, 2, 5),
            on_retry=lambda e: seen.append(str(e)),
            sleep=t.asleep,
        )
    )
    assert result == 4 and t.slept == pytest.approx([0.1, 0.2, 0.4])
    assert seen == ["failure 1", "failure 2", "failure 3"]


def test_sync_twin_behaves_alike() -> None:
    t, fn = FakeTime(), Flaky(2)
    assert retry_sync(fn, retry_on=ConnectionError, sleep=t.sleep) == 3
    assert t.slept == pytest.approx([0.05, 0.1])


def test_other_failures_propagate_at_once() -> None:
    t, fn = FakeTime(), Flaky(5, KeyError)
    with pytest.raises(KeyError):
        retry_sync(fn, retry_on=ConnectionError, sleep=t.sleep)
    assert fn.calls == 1 and t.slept == []


def test_when_narrows_what_is_retried() -> None:
    t = FakeTime()

    def lookup() -> None:
        raise ValueError("no such name")

    with pytest.raises(ValueError, match="no such name"):
        retry_sync(
            lookup, retry_on=ValueError, when=lambda e: "Failed to look up" in str(e), sleep=t.sleep
        )
    assert t.slept == []


def test_cancellation_is_never_retried() -> None:
    t, fn = FakeTime(), Flaky(5, asyncio.CancelledError)
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(retry(fn.coro, retry_on=Exception, sleep=t.asleep))
    assert fn.calls == 1


def test_the_failure_after_the_deadline_is_final() -> None:
    t, fn = FakeTime(), Flaky(100)
    with pytest.raises(ConnectionError, match="failure 4"):
        retry_sync(
            fn,
            retry_on=ConnectionError,
            backoff=Backoff(1, 1, 1),
            deadline_s=2.5,
            sleep=t.sleep,
            clock=t.clock,
        )
    assert t.slept == [1, 1, 1]  # failures at 0, 1, 2 are retried; the one at 3 > 2.5 is not


def test_max_attempts_counts_every_attempt() -> None:
    t, fn = FakeTime(), Flaky(100)
    with pytest.raises(ConnectionError, match="failure 3"):
        asyncio.run(retry(fn.coro, max_attempts=3, sleep=t.asleep))
    assert fn.calls == 3 and len(t.slept) == 2


def test_on_retry_runs_inside_the_except(caplog: pytest.LogCaptureFixture) -> None:
    t, fn = FakeTime(), Flaky(1)
    log = logging.getLogger("test.retry")
    with caplog.at_level(logging.ERROR, logger="test.retry"):
        retry_sync(fn, on_retry=lambda _: log.exception("trying again"), sleep=t.sleep)
    assert caplog.records[0].exc_info is not None
    assert "failure 1" in str(caplog.records[0].exc_info[1])

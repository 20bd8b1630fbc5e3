"""LoopWatchdog: a handler that holds the event loop is logged; a loop that died is noticed
(the host then exits, so that Ray restarts it). An event loop in a thread of its own, no Ray."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator

import pytest

from actors.host.watchdog import LoopWatchdog
from tests.conftest import assert_eventually


def blocking_handler() -> None:
    time.sleep(2)  # what a careless handler does: the whole loop waits


@pytest.fixture
def loop_thread() -> Iterator[tuple[asyncio.AbstractEventLoop, threading.Thread]]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    assert_eventually(loop.is_running, message="loop running")
    yield loop, thread
    if not loop.is_closed():
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_a_handler_holding_the_loop_is_logged(
    loop_thread: tuple[asyncio.AbstractEventLoop, threading.Thread],
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop, thread = loop_thread
    dead = threading.Event()
    watchdog = LoopWatchdog(
        loop, thread, threshold_s=0.5, interval_s=0.05, on_dead=dead.set, name="host:T:0"
    ).start()
    with caplog.at_level(logging.WARNING, logger="raystate.host"):
        loop.call_soon_threadsafe(blocking_handler)
        assert_eventually(
            lambda: "the event loop was held for" in caplog.text,
            message="the stall and its end logged",
        )
    watchdog.stop()
    warning = caplog.records[0].getMessage()
    assert "host:T:0: a handler has held the event loop" in warning
    assert "blocking_handler" in warning, "the loop's stack shows where it is held"
    assert watchdog.stalls == 1 and not dead.is_set()


def test_a_quiet_loop_is_not_logged(
    loop_thread: tuple[asyncio.AbstractEventLoop, threading.Thread],
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop, thread = loop_thread
    probes = threading.Event()
    original = loop.call_soon_threadsafe
    count = [0]

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        count[0] += 1
        if count[0] >= 5:
            probes.set()
        return original(*args, **kwargs)

    loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
    watchdog = LoopWatchdog(loop, thread, threshold_s=0.5, interval_s=0.01).start()
    with caplog.at_level(logging.WARNING, logger="raystate.host"):
        assert probes.wait(10), "probed several times"
    watchdog.stop()
    loop.call_soon_threadsafe = original  # type: ignore[method-assign]
    assert watchdog.stalls == 0 and caplog.records == []


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_loop_ends_the_process(
    loop_thread: tuple[asyncio.AbstractEventLoop, threading.Thread],
) -> None:
    """A SystemExit escaping a task stops ``run_forever`` and ends the loop's thread (as in a
    host whose handler escaped raystate's guard): the watchdog calls ``on_dead``."""
    loop, thread = loop_thread
    dead = threading.Event()
    LoopWatchdog(loop, thread, threshold_s=0.5, interval_s=0.01, on_dead=dead.set).start()

    async def escape() -> None:
        raise SystemExit(1)

    loop.call_soon_threadsafe(lambda: loop.create_task(escape()))
    assert dead.wait(10), "the watchdog noticed the loop is gone"
    thread.join(5)
    assert not thread.is_alive()
    loop.close()

"""LoopWatchdog: a host's event loop watched from a thread of its own.

Every handler of a host shares one event loop. A handler that blocks it (``time.sleep``, a CPU
loop, a sync client call outside ``ctx.run``) stalls every other key of the host without a
sound; the watchdog logs a warning with the loop thread's stack once the loop has not answered
for ``threshold_s``, and again when it answers (how long it was held). And a loop that is gone
while the process lives on (its thread ended by an exception that escaped it) serves nobody
and is not restarted by Ray: the watchdog then ends the process, so that Ray restarts it.

Cost on the loop: one ``call_soon_threadsafe`` callback per ``interval_s``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable

log = logging.getLogger("raystate.host")

LAG_WARN_S = 1.0  # a loop held longer than this is logged
INTERVAL_S = 0.25  # how often the loop is probed


def _exit_process() -> None:
    log.critical("the host's event loop is gone; exiting so that Ray restarts this host")
    logging.shutdown()
    os._exit(70)


class LoopWatchdog:
    """Probes ``loop`` (running in ``loop_thread``) from a daemon thread."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        loop_thread: threading.Thread,
        *,
        threshold_s: float = LAG_WARN_S,
        interval_s: float = INTERVAL_S,
        on_dead: Callable[[], None] = _exit_process,
        name: str = "host",
    ) -> None:
        self.loop = loop
        self.loop_thread = loop_thread
        self.threshold_s = threshold_s
        self.interval_s = interval_s
        self.on_dead = on_dead
        self.name = name
        self.stalls = 0  # warnings logged so far
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._watch, name=f"raystate-watchdog-{name}", daemon=True
        )

    def start(self) -> LoopWatchdog:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _dead(self) -> bool:
        return (
            not self.loop_thread.is_alive() or self.loop.is_closed() or not self.loop.is_running()
        )

    def _watch(self) -> None:
        while not self._stop.wait(self.interval_s):
            if self._dead():
                if not self._stop.is_set():
                    self.on_dead()
                return
            answered = threading.Event()
            sent = time.monotonic()
            try:
                self.loop.call_soon_threadsafe(answered.set)
            except RuntimeError:  # closed meanwhile
                continue
            if answered.wait(self.threshold_s):
                continue
            self.stalls += 1
            log.warning(
                "%s: a handler has held the event loop for %.1f s (every other key "
                "of this host waits meanwhile); the loop is at:\n%s",
                self.name,
                time.monotonic() - sent,
                self._loop_stack(),
            )
            while not answered.wait(self.interval_s):
                if self._stop.is_set():
                    return
                if self._dead():
                    self.on_dead()
                    return
            log.warning(
                "%s: the event loop was held for %.1f s", self.name, time.monotonic() - sent
            )

    def _loop_stack(self) -> str:
        frame = sys._current_frames().get(self.loop_thread.ident or -1)
        return "".join(traceback.format_stack(frame)) if frame is not None else "(unknown)"

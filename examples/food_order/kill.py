"""Killing a host part-way: the host actor's process goes, Ray restarts it, and it resumes its
orders from the journal."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import cast

import ray


@dataclass
class Kill:
    """The host we kill part-way, and what happened to it."""

    name: str
    at: float | None = None  # seconds after the start
    in_flight: int = 0
    old_pid: int | None = None
    new_pid: int | None = None
    back_after: float | None = None
    error: str | None = None
    thread: threading.Thread | None = field(default=None, repr=False)


def kill_host(kill: Kill, namespace: str, started: float, in_flight: int) -> None:
    """Kill the host process (Ray restarts it; it resumes its orders from the journal) and
    note how long it took to come back, in a thread so that the live view goes on."""
    kill.at, kill.in_flight = time.monotonic() - started, in_flight

    def go() -> None:
        try:
            actor = ray.get_actor(kill.name, namespace=namespace)
            kill.old_pid = cast(int, ray.get(actor.pid.remote(), timeout=30))
            t0 = time.monotonic()
            ray.kill(actor, no_restart=False)
            while kill.new_pid is None and time.monotonic() - t0 < 60:
                try:
                    pid = cast(
                        int,
                        ray.get(
                            ray.get_actor(kill.name, namespace=namespace).pid.remote(), timeout=10
                        ),
                    )
                    if pid != kill.old_pid:
                        kill.new_pid, kill.back_after = pid, time.monotonic() - t0
                except Exception:  # still restarting
                    time.sleep(0.1)
        except Exception as e:
            kill.error = f"{type(e).__name__}: {e}"

    kill.thread = threading.Thread(target=go, daemon=True, name="kill-host")
    kill.thread.start()

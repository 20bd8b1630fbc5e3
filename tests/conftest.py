"""Shared test helpers: polling with a deadline, and side-effect ledgers kept in files."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def assert_eventually(fn: Callable[[], T], timeout: float = 30.0, interval: float = 0.05,
                      message: str = "condition") -> T:
    """Poll ``fn`` until it returns a truthy value; fail with ``message`` at the deadline."""
    deadline = time.monotonic() + timeout
    last: T = fn()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} did not hold within {timeout}s (last: {last!r})")
        time.sleep(interval)
        last = fn()
    return last


def ledger_lines(path: str | Path) -> list[str]:
    p = Path(path)
    return p.read_text().splitlines() if p.exists() else []

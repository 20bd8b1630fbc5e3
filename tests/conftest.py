"""Shared test helpers: polling with a deadline, side-effect ledgers kept in files, and the
session's one local Ray."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

T = TypeVar("T")


def assert_eventually(
    fn: Callable[[], T], timeout: float = 30.0, interval: float = 0.05, message: str = "condition"
) -> T:
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


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """One local Ray for the whole session (integration and chaos tests)."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        # metrics reach Prometheus every 2 s instead of 10: the tests that scrape them wait less
        _system_config={"metrics_report_interval_ms": 2000},
    )
    yield
    ray.shutdown()


def loose_paths(root: Path) -> list[str]:
    """What under ``root`` (itself included) other users could read or enter: anything but
    0700 directories and 0600 files (``journal.private``)."""
    found = []
    for p in [root, *root.rglob("*")]:
        mode = p.lstat().st_mode & 0o777
        if mode != (0o700 if p.is_dir() else 0o600):
            found.append(f"{p.relative_to(root)} {oct(mode)}")
    return found


def loosen(root: Path) -> None:
    """Leave ``root`` as an older version did: 0755 directories, 0644 files."""
    for p in [root, *root.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)

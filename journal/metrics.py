"""raystate's metrics, exported through ``ray.util.metrics`` under the prefix ``raystate_``.

Ray's metrics agent serves them on each node's Prometheus endpoint (with Ray's own prefix
``ray_``, e.g. ``ray_raystate_invocations_total``), so Ray's dashboard and a Grafana that
scrapes Ray show them with no set-up. Each process creates its metric objects on first use;
a call before Ray is initialised (unit tests, a driver that has not connected), or in a process
that never imported Ray, records nothing. Latencies are in seconds. Recording is an append to
a buffer that a thread hands to Ray each second, so the event loop never waits for Ray's
metric calls. ``RAYSTATE_METRICS=0`` turns them off.

Example:
    >>> from journal import metrics
    >>> metrics.invocation_done("Counter", "add", "succeeded")
    >>> metrics.step_latency("Counter", "add", 0.004, remote=True)
"""

from __future__ import annotations

import atexit
import logging
import os
import random
import sys
import threading
import time
from collections import deque
from enum import IntEnum, StrEnum
from typing import Any

PREFIX = "raystate_"
_LATENCY_S: list[float] = [
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1,
    2,
    5,
    10,
    30,
    60,
    300,
]
_BATCH: list[float] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096]


class StepKind(StrEnum):
    LOCAL = "local"  # a function run on the host
    REMOTE = "remote"  # a Ray task or actor method


class _Metrics:
    """The process's metric objects (Ray keeps one registry per process)."""

    def __init__(self) -> None:
        from ray.util.metrics import Counter, Gauge, Histogram

        self.invocations = Counter(
            PREFIX + "invocations",
            "Invocations that finished, by outcome",
            tag_keys=("service", "handler", "status"),
        )
        self.attempt = Histogram(
            PREFIX + "attempt_latency_seconds",
            "Time of one attempt of an invocation",
            boundaries=_LATENCY_S,
            tag_keys=("service", "handler"),
        )
        self.step = Histogram(
            PREFIX + "step_latency_seconds",
            "Time of one ctx.run step (not replayed ones)",
            boundaries=_LATENCY_S,
            tag_keys=("service", "handler", "kind"),
        )
        self.commit = Histogram(
            PREFIX + "journal_commit_latency_seconds",
            "Time of one journal group commit",
            boundaries=_LATENCY_S,
        )
        self.batch = Histogram(
            PREFIX + "journal_commit_batch_size",
            "Records in one journal group commit",
            boundaries=_BATCH,
        )
        self.lateness = Histogram(
            PREFIX + "timer_lateness_seconds",
            "How late a timer fired after its due time",
            boundaries=_LATENCY_S,
        )
        self.queued = Gauge(
            PREFIX + "queued_invocations", "Invocations waiting on a host", tag_keys=("host",)
        )
        self.limit_held = Gauge(
            PREFIX + "limit_held_slots",
            "Slots of a concurrency or rate limit held by running invocations",
            tag_keys=("limit",),
        )
        self.limit_waiting = Gauge(
            PREFIX + "limit_waiting_invocations",
            "Invocations waiting for a slot of a limit",
            tag_keys=("limit",),
        )


class InvocationStatus(StrEnum):
    """An invocation's outcome, as the ``status`` tag of ``raystate_invocations``."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    KILLED = "killed"


def status_of(outcome: Any) -> InvocationStatus:
    """The status of an ``Outcome`` (ok, failure, failure_code)."""
    if outcome.ok:
        return InvocationStatus.SUCCEEDED
    failure = outcome.failure or ""
    if failure == "killed":
        return InvocationStatus.KILLED
    if outcome.failure_code == 409 and failure.startswith("cancelled"):
        return InvocationStatus.CANCELLED
    return InvocationStatus.FAILED


_metrics: _Metrics | None = None


_ENABLED = os.environ.get("RAYSTATE_METRICS", "1") != "0"  # 0: record nothing
FLUSH_S = 1.0  # how often the buffered points reach Ray
MAX_OBSERVATIONS = 200  # per histogram series and flush; more are sampled down to this


class _Op(IntEnum):
    INC = 0
    OBSERVE = 1
    SET = 2


Point = tuple[Any, _Op, float, tuple[tuple[str, str], ...]]


class _Buffer:
    """Points wait here and a daemon thread hands them to Ray every ``FLUSH_S``: recording
    one on the event loop is a deque append, counters reach Ray summed and gauges as their
    last value (a histogram point each)."""

    def __init__(self) -> None:
        self.points: deque[Point] = deque()
        self.thread = threading.Thread(target=self._loop, name="raystate-metrics", daemon=True)
        self.thread.start()
        atexit.register(self.flush)

    def _loop(self) -> None:
        while True:
            time.sleep(FLUSH_S)
            try:
                self.flush()
            except Exception:  # a metric never breaks the process that records it
                logging.getLogger("raystate.metrics").debug("flush failed", exc_info=True)

    def flush(self) -> None:
        sums: dict[tuple[Any, tuple[tuple[str, str], ...]], float] = {}
        last: dict[tuple[Any, tuple[tuple[str, str], ...]], float] = {}
        observed: dict[tuple[Any, tuple[tuple[str, str], ...]], list[float]] = {}
        while self.points:
            metric, op, value, tags = self.points.popleft()
            if op is _Op.OBSERVE:
                observed.setdefault((metric, tags), []).append(value)
            elif op is _Op.INC:
                sums[metric, tags] = sums.get((metric, tags), 0.0) + value
            else:
                last[metric, tags] = value
        for (metric, tags), values in observed.items():
            # Ray takes one observation per call (a few microseconds each, on this process's
            # GIL): past MAX_OBSERVATIONS a flush hands over a uniform sample, which keeps the
            # histogram's shape; counts come from the counters (raystate_invocations_total)
            if len(values) > MAX_OBSERVATIONS:
                values = random.sample(values, MAX_OBSERVATIONS)
            as_dict = dict(tags)
            for value in values:
                metric.observe(value, as_dict)
        for (metric, tags), value in sums.items():
            metric.inc(value, dict(tags))
        for (metric, tags), value in last.items():
            metric.set(value, dict(tags))


_buffer: _Buffer | None = None


def _get() -> _Metrics | None:
    global _metrics, _buffer
    if _metrics is not None:
        return _metrics
    ray: Any = sys.modules.get("ray")
    if not _ENABLED:
        return None
    if ray is None or not ray.is_initialized():
        return None
    _metrics = _Metrics()
    _buffer = _Buffer()
    return _metrics


def _put(metric: Any, op: _Op, value: float, *tags: tuple[str, str]) -> None:
    assert _buffer is not None
    _buffer.points.append((metric, op, value, tags))


def invocation_done(service: str, handler: str, status: str) -> None:
    """An invocation finished: ``status`` is its outcome (``succeeded``, ``failed`` ...)."""
    if (m := _get()) is not None:
        _put(
            m.invocations,
            _Op.INC,
            1,
            ("service", service),
            ("handler", handler),
            ("status", str(status)),
        )


def attempt_latency(service: str, handler: str, seconds: float) -> None:
    if (m := _get()) is not None:
        _put(m.attempt, _Op.OBSERVE, seconds, ("service", service), ("handler", handler))


def step_latency(service: str, handler: str, seconds: float, remote: bool = False) -> None:
    if (m := _get()) is not None:
        kind = StepKind.REMOTE if remote else StepKind.LOCAL
        _put(
            m.step,
            _Op.OBSERVE,
            seconds,
            ("service", service),
            ("handler", handler),
            ("kind", kind.value),
        )


def journal_commit(seconds: float, batch_size: int) -> None:
    if (m := _get()) is not None:
        _put(m.commit, _Op.OBSERVE, seconds)
        _put(m.batch, _Op.OBSERVE, batch_size)


def timer_lateness(seconds: float) -> None:
    if (m := _get()) is not None:
        _put(m.lateness, _Op.OBSERVE, max(seconds, 0.0))


def queued_invocations(host: str, count: int) -> None:
    if (m := _get()) is not None:
        _put(m.queued, _Op.SET, count, ("host", host))


def limit_slots(limit: str, held: int, waiting: int) -> None:
    """A limit's slots in use and the invocations waiting for one (the limiter, each second)."""
    if (m := _get()) is not None:
        _put(m.limit_held, _Op.SET, held, ("limit", limit))
        _put(m.limit_waiting, _Op.SET, waiting, ("limit", limit))

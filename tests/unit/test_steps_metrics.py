"""Metrics calls cost nothing and fail nothing without Ray (unit tests never start Ray)."""

from __future__ import annotations

import sys
import types

import pytest

from journal import metrics


def _record_everything() -> None:
    metrics.invocation_done("S", "h", "succeeded")
    metrics.attempt_latency("S", "h", 0.1)
    metrics.step_latency("S", "h", 0.1, remote=True)
    metrics.journal_commit(0.01, 3)
    metrics.timer_lateness(-1.0)
    metrics.queued_invocations("host", 2)


@pytest.mark.parametrize(
    "ray",
    [None, types.SimpleNamespace(is_initialized=lambda: False)],
    ids=["ray-never-imported", "ray-not-initialised"],
)
def test_metrics_are_no_ops_without_ray(monkeypatch, ray) -> None:
    monkeypatch.setattr(metrics, "_metrics", None)
    monkeypatch.setitem(sys.modules, "ray", ray)
    _record_everything()
    assert metrics._metrics is None


class _Recorder:
    def __init__(self) -> None:
        self.observed: list[float] = []
        self.incs: list[float] = []

    def observe(self, value: float, tags: dict[str, str]) -> None:
        self.observed.append(value)

    def inc(self, value: float, tags: dict[str, str]) -> None:
        self.incs.append(value)


def test_a_flush_hands_ray_a_bounded_sample_of_each_histogram_and_summed_counters() -> None:
    """Ray takes one observation per call on the recording process's GIL: at thousands of
    invocations a second a flush must not cost in proportion (the hot-key benchmark lost
    ~10% to it); counters stay exact."""
    buffer = metrics._Buffer.__new__(metrics._Buffer)  # no flush thread
    buffer.points = metrics.deque()
    histogram, counter = _Recorder(), _Recorder()
    tags = (("service", "S"),)
    for i in range(5 * metrics.MAX_OBSERVATIONS):
        buffer.points.append((histogram, metrics._Op.OBSERVE, float(i), tags))
        buffer.points.append((counter, metrics._Op.INC, 1, tags))
    buffer.flush()
    assert len(histogram.observed) == metrics.MAX_OBSERVATIONS
    assert set(histogram.observed) <= {float(i) for i in range(5 * metrics.MAX_OBSERVATIONS)}
    assert counter.incs == [5 * metrics.MAX_OBSERVATIONS]
    assert not buffer.points

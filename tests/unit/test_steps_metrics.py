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

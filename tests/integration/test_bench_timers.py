"""``python -m benchmarks.timers`` runs from a fresh runtime (it once looked its pooled hosts up
before their first use had started them: ``Failed to look up actor 'host:BenchSleepy:0'``)."""

from __future__ import annotations

from benchmarks.timers import run


def test_timers_benchmark_runs_on_a_fresh_runtime(ray_session: None) -> None:
    row = run(20, 0.5, 0.0)
    assert row["check"] == "OK" and row["completed"] == 20, row
    assert row["host_rss_idle_mb"] > 0

"""The chaos workload (``benchmarks/chaos.py``) in its short seeded mode: 20 s of a mixed
workload under host kills, handler exits (at crash points and while awaiting), journal,
scheduler and client-driver kills, and a hostile neighbour flooding the journal's and a host's
sockets (``benchmarks.neighbour``), on one seed (it costs the suite 45 s of its 10 minutes;
other seeds by hand: ``python -m benchmarks.chaos --seconds 20 --seed 2 --short``); every fault
kind must land at least once and every invariant must hold at the end. ``python -m
benchmarks.chaos --minutes 2 --seed S`` is the long mode (with full runtime restarts)."""

from __future__ import annotations

import pytest

from benchmarks.chaos import FAULTS, run_chaos


@pytest.mark.parametrize("seed", [1])
def test_chaos_short_mode(ray_session: None, tmp_path, seed: int) -> None:
    report = run_chaos(20, seed, work_dir=tmp_path)
    print(report.render())
    assert report.ok, report.render()
    missing = [k for k in FAULTS if report.faults[k] < 1]
    assert not missing, f"fault kinds that never landed: {missing}\n{report.render()}"
    assert report.invocations > 50

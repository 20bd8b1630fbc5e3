"""The chaos workload (``benchmarks/chaos.py``) in its short seeded mode: a mixed workload under
random host kills, handler exits, journal, scheduler and client-driver kills; every invariant
must hold at the end. ``python -m benchmarks.chaos --minutes 10 --seed S`` is the long mode
(with full runtime restarts)."""

from __future__ import annotations

import pytest

from benchmarks.chaos import FAULTS, run_chaos


@pytest.mark.parametrize("seed", [1, 2])
def test_chaos_short_mode(ray_session: None, tmp_path, seed: int) -> None:
    report = run_chaos(20, seed, work_dir=tmp_path)
    print(report.render())
    assert report.ok, report.render()
    assert sum(report.faults[k] for k in FAULTS) >= 5, "too few faults to mean anything"
    assert report.invocations > 50

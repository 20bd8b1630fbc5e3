"""``benchmarks.process_spread`` runs its servers, spreads the writes and stops them."""

from __future__ import annotations

import pytest

from benchmarks import process_spread


def test_a_spread_layout_writes_every_batch_and_stops_its_servers() -> None:
    result = process_spread.run_layout(2, 2, 20, "2 used", drain_s=0.01)
    assert result.layout == "2 used"
    assert result.writes_per_s > 0 and 0 < result.p50_us <= result.p99_us


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(SystemExit):
        process_spread.main(["--processes", "1"])

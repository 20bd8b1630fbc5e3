"""Guarantee 10: the whole Ray runtime stops mid-flight (a driver process with a Ray of its own,
shut down while handlers run); the runtime starts again on the same data dir on another Ray
(the test session's) and every accepted invocation completes, journaled steps once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ledger_lines
from tests.integration import apps

DRIVER = Path(__file__).with_name("restart_driver.py")


def run_phase(*args: str) -> list[str]:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    done = subprocess.run(
        [sys.executable, str(DRIVER), *args], capture_output=True, text=True, timeout=240, env=env
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip().splitlines()


def test_full_runtime_restart_on_same_data_dir(start_runtime, tmp_path) -> None:
    data, ledger, gate = tmp_path / "data", tmp_path / "ledger.txt", tmp_path / "gate"
    *_, sent, ids = run_phase("phase1", str(data), str(ledger), str(gate))
    sent_at = json.loads(sent)["sent_at"]
    assert len(json.loads(ids)) == 10
    gate.touch()
    rt = start_runtime(data_dir=data)
    results = [rt.attach(i).result(timeout=90) for i in json.loads(ids)]
    results.append(rt.call(apps.get, key="total"))
    assert results[:8] + results[10:] == ["opened"] * 5 + [1, 3, 6, 6]
    nap, stamped = results[8], results[9]
    assert nap["woke"] - nap["started"] >= 4, "the sleep fired early"
    assert stamped >= sent_at + 4, "the delayed send ran early"
    lines = ledger_lines(ledger)
    assert lines.count("after:sleepy:") == 1 and lines.count("ran:later:") == 1
    for k in range(5):
        assert lines.count(f"a:r{k}:r") == 1, "a journaled step ran again after the restart"
        assert lines.count(f"b:r{k}:r") == 2

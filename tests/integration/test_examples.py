"""Every example runs (as a user would start it), so examples cannot rot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_counter_example(tmp_path) -> None:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "counter.py"),
                           str(tmp_path / "data")], capture_output=True, text=True,
                          timeout=240, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "add(alice, 3) -> 6" in done.stdout
    assert "bob after idempotent bonus: 16" in done.stdout
    assert "Counter/alice/add" in done.stdout


def test_signup_workflow_example(tmp_path) -> None:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "signup_workflow.py"),
                           str(tmp_path / "data")], capture_output=True, text=True,
                          timeout=240, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "status while waiting: mail-sent" in done.stdout
    assert "is active" in done.stdout
    assert "mails sent to" in done.stdout and done.stdout.split("mails sent to")[1].split(
        ": ")[1].startswith("1")
    first, second = done.stdout.split("invocation ")[1].split(" (second submission: ")
    assert second.startswith(first), "the second submission did not attach to the first run"

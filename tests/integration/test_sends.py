"""Guarantee 6 for one-way sends from handlers: delivered exactly once, also when the sender
crashes and replays; delayed sends from handlers wait for their delay."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from actors import Runtime, TerminalError
from tests.conftest import ledger_lines
from tests.integration import apps


def test_sends_from_a_crashing_handler_are_delivered_once(rt: Runtime, ledger: str,
                                                          tmp_path) -> None:
    marker = str(tmp_path / "crashed")
    t0 = time.time()
    ids = rt.send(apps.fan_out, key="fan", arg=apps.Job(ledger=ledger, marker=marker)).result(
        timeout=60)
    assert Path(marker).exists(), "the sender never crashed"
    assert len(ids) == 4
    for child in ids[:3]:
        rt.attach(child).result(timeout=60)
    assert rt.attach(ids[3]).result(timeout=60) >= t0 + 0.5
    lines = ledger_lines(ledger)
    for i in range(3):
        assert lines.count(f"enter:fan-child:child{i}") == 1
    assert lines.count("ran:fan-later:later") == 1
    rows = rt.sql("SELECT count(*) AS n FROM sys_invocation WHERE invoked_by_id IS NOT NULL")
    assert rows.column("n").to_pylist() == [4]


def test_send_to_unknown_target_fails_the_sender(shared_rt: Runtime) -> None:
    with pytest.raises(TerminalError, match="unknown service 'Nope'"):
        shared_rt.call("Steps/bad_send", key="bad-send")

"""Guarantee 6 for one-way sends from handlers: delivered exactly once, also when the sender
crashes and replays; delayed sends from handlers wait for their delay."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from actors import Runtime, TerminalError
from actors.cluster.names import route_hash
from tests.conftest import ledger_lines
from tests.integration import apps


def test_sends_from_a_crashing_handler_are_delivered_once(
    rt: Runtime, ledger: str, tmp_path
) -> None:
    """The sender crashes only after every send ran: its replay sends them all again."""
    slot = route_hash("Steps", "fan", "") % rt.pool_size
    assert slot != route_hash("Steps", "fan-child", "") % rt.pool_size, (
        "the children must live on another host than the crashing sender"
    )
    marker = str(tmp_path / "crashed")
    t0 = time.time()
    ids = rt.send(apps.fan_out, key="fan", arg=apps.Job(ledger=ledger, marker=marker)).result(
        timeout=60
    )
    assert Path(marker).exists(), "the sender never crashed"
    lines = ledger_lines(ledger)
    assert "crash:5/5" in lines, "the sender crashed before its sends were delivered"
    assert len(ids) == 5
    for child in ids[:3]:
        rt.attach(child).result(timeout=60)
    assert rt.attach(ids[3]).result(timeout=60) >= t0 + 0.5
    assert rt.attach(ids[4]).result(timeout=60) == "svc"
    lines = ledger_lines(ledger)
    for i in range(3):
        assert lines.count(f"enter:fan-child:child{i}") == 1
    assert lines.count("ran:fan-later:later") == 1
    assert lines.count("note:svc") == 1
    rows = rt.sql("SELECT count(*) AS n FROM sys_invocation WHERE invoked_by_id IS NOT NULL")
    assert rows.column("n").to_pylist() == [5]


def test_send_to_unknown_target_fails_the_sender(shared_rt: Runtime) -> None:
    with pytest.raises(TerminalError, match="unknown service 'Nope'"):
        shared_rt.call("Steps/bad_send", key="bad-send")


def test_send_to_a_key_that_is_not_text_fails_the_sender_at_once(shared_rt: Runtime) -> None:
    """A lone surrogate cannot be hashed or journaled: 400 inside the handler, not retried."""
    with pytest.raises(TerminalError, match=r"key .* is not valid text") as e:
        shared_rt.call("Steps/bad_key_send", key="bad-key-send")
    assert e.value.status_code == 400
    row = shared_rt.sql(
        "SELECT retry_count FROM sys_invocation WHERE target = 'Steps/bad-key-send/bad_key_send'"
    ).to_pylist()
    assert row == [{"retry_count": 0}]

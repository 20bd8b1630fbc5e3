"""Every example runs (as a user would start it), so examples cannot rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import duckdb

from examples.food_order import app

ROOT = Path(__file__).resolve().parents[2]


def run_example(path: str, tmp_path: Path, *args: str) -> str:
    """Run ``examples/<path>`` as a user would, in a process of its own, attached to the test
    session's Ray (``Runtime.start`` honours ``RAY_ADDRESS``; run by hand, an example starts a
    Ray of its own); return its stdout."""
    import ray

    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
    }
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / path), str(tmp_path / "data"), *args],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_counter_example(ray_session: None, tmp_path) -> None:
    out = run_example("counter.py", tmp_path)
    assert "add(alice, 3) -> 6" in out
    assert "bob after idempotent bonus: 16" in out
    assert "Counter/alice/add" in out


def test_signup_workflow_example(ray_session: None, tmp_path) -> None:
    out = run_example("signup_workflow.py", tmp_path)
    assert "status while waiting: mail-sent" in out
    assert "is active" in out
    assert out.split("mails sent to")[1].split(": ")[1].startswith("1")
    first, second = out.split("invocation ")[1].split(" (second submission: ")
    assert second.startswith(first), "the second submission did not attach to the first run"


def test_food_order_example(ray_session: None, tmp_path) -> None:
    """The flagship example in its short mode (a host is killed part-way). Its invariants are
    checked again here, from the journal file and the payment provider's ledger: every order
    reached a final status, each paid order was charged exactly once (a rejected one never),
    and no order was delivered before its requested delivery time."""
    data = tmp_path / "data"
    out = run_example("food_order/main.py", tmp_path, "--short")
    assert "killed host:OrderProcessor:0" in out, out
    summary = json.loads(out.split("SUMMARY ", 1)[1].splitlines()[0])
    assert summary["host_killed"] and summary["orders"] == 8, summary

    with duckdb.connect() as db:  # the journal, attached read-only, and the payment ledger
        db.execute(f"ATTACH '{data / 'journal.duckdb'}' AS journal (READ_ONLY)")
        db.execute("USE journal")
        fields = ", ".join(f"'{f}': 'VARCHAR'" for f in app.LEDGER_FIELDS)
        orders = db.sql(f"""
            WITH charges AS (
                SELECT order_id, charge_id, count(*) AS n
                FROM read_csv('{data / "payments.csv"}', header = false, columns = {{{fields}}})
                WHERE event = 'charged' GROUP BY ALL)
            SELECT i.target_service_key AS id, i.completion_result AS result,
                   s.value->>'$' AS status, c.value->>'$' AS charge_id,
                   (i.input->>'deliver_at_ms')::BIGINT AS due,
                   (d.value->>'$')::BIGINT AS delivered_at,
                   coalesce(list(ch.charge_id || '=' || ch.n ORDER BY ch.charge_id)
                            FILTER (ch.charge_id IS NOT NULL), []) AS charged
            FROM sys_invocation i
            LEFT JOIN state s ON s.service_name = 'OrderProcessor'
                 AND s.service_key = i.target_service_key AND s.key = 'status'
            LEFT JOIN state c ON c.service_name = 'OrderProcessor'
                 AND c.service_key = i.target_service_key AND c.key = 'charge'
            LEFT JOIN state d ON d.service_name = 'DeliveryManager'
                 AND d.service_key = i.target_service_key AND d.key = 'delivered_at_ms'
            LEFT JOIN charges ch ON ch.order_id = i.target_service_key
            WHERE i.target_service_name = 'OrderProcessor' AND i.target_handler_name = 'process'
            GROUP BY ALL ORDER BY 1""").fetchall()
    assert len(orders) == 8
    statuses = Counter(status for _, _, status, *_ in orders)
    assert statuses["DELIVERED"] and statuses["REJECTED"], statuses
    for oid, result, status, charge_id, due, delivered_at, charged in orders:
        assert result == "success" and status in ("DELIVERED", "REJECTED"), (oid, status)
        if status == "DELIVERED":
            assert charged == [f"{charge_id}=1"], (oid, charged)
            assert delivered_at is not None and delivered_at >= due, (oid, delivered_at, due)
        else:
            assert charged == [] and charge_id is None, (oid, charged)


def test_embeddings_example(ray_session: None, tmp_path) -> None:
    out = run_example("embeddings.py", tmp_path)
    assert "index over 2000 documents x 256 dims; nearest to doc 0: [[0, 1.0]" in out
    assert "embed ran 2 times (its first worker was killed half-way)" in out
    assert "both in the blob store" in out
    assert out.count('"$raystate":"ref"') == 2, out


def test_flow_control_example(ray_session: None, tmp_path) -> None:
    out = run_example("flow_control.py", tmp_path)
    assert "Provider: concurrency 2, rate 4 per 1s" in out  # sys_waiting said why
    assert "12 summaries in" in out and "'REPORT 0'" in out
    assert "poll ran" in out and "@every 1s" in out

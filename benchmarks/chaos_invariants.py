"""The chaos run's invariants (``benchmarks.chaos``), checked at its end through SQL on the
journal and through the ledgers kept outside the processes; each writes its verdict (``"ok"`` or
what failed) and its numbers into the run's report."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import ray

from actors import Runtime
from benchmarks import chaos_apps as apps
from benchmarks import chaos_checks as checks
from benchmarks import chaos_limits, chaos_schedules
from benchmarks.chaos_base import DRIVER_INCREMENTS, ChaosBase, Report, alive
from journal.kinds import InvocationStatus


def scalar(rt: Runtime, query: str) -> Any:
    return rt.sql(query).column(0)[0].as_py()


def check(chaos: ChaosBase, rt: Runtime) -> None:
    r = chaos.report
    lines = Path(chaos.ledger).read_text().splitlines() if Path(chaos.ledger).exists() else []
    r.invocations = scalar(rt, "SELECT count(*) FROM sys_invocation")
    open_count = scalar(rt, "SELECT count(*) FROM sys_invocation WHERE status <> 'completed'")
    unfinished = rt.sql(
        "SELECT id, target, status, last_failure FROM sys_invocation "
        "WHERE status <> 'completed' LIMIT 3"
    ).to_pylist()
    r.checks["every accepted invocation finished"] = (
        "ok" if not open_count else f"{open_count} unfinished, e.g. {unfinished}"
    )
    killed = ", ".join(f"'{i}'" for i in chaos.killed) or "''"  # invocation ids: hex
    failed = rt.sql(
        "SELECT target_handler_name AS h, completion_failure AS f, count(*) AS n "
        "FROM sys_invocation WHERE completion_result = 'failure' "
        f"AND id NOT IN ({killed}) GROUP BY ALL"
    ).to_pylist()
    r.checks["no invocation failed"] = "ok" if not failed else str(failed)
    _check_poisoned(chaos, rt)
    status = {
        row["id"]: row["status"]
        for row in rt.sql(
            "SELECT id, status FROM sys_invocation WHERE target_service_name = 'ChaosSteps'"
        ).to_pylist()
    }
    lost = [
        (h, i, status.get(i))
        for h, i in chaos.handles
        if status.get(i) != InvocationStatus.COMPLETED
    ]
    r.checks["every acknowledged send accepted and completed"] = (
        "ok" if not lost else f"{len(lost)} of {len(chaos.handles)}, e.g. {lost[:3]}"
    )
    r.stats["sends_acked"] = len(chaos.handles)
    r.recoveries = {
        "invocations_retried": scalar(
            rt, "SELECT count(*) FROM sys_invocation WHERE retry_count > 0"
        ),
        "retries": scalar(rt, "SELECT coalesce(sum(retry_count), 0) FROM sys_invocation"),
        **{f"{k}_restarts": v for k, v in sorted(chaos.restarts_seen.items())},
    }

    journaled = {
        (j["i"], j["s"]): j["nonce"]
        for j in rt.sql(
            "SELECT invocation_id AS i, name AS s, result->>'$' AS nonce FROM sys_journal "
            "WHERE entry_type = 'run' AND name LIKE 'step%'"
        ).to_pylist()
    }
    runs = checks.check_runs(lines, journaled, alive)
    r.checks["journaled ctx.run ran once (others only in attempts that died)"] = (
        "ok" if not runs.problems else f"{len(runs.problems)}: {runs.problems[:3]}"
    )
    r.stats["runs"] = {
        "journaled": runs.journaled,
        "executed": runs.executions,
        "lost_with_their_process": runs.lost_with_process,
    }

    # counters equal acknowledged increments (client, calls, sends, the driver process)
    values = {
        row["k"]: int(row["v"])
        for row in rt.sql(
            "SELECT service_key AS k, value AS v FROM state WHERE service_name = 'ChaosCounter' "
            "AND key = 'n'"
        ).to_pylist()
    }
    wrong = {k: (values.get(k, 0), n) for k, n in r.acked.items() if values.get(k, 0) != n}
    r.checks["counters equal acknowledged increments"] = "ok" if not wrong else str(wrong)
    driver_total = sum(v for k, v in values.items() if k.startswith("drv-"))
    r.checks["driver's idempotent increments applied once"] = (
        "ok" if driver_total == DRIVER_INCREMENTS else f"{driver_total} != {DRIVER_INCREMENTS}"
    )

    r.checks["exclusive handlers never overlapped"] = checks.overlaps(lines)
    _check_sleeps(r, rt)
    _check_awakeables(chaos, rt)
    r.checks.update(chaos_schedules.check(rt, chaos.dir))
    r.checks.update(chaos_limits.check(lines, chaos.limited, rt))
    r.stats["limited"] = {"sends_acked": len(chaos.limited), **chaos_limits.stats(lines)}
    taken = [n for n in os.listdir(chaos.crash_dir) if n.startswith("taken-")]
    r.faults["handler_exit"] = sum(n.startswith(f"taken-{apps.CRASH_TOKEN}") for n in taken)
    r.faults["await_exit"] = sum(n.startswith(f"taken-{apps.AWAIT_TOKEN}") for n in taken)


def _check_poisoned(chaos: ChaosBase, rt: Runtime) -> None:
    """Poisoned invocations (their handler raised ``SystemExit``, ``KeyboardInterrupt``, a bare
    ``BaseException``) each failed as attempts, recorded, then completed once the poison wore
    off; the never-healing ones were killed (the host served on throughout: the other checks)."""
    r = chaos.report
    ids = [*chaos.poisoned, *chaos.killed]
    rows = {
        row["id"]: row
        for row in rt.sql(
            "SELECT id, completion_result AS res, completion_failure AS f, retry_count AS n, "
            "last_failure AS lf FROM sys_invocation WHERE id IN ("
            + (", ".join(f"'{i}'" for i in ids) or "''")
            + ")"
        ).to_pylist()
    }
    known = ("SystemExit: 3", "KeyboardInterrupt: ", "Poison: poisoned")
    bad = [
        (i, rows.get(i))
        for i, failing in chaos.poisoned.items()
        if (rows.get(i) or {}).get("res") != "success"
        or rows[i]["n"] < failing
        or rows[i]["lf"] not in known
    ]
    bad += [
        (i, rows.get(i))
        for i in chaos.killed
        if (rows.get(i) or {}).get("f") != "killed" or rows[i]["lf"] not in known
    ]
    r.checks["poisoned invocations failed as attempts, then healed or were killed"] = (
        "ok" if not bad else f"{len(bad)} of {len(ids)}, e.g. {bad[:2]}"
    )
    r.stats["poisoned"] = {"healed": len(chaos.poisoned), "killed": len(chaos.killed)}


def _check_sleeps(r: Report, rt: Runtime) -> None:
    """No timer fired before its time; no nap woke before its timer; and every sleep's timer
    lies at least the requested seconds after its invocation was accepted."""
    early = rt.sql(
        "SELECT t.invocation_id FROM sys_timer t WHERE t.fired AND t.fired_at < t.fire_at"
    ).num_rows
    woke_early = rt.sql(
        "SELECT i.id FROM sys_invocation i JOIN sys_timer t ON t.invocation_id = i.id "
        "AND t.kind = 'sleep' WHERE i.target_handler_name = 'nap' AND "
        "i.output::DOUBLE * 1000 < epoch_ms(t.fire_at)"
    ).num_rows
    short = rt.sql(
        "SELECT i.id, i.created_at, t.fire_at, i.input->>'seconds' AS s FROM sys_invocation i "
        "JOIN sys_timer t ON t.invocation_id = i.id AND t.kind = 'sleep' WHERE "
        "epoch_ms(t.fire_at) < epoch_ms(i.created_at) + floor((i.input->>'seconds')::DOUBLE "
        "* 1000)"
    ).to_pylist()
    sleeps = scalar(rt, "SELECT count(*) FROM sys_timer WHERE kind = 'sleep'")
    r.checks["no sleep woke early"] = (
        "ok"
        if early == woke_early == len(short) == 0
        else f"{early} timers fired early, {woke_early} naps woke early, {len(short)} timers set "
        f"shorter than asked, e.g. {short[:2]}"
    )
    r.stats["sleeps"] = sleeps


def _check_awakeables(chaos: ChaosBase, rt: Runtime) -> None:
    """One awakeable entry per approval, completed exactly once (completions are rows of
    their own in the journal's log table: ``sys_journal`` only says whether one exists), with
    the approval's own value; the resolver never had two resolutions of one accepted."""
    r = chaos.report
    rows = rt.sql(
        "WITH c AS (SELECT id, (meta->>'idx')::INTEGER AS idx, count(*) AS n FROM log "
        "WHERE kind = 'completion' GROUP BY ALL), "
        'e AS (SELECT invocation_id AS id, "index" AS idx, count(*) AS entries '
        "FROM sys_journal WHERE entry_type = 'awakeable' GROUP BY ALL) "
        "SELECT i.id, count(e.idx) AS awakeables, max(e.entries) AS entries, "
        "min(coalesce(c.n, 0)) AS min_done, max(coalesce(c.n, 0)) AS max_done "
        "FROM sys_invocation i LEFT JOIN e ON e.id = i.id "
        "LEFT JOIN c ON c.id = e.id AND c.idx = e.idx "
        "WHERE i.target_handler_name = 'approval' GROUP BY i.id"
    ).to_pylist()
    bad = [
        row
        for row in rows
        if (row["awakeables"], row["entries"], row["min_done"], row["max_done"]) != (1, 1, 1, 1)
    ]
    wrong = rt.sql(
        "SELECT id, output FROM sys_invocation WHERE target_handler_name = 'approval' AND "
        "(output IS NULL OR NOT contains(output::VARCHAR, id))"
    ).to_pylist()
    counts: dict[str, Any] = {}
    try:
        counts.update(
            ray.get(
                ray.get_actor(
                    apps.RESOLVER, namespace=apps.outside(chaos.namespace)
                ).counts.remote(),
                timeout=30,
            )
        )
    except Exception as e:
        counts["unavailable"] = str(e)
    twice = counts.get("resolved", 0) > len(rows)
    r.checks["every awakeable delivered once, with its own value"] = (
        "ok"
        if not bad and not wrong and not twice
        else f"{len(bad)} not completed exactly once (e.g. {bad[:2]}), {len(wrong)} wrong values "
        f"(e.g. {wrong[:2]}), resolver accepted {counts.get('resolved')} for {len(rows)}"
    )
    r.stats["awakeables"] = len(rows)
    r.stats["resolver"] = counts  # refused_second: second resolutions the runtime refused

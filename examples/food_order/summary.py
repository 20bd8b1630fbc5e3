"""The summary, read back from the journal with SQL once every order is done (joined with the
payment provider's ledger), and the invariants it must show."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from rich.console import Console

from actors import Runtime
from actors.client import tables
from examples.food_order import app
from examples.food_order.kill import Kill
from examples.food_order.orders import Placed


def arrow(relation: duckdb.DuckDBPyRelation) -> pa.Table:
    """A local DuckDB result as a ``pyarrow.Table`` (``.arrow()`` before DuckDB 1.4)."""
    to_table = getattr(relation, "to_arrow_table", None)
    return to_table() if to_table is not None else relation.arrow()


def summary(
    rt: Runtime,
    run: str,
    orders: list[Placed],
    ledger: Path,
    run_start_ms: int,
    kill: Kill | None,
    console: Console,
) -> dict[str, Any]:
    """Print the summary tables and the recovery; return what the invariants are checked on."""

    def show(title: str, table: pa.Table) -> None:
        console.print(tables.rich_table(table, title=f"[bold]{title}[/bold]"))

    order_filter = f"starts_with(service_key, '{run}-')"
    final = rt.sql(
        "SELECT value->>'$' AS final_status, count(*) AS orders FROM state "
        f"WHERE service_name = 'OrderProcessor' AND key = 'status' AND {order_filter} "
        "GROUP BY 1 ORDER BY 1"
    )
    show("Orders by final status (state)", final)

    # the journal's view of each order (status, journaled charge results) joined with the
    # payment provider's ledger, which counts charges outside the processes that asked
    status = rt.sql(
        "SELECT service_key AS order_id, value->>'$' AS status FROM state "
        f"WHERE service_name = 'OrderProcessor' AND key = 'status' AND {order_filter}"
    )
    journaled = rt.sql(
        "SELECT i.target_service_key AS order_id, count(*) AS journaled FROM sys_journal j "
        "JOIN sys_invocation i ON i.id = j.invocation_id WHERE j.entry_type = 'run' AND "
        "j.name = 'charge' AND j.result->>'failure' IS NULL AND i.target_handler_name = "
        f"'process' AND starts_with(i.target_service_key, '{run}-') GROUP BY 1"
    )
    db = duckdb.connect()
    db.register("status", status)
    db.register("journaled", journaled)
    cols = ", ".join(f"'{c}': 'VARCHAR'" for c in app.LEDGER_FIELDS)
    ledger.touch()
    path = str(ledger).replace("'", "''")
    db.execute(
        f"CREATE VIEW ledger AS SELECT * FROM read_csv('{path}', header = false, "
        f"columns = {{{cols}}})"
    )
    db.execute(
        "CREATE VIEW per_order AS "
        "SELECT s.order_id, s.status, coalesce(j.journaled, 0) AS journaled_charges, "
        "  count(l.event) FILTER (WHERE l.event = 'charged') AS ledger_charges, "
        "  count(l.event) AS attempts, "
        "  count(l.event) FILTER (WHERE l.event = 'unreachable') AS unreachable, "
        "  count(l.event) FILTER (WHERE l.event = 'replayed') AS replayed "
        "FROM status s LEFT JOIN journaled j USING (order_id) "
        "LEFT JOIN ledger l ON l.order_id = s.order_id GROUP BY ALL"
    )
    charges = arrow(
        db.sql(
            "SELECT status, ledger_charges AS charges_per_order, count(*) AS orders, "
            "  sum(journaled_charges)::BIGINT AS journaled_charges, "
            "  sum(attempts)::BIGINT AS attempts, "
            "  sum(unreachable)::BIGINT AS failed_before_charging, "
            "  sum(replayed)::BIGINT AS answered_again_by_token "
            "FROM per_order GROUP BY ALL ORDER BY 1, 2"
        )
    )
    show("Payment charges per order (payment provider's ledger ⋈ journal)", charges)

    in_status = rt.sql(f"""
        WITH s AS (
            SELECT i.target_service_key AS order_id, j.index, j.result->>'$' AS status,
                   j.created_at
            FROM sys_journal j JOIN sys_invocation i ON i.id = j.invocation_id
            WHERE i.target_service_name = 'OrderProcessor' AND i.target_handler_name = 'process'
              AND starts_with(i.target_service_key, '{run}-')
              AND j.entry_type = 'set_state' AND j.name = 'status'),
        d AS (
            SELECT status, index, epoch(lead(created_at) OVER (PARTITION BY order_id
                                                               ORDER BY index) - created_at) AS s
            FROM s)
        SELECT status, count(s) AS orders, round(avg(s), 2) AS avg_s, round(min(s), 2) AS min_s,
               round(max(s), 2) AS max_s
        FROM d WHERE s IS NOT NULL GROUP BY 1 ORDER BY min(index)""")
    show("Time in each status, seconds (status changes in sys_journal)", in_status)

    on_time = rt.sql(f"""
        WITH o AS (
            SELECT target_service_key AS order_id, (input->>'deliver_at_ms')::BIGINT AS due
            FROM sys_invocation WHERE target_service_name = 'OrderProcessor'
              AND target_handler_name = 'process' AND starts_with(target_service_key, '{run}-')),
        d AS (
            SELECT service_key AS order_id, (value->>'$')::BIGINT AS at FROM state
            WHERE service_name = 'DeliveryManager' AND key = 'delivered_at_ms'
              AND {order_filter})
        SELECT count(*) AS delivered,
               count(*) FILTER (WHERE d.at < o.due) AS before_requested_time,
               count(*) FILTER (WHERE d.at - o.due BETWEEN 0 AND 1000) AS within_1s,
               round(avg(d.at - o.due) / 1000, 2) AS avg_late_s,
               round(max(d.at - o.due) / 1000, 2) AS max_late_s
        FROM o JOIN d USING (order_id)""")
    show("Deliveries against the requested time", on_time)

    retries = rt.sql(f"""
        SELECT target_service_name AS service, target_handler_name AS handler,
               count(*) AS invocations, count(*) FILTER (WHERE status = 'completed') AS completed,
               sum(retry_count)::BIGINT AS retries,
               arg_max(last_failure, retry_count) AS for_example
        FROM sys_invocation WHERE created_at >= make_timestamp({run_start_ms} * 1000)
        GROUP BY ALL ORDER BY 1, 2""")
    show(
        "Invocations of this run (retries: attempts that failed and ran again from the journal)",
        retries,
    )

    rows = arrow(db.sql("SELECT * FROM per_order")).to_pylist()
    unfinished = sum(r["status"] not in app.FINAL for r in rows) + len(orders) - len(rows)
    if kill is not None and kill.at is not None:
        back = (
            f"Ray restarted it (pid {kill.new_pid}) {kill.back_after:.1f}s later"
            if kill.new_pid is not None
            else f"it did not come back ({kill.error})"
        )
        outcome = (
            "every order still finished"
            if not unfinished
            else f"{unfinished} orders did not finish"
        )
        console.print(
            f"[bold]Recovery:[/bold] killed {kill.name} (pid {kill.old_pid}) at "
            f"t+{kill.at:.1f}s with {kill.in_flight} orders in flight; {back}; "
            f"{outcome}."
        )

    # a shared handler answers while nothing else is running: it agrees with the SQL view
    by_handler = {p.order.id: rt.call(app.get_status, key=p.order.id) for p in orders}
    by_sql = dict(
        zip(status.column("order_id").to_pylist(), status.column("status").to_pylist(), strict=True)
    )
    agree = sum(by_handler[k] == by_sql.get(k) for k in by_handler)
    console.print(
        f"get_status (shared handler) agrees with the state view for {agree} of "
        f"{len(orders)} orders"
    )

    delivered = on_time.to_pylist()[0]
    result = {
        "run": run,
        "orders": len(orders),
        "final": dict(Counter(r["status"] for r in rows)),
        "unfinished": unfinished,
        "charges_per_paid_order": dict(
            Counter(str(r["ledger_charges"]) for r in rows if r["status"] == app.DELIVERED)
        ),
        "charges_per_rejected_order": dict(
            Counter(str(r["ledger_charges"]) for r in rows if r["status"] == app.REJECTED)
        ),
        "delivered_before_requested_time": delivered["before_requested_time"],
        "get_status_agrees": agree,
        "host_killed": kill is not None and kill.new_pid is not None,
    }
    return result


def check(result: dict[str, Any]) -> list[str]:
    """The invariants the summary violates (none on a good run)."""
    problems = []
    if result["unfinished"]:
        problems.append(f"{result['unfinished']} orders did not reach a final status")
    if set(result["charges_per_paid_order"]) - {"1"}:
        problems.append(f"charges per paid order: {result['charges_per_paid_order']}")
    if set(result["charges_per_rejected_order"]) - {"0"}:
        problems.append(f"charges per rejected order: {result['charges_per_rejected_order']}")
    if result["delivered_before_requested_time"]:
        problems.append(f"{result['delivered_before_requested_time']} orders delivered early")
    if result["get_status_agrees"] != result["orders"]:
        problems.append("get_status disagrees with the state view")
    return problems

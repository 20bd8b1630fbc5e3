"""The live view: while the orders run, a table of the orders by status (read from the journal
with SQL), the payment provider's counts and the killed host; a log line whenever a count
changes when the output is piped."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from actors import Runtime
from examples.food_order import app
from examples.food_order.kill import Kill, kill_host
from examples.food_order.orders import Placed, Plan, place_due

COLORS = {
    app.CREATED: "white",
    app.SCHEDULED: "cyan",
    app.IN_PREPARATION: "yellow",
    app.SCHEDULING_DELIVERY: "magenta",
    app.DELIVERED: "green",
    app.REJECTED: "red",
}


def snapshot(rt: Runtime, run: str) -> tuple[dict[str, str], Counter[str]]:
    """Each order's status (its ``status`` state) and its ``process`` invocation's status."""
    states = rt.sql(
        "SELECT service_key AS id, value->>'$' AS status FROM state WHERE service_name = "
        f"'OrderProcessor' AND key = 'status' AND starts_with(service_key, '{run}-')"
    )
    invocations = rt.sql(
        "SELECT status, count(*) AS n FROM sys_invocation WHERE target_service_name = "
        "'OrderProcessor' AND target_handler_name = 'process' AND "
        f"starts_with(target_service_key, '{run}-') GROUP BY 1"
    )
    return (
        dict(
            zip(states.column("id").to_pylist(), states.column("status").to_pylist(), strict=True)
        ),
        Counter(
            dict(
                zip(
                    invocations.column("status").to_pylist(),
                    invocations.column("n").to_pylist(),
                    strict=True,
                )
            )
        ),
    )


def payments_line(ledger: Path, run: str) -> str:
    """The payment provider's counts for this run, from its ledger."""
    events = Counter(
        r["event"] for r in app.read_ledger(ledger) if r["order_id"].startswith(f"{run}-")
    )
    return (
        f"payments: {events['charged']} charged · {events['declined']} declined · retried: "
        f"{events['unreachable']} unreachable, {events['replayed']} answers lost (same "
        "token: not charged again)"
    )


def render(
    orders: list[Placed],
    statuses: dict[str, str],
    invocations: Counter[str],
    elapsed: float,
    kill: Kill | None,
    payments: str,
) -> Group:
    """One frame of the live view."""
    done = sum(s in app.FINAL for s in statuses.values())
    by_status: dict[str, list[str]] = {s: [] for s in app.STATUSES}
    for oid, s in sorted(statuses.items()):
        by_status.setdefault(s, []).append(oid.rsplit("-", 1)[1])
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("status", min_width=20)
    table.add_column("orders", justify="right")
    table.add_column("order numbers", overflow="fold")
    unplaced = sum(not p.sent for p in orders)
    waiting = sum(p.sent for p in orders) - len(statuses)
    if unplaced or waiting:
        table.add_row("(being placed)", str(unplaced + waiting), "")
    for s, ids in by_status.items():
        table.add_row(Text(s, style=COLORS.get(s, "")), str(len(ids)), " ".join(ids))
    inv = " · ".join(f"{k} {v}" for k, v in sorted(invocations.items()))
    head = Table.grid(padding=(0, 1))
    head.add_row(
        ProgressBar(total=len(orders), completed=done, width=40),
        Text(f"{done}/{len(orders)} orders done   t+{elapsed:4.1f}s", style="bold"),
    )
    lines: list[RenderableType] = [
        head,
        table,
        Text(f"process invocations: {inv or '-'}", style="dim"),
        Text(payments, style="dim"),
    ]
    if kill is not None and kill.at is not None:
        msg = f"✖ killed {kill.name} (pid {kill.old_pid}) at t+{kill.at:.1f}s"
        if kill.new_pid is not None:
            msg += f"; Ray restarted it as pid {kill.new_pid} in {kill.back_after:.1f}s"
        lines.append(Text(msg, style="bold red"))
    return Group(*lines)


def watch(
    rt: Runtime,
    run: str,
    orders: list[Placed],
    plan: Plan,
    ledger: Path,
    kill: Kill | None,
    console: Console,
) -> bool:
    """Place the orders on time and show progress until every order is done; kill the host
    once the first order is being prepared. False on timeout."""
    started = time.monotonic()
    last_line = ""

    def frame() -> tuple[Group, bool, str]:
        elapsed = time.monotonic() - started
        place_due(rt, orders, elapsed)
        statuses, invocations = snapshot(rt, run)
        if (
            kill is not None
            and kill.at is None
            and all(p.sent for p in orders)
            and any(
                s in (app.IN_PREPARATION, app.SCHEDULING_DELIVERY, app.DELIVERED)
                for s in statuses.values()
            )
        ):
            kill_host(
                kill, rt.namespace, started, sum(s not in app.FINAL for s in statuses.values())
            )
        finished = (
            all(p.sent for p in orders)
            and invocations["completed"] == len(orders)
            and len(statuses) == len(orders)
        )
        counts = Counter(statuses.values())
        line = (
            "  ".join(f"{s} {counts[s]}" for s in app.STATUSES)
            + f"  | process invocations: {dict(sorted(invocations.items()))}"
        )
        return (
            render(orders, statuses, invocations, elapsed, kill, payments_line(ledger, run)),
            finished,
            line,
        )

    finished = False
    with Live(
        console=console, refresh_per_second=8, transient=False, auto_refresh=console.is_terminal
    ) as live:
        while not finished and time.monotonic() - started < plan.timeout:
            view, finished, line = frame()
            if console.is_terminal:
                live.update(view)
            elif line != last_line:  # piped: a log line whenever a count changes
                console.print(f"t+{time.monotonic() - started:5.1f}s  {line}")
                last_line = line
            if not finished:
                time.sleep(0.3)
            elif not console.is_terminal:
                live.update(view)  # the last frame, printed when the Live display stops
    return finished

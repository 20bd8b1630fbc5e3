"""The food-order example: place a few dozen orders on a local runtime, watch them live, kill a
host part-way, and read back from the journal with SQL what happened.

Run from the repository root:

    python examples/food_order/main.py [DATA_DIR] [--orders N] [--short] [--seed S] [--no-kill]

(or ``python -m examples.food_order ...``). DATA_DIR defaults to ./raystate-data; the payment
provider's ledger is DATA_DIR/payments.csv. Each run on a data dir gets its own order ids
(``r1-01``, ``r2-01`` ...), so runs add up and never mix. ``--short`` is the quick version the
test suite runs (8 orders, short waits).

The handlers and the outside world (payment provider, restaurant) are in ``app.py``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

if __package__ in (None, ""):  # run as a file: make ``examples.food_order`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import duckdb
import pyarrow as pa
import ray
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from actors import Runtime
from actors.client import tables
from examples.food_order import app

MENU = {
    "margherita": 1150,
    "pad thai": 1390,
    "ramen": 1450,
    "falafel wrap": 890,
    "green curry": 1290,
    "tiramisu": 650,
    "lemonade": 350,
}
COLORS = {
    app.CREATED: "white",
    app.SCHEDULED: "cyan",
    app.IN_PREPARATION: "yellow",
    app.SCHEDULING_DELIVERY: "magenta",
    app.DELIVERED: "green",
    app.REJECTED: "red",
}


@dataclass(frozen=True)
class Plan:
    """How many orders, and how long everything takes (seconds unless named otherwise)."""

    orders: int = 30
    place_within: float = 3.0  # orders arrive over this long
    deliver_in: tuple[float, float] = (7.0, 11.0)  # requested delivery, after placing
    lead_ms: int = 4000  # preparation starts this long before the delivery time
    cook: tuple[float, float] = (0.5, 2.5)
    ride: tuple[float, float] = (0.5, 1.5)
    decline_rate: float = 0.12  # orders paid with a card the provider declines
    payment_failure_rate: float = 0.3
    suspend_after: float = 2.0  # orders waiting longer than this leave memory
    timeout: float = 120.0


SHORT = Plan(
    orders=8,
    place_within=1.0,
    deliver_in=(3.0, 5.0),
    lead_ms=2000,
    cook=(0.2, 0.8),
    ride=(0.2, 0.5),
    suspend_after=1.0,
    timeout=90.0,
)


@dataclass
class Placed:
    order: app.Order
    place_at: float  # seconds after the start
    deliver_in: float
    sent: bool = False


@dataclass
class Kill:
    """The host we kill part-way, and what happened to it."""

    name: str
    at: float | None = None  # seconds after the start
    in_flight: int = 0
    old_pid: int | None = None
    new_pid: int | None = None
    back_after: float | None = None
    error: str | None = None
    thread: threading.Thread | None = field(default=None, repr=False)


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="food_order", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "data_dir",
        nargs="?",
        default="raystate-data",
        help="journal and payment ledger go here (default: ./raystate-data)",
    )
    p.add_argument("--orders", type=positive, help="how many orders (default 30, --short: 8)")
    p.add_argument("--short", action="store_true", help="few orders, short waits (for tests)")
    p.add_argument("--seed", type=int, default=7, help="seed of orders and payment failures")
    p.add_argument(
        "--no-kill", dest="kill", action="store_false", help="do not kill a host part-way"
    )
    p.add_argument("--namespace", default="food-order", help="the runtime's Ray namespace")
    return p.parse_args(argv)


# -- placing orders --------------------------------------------------------------------------


def next_run(rt: Runtime) -> str:
    """``r<n>``: one more than the runs this data dir has seen."""
    seen = rt.sql(
        "SELECT count(DISTINCT split_part(target_service_key, '-', 1)) AS n "
        "FROM sys_invocation WHERE target_service_name = 'OrderProcessor'"
    )
    return f"r{seen.column('n')[0].as_py() + 1}"


def make_orders(run: str, plan: Plan, seed: int, backends: app.Backends) -> list[Placed]:
    rng = random.Random(seed)
    placed = []
    for n in range(1, plan.orders + 1):
        items = rng.sample(sorted(MENU), rng.randint(1, 3))
        declined = rng.random() < plan.decline_rate
        card = app.DECLINED_CARD if declined else f"4242-4242-4242-{rng.randrange(10_000):04d}"
        order = app.Order(
            id=f"{run}-{n:02d}",
            items=items,
            card=card,
            total_cents=sum(MENU[i] for i in items) + 299,  # + delivery fee
            deliver_at_ms=0,
            backends=backends,
        )
        placed.append(
            Placed(order, rng.uniform(0, plan.place_within), rng.uniform(*plan.deliver_in))
        )
    if plan.orders >= 4 and not any(p.order.card == app.DECLINED_CARD for p in placed):
        placed[rng.randrange(len(placed))].order.card = app.DECLINED_CARD  # show one rejection
    return sorted(placed, key=lambda p: p.place_at)


def place_due(rt: Runtime, orders: list[Placed], elapsed: float) -> None:
    """Send the orders whose time has come; each returns once the order is durable."""
    for p in orders:
        if not p.sent and p.place_at <= elapsed:
            p.order.deliver_at_ms = app.ms(time.time() + p.deliver_in)
            # the order id as idempotency key: placing an order twice processes it once
            rt.send(app.process, key=p.order.id, arg=p.order, idempotency_key=p.order.id)
            p.sent = True


# -- killing a host --------------------------------------------------------------------------


def kill_host(kill: Kill, namespace: str, started: float, in_flight: int) -> None:
    """Kill the host process (Ray restarts it; it resumes its orders from the journal) and
    note how long it took to come back, in a thread so that the live view goes on."""
    kill.at, kill.in_flight = time.monotonic() - started, in_flight

    def go() -> None:
        try:
            actor = ray.get_actor(kill.name, namespace=namespace)
            kill.old_pid = cast(int, ray.get(actor.pid.remote(), timeout=30))
            t0 = time.monotonic()
            ray.kill(actor, no_restart=False)
            while kill.new_pid is None and time.monotonic() - t0 < 60:
                try:
                    pid = cast(
                        int,
                        ray.get(
                            ray.get_actor(kill.name, namespace=namespace).pid.remote(), timeout=10
                        ),
                    )
                    if pid != kill.old_pid:
                        kill.new_pid, kill.back_after = pid, time.monotonic() - t0
                except Exception:  # still restarting
                    time.sleep(0.1)
        except Exception as e:
            kill.error = f"{type(e).__name__}: {e}"

    kill.thread = threading.Thread(target=go, daemon=True, name="kill-host")
    kill.thread.start()


# -- watching --------------------------------------------------------------------------------


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


# -- the summary, read back from the journal -------------------------------------------------


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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = SHORT if args.short else Plan()
    if args.orders:
        plan = replace(plan, orders=args.orders)
    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    ledger = data_dir / "payments.csv"
    wide = None if sys.stdout.isatty() else 1_000_000  # a pipe gets whole lines
    console = Console(highlight=False, width=wide, soft_wrap=wide is not None)
    console.print(f"Starting a local runtime on {data_dir} (namespace {args.namespace}) ...")
    t0 = time.monotonic()
    # two host processes per service are plenty for a few dozen orders (and start quickly);
    # orders that wait longer than suspend_after leave memory and are replayed when woken
    rt = Runtime.start(
        app.SERVICES,
        data_dir=data_dir,
        namespace=args.namespace,
        pool_size=2,
        suspend_after=timedelta(seconds=plan.suspend_after),
    )
    try:
        kitchen = app.start_kitchen(args.namespace, args.seed, plan.cook)  # keep the handle
        run = next_run(rt)
        backends = app.Backends(
            ledger=str(ledger),
            namespace=args.namespace,
            seed=args.seed,
            payment_failure_rate=plan.payment_failure_rate,
            lead_ms=plan.lead_ms,
            ride_s=plan.ride,
        )
        orders = make_orders(run, plan, args.seed, backends)
        console.print(
            f"Runtime up in {time.monotonic() - t0:.1f}s. Run {run}: placing "
            f"{len(orders)} orders over {plan.place_within:.0f}s, each to be delivered "
            f"{plan.deliver_in[0]:.0f}-{plan.deliver_in[1]:.0f}s after it is placed."
        )
        run_start_ms = app.ms(time.time()) - 1000
        kill = Kill(f"host:{app.processor.name}:0") if args.kill else None  # see README: Hosts
        finished = watch(rt, run, orders, plan, ledger, kill, console)
        ray.get(kitchen.close.remote())  # type: ignore[attr-defined]
        del kitchen  # the restaurant closes once the driver lets go of it
        if kill is not None and kill.thread is not None:
            kill.thread.join(timeout=30)
        if not finished:
            console.print(f"[red]not every order finished within {plan.timeout:.0f}s[/red]")
        console.print()
        result = summary(rt, run, orders, ledger, run_start_ms, kill, console)
        result["elapsed_s"] = round(time.monotonic() - t0, 1)
        problems = check(result) + ([] if finished else ["timed out"])
        console.print(
            (
                "[green]All invariants hold[/green]"
                if not problems
                else "[red]Invariants violated: " + "; ".join(problems) + "[/red]"
            )
            + f" ({result['elapsed_s']}s in all)."
        )
        print("SUMMARY " + json.dumps(result), flush=True)
        return 1 if problems else 0
    finally:
        rt.shutdown()


if __name__ == "__main__":
    sys.exit(main())

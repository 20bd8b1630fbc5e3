"""The food-order example: place a few dozen orders on a local runtime, watch them live, kill a
host part-way, and read back from the journal with SQL what happened.

Run from the repository root:

    python examples/food_order/main.py [DATA_DIR] [--orders N] [--short] [--seed S] [--no-kill]

(or ``python -m examples.food_order ...``). DATA_DIR defaults to ./raystate-data; the payment
provider's ledger is DATA_DIR/payments.csv. Each run on a data dir gets its own order ids
(``r1-01``, ``r2-01`` ...), so runs add up and never mix. ``--short`` is the quick version the
test suite runs (8 orders, short waits).

This module is the program: its arguments, and a run from start to summary. The rest:

    ``app.py``      the handlers, and the outside world (payment provider, restaurant)
    ``orders.py``   the menu, the plan, and placing the orders on time
    ``kill.py``     killing a host part-way
    ``live.py``     the live view while the orders run
    ``summary.py``  the summary read back from the journal, and the invariants it must show
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make ``examples.food_order`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import ray
from rich.console import Console

from actors import Runtime
from examples.food_order import app
from examples.food_order.kill import Kill
from examples.food_order.live import watch
from examples.food_order.orders import SHORT, Plan, make_orders, next_run
from examples.food_order.summary import check, summary


def positive(text: str) -> int:
    """``--orders``: a whole number of at least 1."""
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


def main(argv: list[str] | None = None) -> int:
    """One run: start the runtime, place and watch the orders, summarise; 1 if an invariant
    failed."""
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

"""The orders of a run: the menu, the plan (how many orders, how long everything takes), and
placing each order on time. Each run on a data dir gets its own order ids (``r1-01``,
``r2-01`` ...)."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from actors import Runtime
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
    """An order, and when it is (or was) placed."""

    order: app.Order
    place_at: float  # seconds after the start
    deliver_in: float
    sent: bool = False


def next_run(rt: Runtime) -> str:
    """``r<n>``: one more than the runs this data dir has seen."""
    seen = rt.sql(
        "SELECT count(DISTINCT split_part(target_service_key, '-', 1)) AS n "
        "FROM sys_invocation WHERE target_service_name = 'OrderProcessor'"
    )
    return f"r{seen.column('n')[0].as_py() + 1}"


def make_orders(run: str, plan: Plan, seed: int, backends: app.Backends) -> list[Placed]:
    """The run's orders, in the order they are placed (the same for the same seed)."""
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

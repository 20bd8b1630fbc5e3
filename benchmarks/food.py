"""The food-order flow of the seed (``order_processor.ts``), as a benchmark workload.

It needs awakeables and awaited calls (``ctx.awakeable``, ``ctx.resolve_awakeable``,
``ctx.object_call``); the registry (``benchmarks.workloads``) skips it where
``InvocationContext`` lacks them.

One order per call, each on its own key: set the status, charge (a journaled action), sleep
until the preparation time (10 ms, as in Restate's run of this flow), hand the restaurant an
awakeable and wait until the restaurant resolves it, then an awaited call to the delivery
object of the order, and the last status. Restate's figures for this flow were taken with
httpx calls to the payment and restaurant services; here both are in-process (a ``ctx.run`` and
a durable send to a service that resolves the awakeable), so the comparison is of the durable
steps, not of HTTP.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

from pydantic import BaseModel

from actors import Context, ObjectContext, Runtime, Service, VirtualObject

orders = VirtualObject("BenchFoodOrder")
restaurant = Service("BenchRestaurant")
delivery = VirtualObject("BenchDelivery")


class Order(BaseModel):
    id: str
    total_cost: int
    delivery_delay_ms: int = 0


class Preparation(BaseModel):
    order_id: str
    awakeable_id: str


def _charge(order_id: str, token: str, amount: int) -> bool:
    return amount >= 0


def _cook(order_id: str) -> str:
    return "ready"


def _find_driver(order_id: str) -> str:
    return f"driver-{len(order_id) % 7}"


@orders.handler()
async def process(ctx: ObjectContext, order: Order) -> str:
    ctx.set("status", "CREATED")
    token = str(ctx.rand.uuid4())
    if not await ctx.run("charge", _charge, order.id, token, order.total_cost):
        ctx.set("status", "REJECTED")
        return "REJECTED"
    ctx.set("status", "SCHEDULED")
    await ctx.sleep(timedelta(milliseconds=order.delivery_delay_ms))
    awakeable_id, prepared = ctx.awakeable()  # type: ignore[attr-defined]
    ctx.service_send(prepare, Preparation(order_id=order.id, awakeable_id=awakeable_id))
    ctx.set("status", "IN_PREPARATION")
    await prepared
    ctx.set("status", "SCHEDULING_DELIVERY")
    await ctx.object_call(start_delivery, order.id, order)  # type: ignore[attr-defined]
    ctx.set("status", "DELIVERED")
    return "DELIVERED"


@restaurant.handler()
async def prepare(ctx: Context, job: Preparation) -> None:
    meal = await ctx.run("cook", _cook, job.order_id)
    ctx.resolve_awakeable(job.awakeable_id, meal)  # type: ignore[attr-defined]


@delivery.handler()
async def start_delivery(ctx: ObjectContext, order: Order) -> str:
    driver: str = await ctx.run("find driver", _find_driver, order.id)
    ctx.set("driver", driver)
    return driver


ALL = [orders, restaurant, delivery]


class FoodLoad:
    """One new order (and key) per call. Check: every call returned DELIVERED, and every
    acknowledged order's status is DELIVERED with a driver assigned."""

    def __init__(self, rt: Runtime, prefix: str) -> None:
        self.rt, self.prefix = rt, prefix
        self.results: Counter[str] = Counter()

    async def call(self, n: int) -> str:
        order_id = f"{self.prefix}{n}"
        # a dict, not an Order: the runtime validates against its own copy of the (pickled by
        # value) definitions, whose Order is another class than this process's import of it
        order = Order(id=order_id, total_cost=10 + n % 90, delivery_delay_ms=10).model_dump()
        result: str = await self.rt.call_async(process, key=order_id, arg=order)
        self.results[result] += 1
        return result

    async def check(self) -> list[str]:
        acked = sum(self.results.values())
        problems = []
        if self.results["DELIVERED"] != acked:
            problems.append(f"results {dict(self.results)}, all {acked} should be DELIVERED")
        table = await self.rt.sql_async(
            "SELECT service_name AS s, count(*) AS n FROM state WHERE"
            f" starts_with(service_key, '{self.prefix}') AND ((service_name = '{orders.name}'"
            f" AND key = 'status' AND value->>'$' = 'DELIVERED') OR (service_name ="
            f" '{delivery.name}' AND key = 'driver')) GROUP BY 1"
        )
        counts = dict(
            zip(table.column("s").to_pylist(), table.column("n").to_pylist(), strict=True)
        )
        for name in (orders.name, delivery.name):
            if counts.get(name, 0) != acked:
                problems.append(f"{counts.get(name, 0)} {name} keys done, {acked} acknowledged")
        return problems

    def notes(self) -> dict[str, Any]:
        return {"orders": sum(self.results.values())}

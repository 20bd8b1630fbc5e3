"""The benchmark handlers written against Restate's Python SDK, one for one with raystate's
(``benchmarks.apps`` and ``benchmarks.food``): same service, handler and state names, same
steps, so both systems do the same durable work per call.

Only the SDK process (``serve``) imports this module: it needs ``restate-sdk``.
"""

from __future__ import annotations

from datetime import timedelta

import restate
from pydantic import BaseModel
from restate import Context, ObjectContext, ObjectSharedContext, Service, VirtualObject

# -- counter (hot, keys1k) ------------------------------------------------------------------

counter = VirtualObject("BenchCounter")


@counter.handler()
async def add(ctx: ObjectContext, delta: int) -> int:
    n = (await ctx.get("count", type_hint=int)) or 0
    ctx.set("count", n + delta)
    return n + delta


@counter.handler(kind="shared")
async def get(ctx: ObjectSharedContext) -> int:
    return (await ctx.get("count", type_hint=int)) or 0


# -- three steps ----------------------------------------------------------------------------

steps = Service("BenchSteps")


def _inc(x: int) -> int:
    return x + 1


def _double(x: int) -> int:
    return x * 2


def _dec(x: int) -> int:
    return x - 1


@steps.handler()
async def three_steps(ctx: Context, x: int) -> int:
    """Three journaled side effects of plain sync functions, as in ``benchmarks.apps`` (the SDK
    runs a sync action on its thread pool)."""
    a = await ctx.run_typed("inc", _inc, x=x)
    b = await ctx.run_typed("double", _double, x=a)
    return await ctx.run_typed("dec", _dec, x=b)


# -- food order -----------------------------------------------------------------------------

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
    token = str(ctx.uuid())
    if not await ctx.run_typed(
        "charge", _charge, order_id=order.id, token=token, amount=order.total_cost
    ):
        ctx.set("status", "REJECTED")
        return "REJECTED"
    ctx.set("status", "SCHEDULED")
    await ctx.sleep(timedelta(milliseconds=order.delivery_delay_ms))
    awakeable_id, prepared = ctx.awakeable(type_hint=str)
    ctx.service_send(prepare, Preparation(order_id=order.id, awakeable_id=awakeable_id))
    ctx.set("status", "IN_PREPARATION")
    await prepared
    ctx.set("status", "SCHEDULING_DELIVERY")
    await ctx.object_call(start_delivery, key=order.id, arg=order)
    ctx.set("status", "DELIVERED")
    return "DELIVERED"


@restaurant.handler()
async def prepare(ctx: Context, job: Preparation) -> None:
    meal = await ctx.run_typed("cook", _cook, order_id=job.order_id)
    ctx.resolve_awakeable(job.awakeable_id, meal)


@delivery.handler()
async def start_delivery(ctx: ObjectContext, order: Order) -> str:
    driver = await ctx.run_typed("find driver", _find_driver, order_id=order.id)
    ctx.set("driver", driver)
    return driver


app = restate.app(services=[counter, steps, orders, restaurant, delivery])

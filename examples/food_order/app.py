"""The food-order processor of the seed document (``order_processor.ts``) as Python handlers,
with the outside world it talks to.

Inside raystate (durable):
    ``OrderProcessor``   a virtual object per order id: ``process`` walks the order through its
                         statuses; ``get_status`` (shared) reads the status at any time.
    ``DeliveryManager``  a virtual object per order id: finds a driver, rides, hands over.
    ``DriverPool``       a virtual object per region: the free drivers, assigned one at a time.

Outside (plain code, not durable, reached from ``ctx.run`` steps):
    the payment provider  ``charge()``: an idempotent charge API keyed by a token; it fails now
                          and then (before or after charging) and declines some cards. It keeps
                          a ledger file, ``payments.csv``, so a charge is counted by whoever
                          made it, whatever happens to the process that asked for it.
    the restaurant        ``Kitchen``: its own Ray actor; takes a ticket with an awakeable id
                          and resolves the awakeable when the food is ready.

The services' addresses (ledger path, the restaurant's Ray namespace) travel in each order as
``Backends``; a real deployment would configure URLs instead.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import random
import threading
import time
from datetime import timedelta
from pathlib import Path

import ray
from pydantic import BaseModel

from actors import (
    AlreadyCompletedError,
    ObjectContext,
    ObjectSharedContext,
    RetryPolicy,
    Runtime,
    TerminalError,
    VirtualObject,
)

log = logging.getLogger("food_order")

# statuses of an order, in the order they happen (the seed's ``Status``)
CREATED, SCHEDULED, IN_PREPARATION, SCHEDULING_DELIVERY, DELIVERED, REJECTED = (
    "CREATED",
    "SCHEDULED",
    "IN_PREPARATION",
    "SCHEDULING_DELIVERY",
    "DELIVERED",
    "REJECTED",
)
STATUSES = (CREATED, SCHEDULED, IN_PREPARATION, SCHEDULING_DELIVERY, DELIVERED, REJECTED)
FINAL = (DELIVERED, REJECTED)

DECLINED_CARD = "4000-0000-0000-0002"  # the payment provider always declines this one
KITCHEN = "restaurant"  # the restaurant's Ray actor name (in the runtime's namespace)
REGION = "downtown"  # the DriverPool key
DRIVERS = ("Ada", "Bo", "Cyd", "Dee", "Eli", "Fay", "Gus", "Hal")


class Backends(BaseModel):
    """Where the outside services of an order live, and how they behave."""

    ledger: str  # the payment provider's ledger file
    namespace: str  # the Ray namespace of the restaurant actor
    seed: int = 7  # the payment provider's failures are drawn from this
    payment_failure_rate: float = 0.3  # chance that one charge attempt fails (transiently)
    lead_ms: int = 4000  # preparation starts this long before the requested delivery time
    ride_s: tuple[float, float] = (0.5, 1.5)


class Order(BaseModel):
    id: str
    items: list[str]
    total_cents: int
    card: str
    deliver_at_ms: int  # the requested delivery time (epoch ms): never deliver before it
    backends: Backends


class Meal(BaseModel):
    order_id: str
    chef: str
    cooked_s: float


class Delivery(BaseModel):
    driver: str
    delivered_at_ms: int


def ms(seconds: float) -> int:
    return round(seconds * 1000)


# -- OrderProcessor: the seed's handler ------------------------------------------------------

processor = VirtualObject(
    "OrderProcessor",
    # a failed attempt (the payment gateway timed out ...) is retried from its journal soon
    retry_policy=RetryPolicy(
        initial_interval=timedelta(milliseconds=100), max_interval=timedelta(seconds=1)
    ),
)


@processor.handler()
async def process(ctx: ObjectContext, order: Order) -> str:
    # 1. Set status
    ctx.set("status", CREATED)
    # 2. Handle payment: the token is the same on every replay, so the provider charges once
    token = str(ctx.rand.uuid4())
    try:
        charge_id = await ctx.run(
            "charge", charge, order.backends, order.id, token, order.total_cents, order.card
        )
    except TerminalError as declined:
        ctx.set("status", REJECTED)
        ctx.set("rejection", declined.message)
        return REJECTED
    ctx.set("charge", charge_id)
    # 3. Wait until the preparation time (a durable timer: survives any crash, never early)
    ctx.set("status", SCHEDULED)
    now_ms = ms(await ctx.time())
    await ctx.sleep(
        timedelta(milliseconds=max(0, order.deliver_at_ms - order.backends.lead_ms - now_ms))
    )
    # 4. Trigger preparation: the restaurant resolves the awakeable when the food is ready
    awakeable_id, prepared = ctx.awakeable(Meal)
    ticket: str = await ctx.run(
        "restaurant", send_ticket, order.backends.namespace, order.id, awakeable_id
    )
    ctx.set("ticket", ticket)
    ctx.set("status", IN_PREPARATION)
    meal: Meal = await prepared
    ctx.set("chef", meal.chef)
    ctx.set("status", SCHEDULING_DELIVERY)
    # 5. Find a driver and start delivery (an awaited call to another object, run once)
    delivery: Delivery = await ctx.object_client(delivery_manager, order.id).start_delivery(order)
    ctx.set("driver", delivery.driver)
    ctx.set("status", DELIVERED)
    return DELIVERED


@processor.handler(kind="shared")
async def get_status(ctx: ObjectSharedContext) -> str | None:
    return await ctx.get("status")


# -- DeliveryManager and DriverPool ----------------------------------------------------------

delivery_manager = VirtualObject("DeliveryManager")
driver_pool = VirtualObject("DriverPool")


@delivery_manager.handler()
async def start_delivery(ctx: ObjectContext, order: Order) -> Delivery:
    while (driver := await ctx.object_call(assign_driver, REGION, order.id)) is None:
        await ctx.sleep(timedelta(milliseconds=300))  # every driver is out: ask again soon
    ctx.set("driver", driver)
    await ctx.sleep(ctx.rand.uniform(*order.backends.ride_s))  # the ride
    early_ms = order.deliver_at_ms - ms(await ctx.time())
    if early_ms > 0:  # too early: the driver waits at the door
        ctx.set("waiting_ms", early_ms)
        await ctx.sleep(timedelta(milliseconds=early_ms))
    delivered_at_ms = ms(await ctx.time())
    ctx.set("delivered_at_ms", delivered_at_ms)
    ctx.object_send(release_driver, REGION, driver)
    return Delivery(driver=driver, delivered_at_ms=delivered_at_ms)


@driver_pool.handler()
async def assign_driver(ctx: ObjectContext, order_id: str) -> str | None:
    free: list[str] = await ctx.get("free", list(DRIVERS))
    if not free:
        return None
    driver, *rest = free
    ctx.set("free", rest)
    ctx.set(f"on:{driver}", order_id)
    return driver


@driver_pool.handler()
async def release_driver(ctx: ObjectContext, driver: str) -> None:
    free: list[str] = await ctx.get("free", list(DRIVERS))
    ctx.set("free", [*free, driver])
    ctx.clear(f"on:{driver}")


SERVICES = [processor, delivery_manager, driver_pool]


# -- the payment provider (outside raystate) -------------------------------------------------

LEDGER_FIELDS = ("at_ms", "event", "order_id", "token", "charge_id", "amount_cents", "pid")


def _append(path: str, row: list[object]) -> None:
    """One CSV line, one ``write`` with O_APPEND: concurrent writers never interleave."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(row)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, buf.getvalue().encode())
    finally:
        os.close(fd)


def read_ledger(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    p = Path(path)
    if not p.exists():
        return []
    with p.open(newline="") as f:
        return list(csv.DictReader(f, fieldnames=LEDGER_FIELDS))


def charge(backends: Backends, order_id: str, token: str, amount_cents: int, card: str) -> str:
    """The payment provider's charge API: returns the charge id.

    Idempotent by ``token``: a token that was charged before returns that charge again
    ("replayed") and charges nothing. Transient failures raise ``ConnectionError`` (nothing
    charged) or ``TimeoutError`` (charged, but the answer was lost): the caller retries with the
    same token. A declined card is a ``TerminalError`` (402): retrying would not help.
    """
    past = [r for r in read_ledger(backends.ledger) if r["token"] == token]
    rng = random.Random(f"{backends.seed}:{order_id}:{len(past)}")  # reproducible per attempt

    def record(event: str, charge_id: str = "") -> None:
        _append(
            backends.ledger,
            [ms(time.time()), event, order_id, token, charge_id, amount_cents, os.getpid()],
        )

    time.sleep(rng.uniform(0.02, 0.1))  # the network
    if done := [r["charge_id"] for r in past if r["event"] == "charged"]:
        record("replayed", done[0])
        return done[0]
    roll = rng.random()
    if roll < backends.payment_failure_rate / 2:
        record("unreachable")
        raise ConnectionError("payment gateway unreachable")
    if card == DECLINED_CARD:
        record("declined")
        raise TerminalError(f"card {card} declined", 402)
    charge_id = f"ch_{token[:8]}"
    record("charged", charge_id)
    if roll < backends.payment_failure_rate:
        raise TimeoutError("payment gateway timed out (after charging)")
    return charge_id


# -- the restaurant (outside raystate) -------------------------------------------------------


async def send_ticket(namespace: str, order_id: str, awakeable_id: str) -> str:
    """Hand the order to the restaurant's actor; returns once it has taken the ticket."""
    kitchen = ray.get_actor(KITCHEN, namespace=namespace)
    return await kitchen.prepare.remote(order_id, awakeable_id)


class Kitchen:
    """The restaurant, a Ray actor of its own: cooks each ticket for a while (in a thread),
    then resolves the order's awakeable through a ``Runtime`` it connects to. A ticket sent
    twice (the handler's ``ctx.run`` ran again after a crash) is cooked once."""

    CHEFS = ("Ana", "Jun", "Noor")

    def __init__(self, namespace: str, seed: int, cook_s: tuple[float, float]) -> None:
        self.namespace, self.seed, self.cook_s = namespace, seed, cook_s
        self.tickets: dict[str, int] = {}  # awakeable id -> ticket number
        self._lock = threading.Lock()
        self._rt: Runtime | None = None

    def prepare(self, order_id: str, awakeable_id: str) -> str:
        with self._lock:
            if awakeable_id not in self.tickets:
                self.tickets[awakeable_id] = len(self.tickets) + 1
                threading.Thread(
                    target=self._cook, args=(order_id, awakeable_id), daemon=True
                ).start()
            return f"ticket {self.tickets[awakeable_id]}"

    def tickets_taken(self) -> int:
        return len(self.tickets)

    def close(self) -> None:
        """Close the kitchen's client of the runtime (its sockets), so the actor exits clean."""
        with self._lock:
            if self._rt is not None:
                self._rt.close()
                self._rt = None

    def _runtime(self) -> Runtime:
        with self._lock:
            if self._rt is None:
                self._rt = Runtime.connect(self.namespace)
            return self._rt

    def _cook(self, order_id: str, awakeable_id: str) -> None:
        rng = random.Random(f"{self.seed}:{order_id}")
        seconds = rng.uniform(*self.cook_s)
        time.sleep(seconds)
        meal = Meal(order_id=order_id, chef=rng.choice(self.CHEFS), cooked_s=round(seconds, 2))
        delay = 0.1
        while True:
            try:
                self._runtime().resolve_awakeable(awakeable_id, meal.model_dump())
                return
            except AlreadyCompletedError:
                return
            except TerminalError:
                log.exception("the order %s refused its meal", order_id)
                return
            except Exception:  # the runtime is recovering: try again
                log.warning("resolving %s failed; retrying", awakeable_id, exc_info=True)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)


def start_kitchen(namespace: str, seed: int, cook_s: tuple[float, float]) -> object:
    """Start (or find) the restaurant actor in ``namespace``; returns once it is open. It
    lives as long as the returned handle (and this driver)."""
    kitchen = (
        ray.remote(Kitchen)
        .options(
            name=KITCHEN,
            namespace=namespace,
            get_if_exists=True,
            num_cpus=0,
            max_concurrency=16,
        )
        .remote(namespace, seed, cook_s)
    )
    ray.get(kitchen.tickets_taken.remote())  # type: ignore[attr-defined]
    return kitchen

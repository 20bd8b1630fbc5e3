"""The peer's workloads, as calls to Restate's ingress: the same loads and checks as
raystate's (``benchmarks.workloads``, ``benchmarks.food``), without Ray.

Ingress URL shapes: ``POST /<Service>/<handler>`` and ``POST /<Object>/<key>/<handler>``, the
JSON input as the body; the handler's JSON output is the response body.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from benchmarks.restate_peer import rawhttp
from benchmarks.runner import Samples

Query = Callable[[str], list[dict[str, Any]]]
"""Runs SQL on Restate's introspection tables (blocking: call it in a thread)."""


@dataclass(frozen=True)
class PeerCell:
    """One workload at one concurrency, as the peer's driver process receives it."""

    workload: str
    concurrency: int
    seconds: float = 5.0
    warmup: float = 1.0
    prefix: str = ""  # object keys of this cell start with it


class Load(Protocol):
    async def call(self, n: int) -> Any: ...

    async def check(self) -> list[str]: ...

    def notes(self) -> dict[str, Any]: ...


def summary(s: Samples) -> dict[str, Any]:
    """The figures of one cell under raystate's field names (``benchmarks.workloads``)."""
    return {
        "calls": s.completed_in_window,
        "window_s": s.window_s,
        "inv_per_s": round(s.per_s, 1),
        "p50_ms": round(s.percentile_ms(0.50), 2),
        "p90_ms": round(s.percentile_ms(0.90), 2),
        "p99_ms": round(s.percentile_ms(0.99), 2),
        "ok": s.ok,
        "errors": s.errors,
        "invocations": s.completed_in_window,
    }


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class CounterLoad:
    """``add(1)`` on the keys ``n % keys``. Check: each key's adds returned 1, 2, ..., n, and
    the shared ``get`` of each key reads as many as were acknowledged (the sum of its deltas)."""

    def __init__(self, client: rawhttp.Client, prefix: str, keys: int, warm: bool) -> None:
        self.client, self.prefix, self.keys, self.warm_keys = client, prefix, keys, warm
        self.returned: dict[str, list[int]] = defaultdict(list)

    def _key(self, n: int) -> str:
        return f"{self.prefix}{n % self.keys}"

    async def _gets(self, keys: list[str]) -> list[int]:
        sem = asyncio.Semaphore(64)

        async def get(key: str) -> int:
            async with sem:
                return int(await self.client.call(f"/BenchCounter/{key}/get"))

        return await asyncio.gather(*(get(k) for k in keys))

    async def warm(self) -> None:
        """Read each key once before the window, as raystate's keys1k does: the window then
        measures keys whose state was touched before, not first uses."""
        if self.warm_keys:
            await self._gets([self._key(n) for n in range(self.keys)])

    async def call(self, n: int) -> int:
        key = self._key(n)
        result = int(await self.client.call(f"/BenchCounter/{key}/add", 1))
        self.returned[key].append(result)
        return result

    async def check(self) -> list[str]:
        keys = sorted(self.returned)
        seen = dict(zip(keys, await self._gets(keys), strict=True))
        problems = []
        wrong = [k for k in keys if seen[k] != len(self.returned[k])]
        if wrong:
            k = wrong[0]
            problems.append(
                f"{len(wrong)} keys' get differs from their acknowledged adds (e.g. "
                f"{k}: get {seen[k]}, acknowledged {len(self.returned[k])})"
            )
        gaps = [k for k in keys if sorted(self.returned[k]) != list(range(1, seen[k] + 1))]
        if gaps:
            problems.append(f"{len(gaps)} keys' adds did not return 1..n (lost or doubled)")
        return problems

    def notes(self) -> dict[str, Any]:
        return {"keys": len(self.returned)}


def three_steps_expected(x: int) -> int:
    return (x + 1) * 2 - 1


async def _count(query: Query, sql: str) -> int:
    rows = await asyncio.to_thread(query, sql)
    return int(rows[0]["n"])


class StepsLoad:
    """``three_steps(n)``. Check: every call returned ``(n + 1) * 2 - 1``, and Restate's
    ``sys_invocation`` gained as many completed invocations as were acknowledged."""

    SQL = (
        "SELECT count(*) AS n FROM sys_invocation WHERE target_service_name = 'BenchSteps'"
        " AND status = 'completed'"
    )

    def __init__(self, client: rawhttp.Client, query: Query) -> None:
        self.client, self.query = client, query
        self.ok = self.wrong = 0
        self.before = 0

    async def warm(self) -> None:
        self.before = await _count(self.query, self.SQL)

    async def call(self, n: int) -> int:
        result = int(await self.client.call("/BenchSteps/three_steps", n))
        self.ok += 1
        self.wrong += result != three_steps_expected(n)
        return result

    async def check(self) -> list[str]:
        problems = [f"{self.wrong} calls returned a wrong value"] if self.wrong else []
        done = await _count(self.query, self.SQL) - self.before
        if done != self.ok:
            problems.append(
                f"sys_invocation holds {done} completed invocations, {self.ok} were acknowledged"
            )
        return problems

    def notes(self) -> dict[str, Any]:
        return {}


class FoodLoad:
    """One new order (and key) per call, its delivery 10 ms out, as raystate's. Check: every
    call returned DELIVERED, and every acknowledged order's stored status is DELIVERED with a
    driver assigned."""

    def __init__(self, client: rawhttp.Client, query: Query, prefix: str) -> None:
        self.client, self.query, self.prefix = client, query, prefix
        self.results: Counter[str] = Counter()

    async def call(self, n: int) -> str:
        order_id = f"{self.prefix}{n}"
        order = {"id": order_id, "total_cost": 10 + n % 90, "delivery_delay_ms": 10}
        result = str(await self.client.call(f"/BenchFoodOrder/{order_id}/process", order))
        self.results[result] += 1
        return result

    async def check(self) -> list[str]:
        acked = sum(self.results.values())
        problems = []
        if self.results["DELIVERED"] != acked:
            problems.append(f"results {dict(self.results)}, all {acked} should be DELIVERED")
        where = f"starts_with(service_key, {_quote(self.prefix)})"
        for name, key, value in (
            ("BenchFoodOrder", "status", '"DELIVERED"'),
            ("BenchDelivery", "driver", None),
        ):
            sql = (
                f"SELECT count(*) AS n FROM state WHERE service_name = '{name}' AND "
                f"key = '{key}' AND {where}"
                + (f" AND value_utf8 = {_quote(value)}" if value else "")
            )
            done = await _count(self.query, sql)
            if done != acked:
                problems.append(f"{done} {name} keys done, {acked} acknowledged")
        return problems

    def notes(self) -> dict[str, Any]:
        return {"orders": sum(self.results.values())}


MakeLoad = Callable[[rawhttp.Client, Query, PeerCell], Load]

LOADS: dict[str, MakeLoad] = {
    "hot": lambda c, q, cell: CounterLoad(c, cell.prefix, 1, warm=False),
    "keys1k": lambda c, q, cell: CounterLoad(c, cell.prefix, 1_000, warm=True),
    "three_step": lambda c, q, cell: StepsLoad(c, q),
    "food": lambda c, q, cell: FoodLoad(c, q, cell.prefix),
}
"""The workloads the peer runs, by raystate's workload names."""

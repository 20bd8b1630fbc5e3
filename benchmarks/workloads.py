"""The workloads, one registry entry each (``WORKLOADS``), and what each does in the driver.

An entry names the services the runtime must host, the coroutine that runs one cell (one
workload at one client concurrency) inside the load-driver process, and Restate's figures for
it. A workload whose API is not built yet says why (``missing``) and is skipped. Every cell
ends with a correctness check; its problems make the cell FAIL.

Adding a workload is one entry: most are a closed loop (``closed_loop``) over a ``Load``,
an object with ``call(n)`` (issue call number n, return its result), ``check()`` (problems
found afterwards) and ``notes()`` (extra figures for the report).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from actors import Runtime
from actors.sdk.definitions import ServiceDefinition
from benchmarks import apps, timers
from benchmarks.runner import Samples, drive
from journal.clock import now_ms


@dataclass(frozen=True)
class Cell:
    """One workload at one concurrency, as the driver process receives it."""

    workload: str
    concurrency: int
    seconds: float = 5.0
    warmup: float = 1.0
    prefix: str = ""  # object keys of this cell start with it (fresh keys per cell)
    timers: int = 10_000  # the timers workload: how many invocations sleep at once
    timers_budget: float = 60.0  # ... and at most how many seconds to submit them
    spread: float = 5.0  # ... due in a window this long, opening after the submission


class Sync(Protocol):
    async def __call__(self, label: str) -> None:
        """Have the benchmark command sample CPU, RSS and file sizes now ("start", "end",
        "rss") and return once it has."""


RunCell = Callable[[Runtime, Cell, Sync], Coroutine[Any, Any, dict[str, Any]]]


class Load(Protocol):
    async def call(self, n: int) -> Any: ...

    async def check(self) -> list[str]: ...

    def notes(self) -> dict[str, Any]: ...


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def summary(s: Samples, invocations: int | None = None) -> dict[str, Any]:
    return {
        "calls": s.completed_in_window,
        "window_s": s.window_s,
        "inv_per_s": round(s.per_s, 1),
        "p50_ms": round(s.percentile_ms(0.50), 2),
        "p90_ms": round(s.percentile_ms(0.90), 2),
        "p99_ms": round(s.percentile_ms(0.99), 2),
        "ok": s.ok,
        "errors": s.errors,
        "invocations": s.completed_in_window if invocations is None else invocations,
    }


def closed_loop(make: Callable[[Runtime, Cell], Load]) -> RunCell:
    """A cell that runs ``make(rt, cell)``'s calls in a closed loop, then checks."""

    async def run(rt: Runtime, cell: Cell, sync: Sync) -> dict[str, Any]:
        load = make(rt, cell)
        warm = getattr(load, "warm", None)
        if warm is not None:
            await warm()
        s = await drive(
            load.call,
            concurrency=cell.concurrency,
            warmup_s=cell.warmup,
            seconds=cell.seconds,
            on_window=sync,
        )
        problems = []
        if s.errors:
            problems.append(f"{s.errors} calls failed, first: {s.first_error}")
        problems += await load.check()
        sampled = {} if s.sampled is None else {"cpu_invocations": s.sampled}
        return {**summary(s), **sampled, "problems": problems, "notes": load.notes()}

    return run


# -- counters -------------------------------------------------------------------------------


class CounterLoad:
    """``add(1)`` on the keys ``key_of(n)`` picks. Check: every key's stored count equals its
    acknowledged adds, and the adds of a key returned exactly 1, 2, ..., n (none lost, none
    applied twice, none overlapping)."""

    def __init__(
        self, rt: Runtime, prefix: str, key_of: Callable[[int], str], warm_keys: int = 0
    ) -> None:
        self.rt, self.prefix, self.key_of = rt, prefix, key_of
        self.warm_keys = warm_keys
        self.returned: dict[str, list[int]] = defaultdict(list)

    async def warm(self) -> None:
        """Read each of the first ``warm_keys`` keys once (a shared ``get``, counted nowhere),
        so the window measures keys whose state is in their host's memory, as in any steady
        state; without it, a 5 s window over 1,000 keys measures mostly first uses."""
        sem = asyncio.Semaphore(64)

        async def get(n: int) -> None:
            async with sem:
                await self.rt.call_async(apps.get, key=self.prefix + self.key_of(n))

        await asyncio.gather(*(get(n) for n in range(self.warm_keys)))

    async def call(self, n: int) -> int:
        key = self.prefix + self.key_of(n)
        result: int = await self.rt.call_async(apps.add, key=key, arg=1)
        self.returned[key].append(result)
        return result

    async def check(self) -> list[str]:
        table = await self.rt.sql_async(
            "SELECT service_key AS k, value::BIGINT AS n FROM state"
            f" WHERE service_name = {_quote(apps.counter.name)} AND key = 'count'"
            f" AND starts_with(service_key, {_quote(self.prefix)})"
        )
        stored = dict(
            zip(table.column("k").to_pylist(), table.column("n").to_pylist(), strict=True)
        )
        acked = {k: len(v) for k, v in self.returned.items()}
        problems = []
        wrong = [k for k in acked.keys() | stored.keys() if acked.get(k, 0) != stored.get(k, 0)]
        if wrong:
            k = sorted(wrong)[0]
            problems.append(
                f"{len(wrong)} keys' counts differ from their acknowledged adds"
                f" (e.g. {k}: stored {stored.get(k, 0)}, acknowledged "
                f"{acked.get(k, 0)}); totals {sum(stored.values())} vs "
                f"{sum(acked.values())}"
            )
        gaps = [k for k, v in self.returned.items() if sorted(v) != list(range(1, len(v) + 1))]
        if gaps:
            problems.append(f"{len(gaps)} keys' adds did not return 1..n (lost or doubled)")
        if len(acked) == 1:  # the hot key: read it back through a shared handler too
            ((key, n),) = acked.items()
            seen = await self.rt.call_async(apps.get, key=key)
            if seen != n:
                problems.append(f"shared get({key}) read {seen}, {n} adds were acknowledged")
        return problems

    def notes(self) -> dict[str, Any]:
        return {"keys": len(self.returned)}


def counters(keys: int, warm: bool = False) -> Callable[[Runtime, Cell], Load]:
    def make(rt: Runtime, cell: Cell) -> Load:
        return CounterLoad(rt, cell.prefix, lambda n: str(n % keys), keys if warm else 0)

    return make


# -- three steps ----------------------------------------------------------------------------


class StepsLoad:
    """``three_steps(n)``. Check: every call returned ``(n + 1) * 2 - 1``, and every invocation
    of the cell is completed in ``sys_invocation``, as many as were acknowledged."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.since_ms = now_ms()
        self.ok = self.wrong = 0

    async def call(self, n: int) -> int:
        result: int = await self.rt.call_async(apps.three_steps, arg=n)
        self.ok += 1
        self.wrong += result != apps.three_steps_expected(n)
        return result

    async def check(self) -> list[str]:
        problems = [f"{self.wrong} calls returned a wrong value"] if self.wrong else []
        table = await self.rt.sql_async(
            "SELECT count(*) AS n, count(*) FILTER (WHERE completion_result = 'success') AS ok"
            f" FROM sys_invocation WHERE target_service_name = {_quote(apps.steps.name)}"
            f" AND epoch_ms(created_at) >= {self.since_ms}"
        )
        row = table.to_pylist()[0]
        if row["n"] != self.ok or row["ok"] != self.ok:
            problems.append(
                f"sys_invocation holds {row['n']} invocations ({row['ok']} "
                f"succeeded), {self.ok} were acknowledged"
            )
        return problems

    def notes(self) -> dict[str, Any]:
        return {}


# -- sleeping timers ------------------------------------------------------------------------


async def timers_cell(rt: Runtime, cell: Cell, sync: Sync) -> dict[str, Any]:
    """Put up to ``cell.timers`` invocations to sleep at once (``benchmarks.timers``), due in a
    window of ``spread`` seconds that opens after the submission; throughput and latency are
    those of the sends. The warm-up sends sleeps due at once, to estimate how long submitting
    takes; submitting stops after ``timers_budget`` seconds, and the notes say how many slept.
    Check: all completed, every timer fired, none early."""
    c = cell.concurrency
    began = time.perf_counter()
    warm = (
        await timers.submit_until(
            rt, 10**9, lambda _: time.time(), concurrency=c, stop_at=time.time() + cell.warmup
        )
        if cell.warmup
        else []
    )
    rate = len(warm) / max(time.perf_counter() - began, 1e-3) if warm else 20.0
    lead = min(cell.timers / rate * 1.3, cell.timers_budget) + 1.0
    await asyncio.sleep(0.2)  # the warm-up sleeps fire and complete
    since = now_ms()
    await sync("start")
    t0 = time.time()
    opens_at = t0 + lead
    rng = random.Random(cell.timers)
    latencies = await timers.submit_until(
        rt,
        cell.timers,
        lambda _: opens_at + rng.random() * cell.spread,
        concurrency=c,
        stop_at=opens_at - 0.5,
    )
    submit_s = time.time() - t0
    await sync("rss")
    hosts = rt.router.pool(apps.sleepy)
    stats: list[dict[str, int]] = await asyncio.gather(*(h.ready.remote() for h in hosts))
    in_memory = sum(s["active"] for s in stats)
    n = len(latencies)
    deadline = opens_at + cell.spread + 120
    while (done := await timers.completed(rt, since)) < n and time.time() < deadline:
        await asyncio.sleep(1.0)
    await sync("end")
    late = await timers.lateness(rt, since)
    s = Samples(window_s=submit_s, completed_in_window=n, ok=n, latencies_s=latencies)
    problems = []
    if done != n:
        problems.append(f"{done} of {n} sleeping invocations completed")
    if late["fired"] != n or late["timers"] != n:
        problems.append(f"{late['timers']} timers, {late['fired']} fired, {n} expected")
    if (late["min"] or 0) < 0:
        problems.append(f"a timer fired {-late['min']} ms early")
    notes = {
        "sleeping": n,
        "in_memory": in_memory,
        "submit_s": round(submit_s, 1),
        "window_opened_during_submission": t0 + submit_s > opens_at,
        "lateness_p50_ms": late["p50"],
        "lateness_p99_ms": late["p99"],
        "lateness_max_ms": late["max"],
    }
    return {**summary(s, invocations=n), "problems": problems, "notes": notes}


# -- the registry ---------------------------------------------------------------------------


def _food_missing() -> str | None:
    from actors.engine.context import InvocationContext

    absent = [
        m
        for m in ("awakeable", "resolve_awakeable", "object_call")
        if not hasattr(InvocationContext, m)
    ]
    return f"not available yet (needs ctx.{', ctx.'.join(absent)})" if absent else None


def _food_services() -> list[ServiceDefinition]:
    from benchmarks import food

    return food.ALL


def _food_load(rt: Runtime, cell: Cell) -> Load:
    from benchmarks import food

    return food.FoodLoad(rt, cell.prefix)


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    services: Callable[[], list[ServiceDefinition]]
    run: RunCell
    restate: dict[int, dict[str, float]] = field(default_factory=dict)
    """Restate 1.7.12's figures, raw client, 2-core machine: concurrency -> inv_per_s, p50_ms,
    p99_ms (those that were published)."""
    missing: Callable[[], str | None] = lambda: None
    aliases: tuple[str, ...] = ()


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in [
        Workload(
            "hot",
            "counter add, one hot key",
            lambda: [apps.counter],
            closed_loop(counters(1)),
            {
                1: {"inv_per_s": 228, "p50_ms": 4.2},
                16: {"inv_per_s": 234},
                64: {"inv_per_s": 319, "p99_ms": 287},
            },
        ),
        Workload(
            "keys1k",
            "counter add, 1,000 keys",
            lambda: [apps.counter],
            closed_loop(counters(1_000, warm=True)),
            {
                1: {"inv_per_s": 169, "p50_ms": 5.8},
                16: {"inv_per_s": 589},
                64: {"inv_per_s": 633, "p99_ms": 169},
            },
            aliases=("keys",),
        ),
        Workload(
            "keys100k",
            "counter add, 100,000 keys (a new key per call)",
            lambda: [apps.counter],
            closed_loop(counters(100_000)),
        ),
        Workload(
            "three_step",
            "service, three ctx.run steps",
            lambda: [apps.steps],
            closed_loop(lambda rt, cell: StepsLoad(rt)),
            {
                1: {"inv_per_s": 114, "p50_ms": 8.5},
                16: {"inv_per_s": 304},
                64: {"inv_per_s": 322, "p99_ms": 273},
            },
            aliases=("steps",),
        ),
        Workload("timers", "10,000 sleeping timers (sends)", lambda: [apps.sleepy], timers_cell),
        Workload(
            "food",
            "food-order flow",
            _food_services,
            closed_loop(_food_load),
            {1: {"inv_per_s": 27}, 16: {"inv_per_s": 104}, 64: {"inv_per_s": 67}},
            missing=_food_missing,
        ),
    ]
}

"""Chaos: a mixed workload under seeded random faults, then invariants checked through SQL on
the journal and through ledgers kept outside the processes.

    python -m benchmarks.chaos --minutes 2 --seed 7           # the long mode, with full restarts
    python -m benchmarks.chaos --seconds 20 --seed 1 --short  # what tests/chaos runs (seed 1)

Workload: counter increments over many keys (idempotent client retries), three-step ``ctx.run``
services, sleeps, awakeables resolved by an outside actor, object-to-object calls and sends, and
a separate client driver process doing idempotent increments. Faults, on a schedule drawn from
the seed alone (``chaos_checks.make_schedule``; the report prints its start): ``ray.kill`` of
host actors, ``os._exit`` inside handlers at crash points (crash tokens), ``os._exit`` while a
handler awaits a sleep or a call, the journal and scheduler actors killed, the client driver
killed (and started again), poison (handlers raising ``SystemExit``, ``KeyboardInterrupt``, a
bare ``BaseException`` on some attempts, and one on every attempt, killed), and in the long mode
the whole runtime stopped and started again on the same data dir. The schedule opens with every
kind once, so even a short run meets each. The first quarter of the run is fault-free, for a
throughput baseline.

A hostile neighbour (``benchmarks.neighbour``) is a fault too: a local process that floods the
journal's and a host's sockets for a few seconds with connections that never send the token,
and first frames that claim 1 GiB; it lands when it reached a socket.

The run's parts: ``chaos_base`` (the state and the report), ``chaos_faults`` (each fault's
injection), ``chaos_invariants`` (the checks at the end); the workload's services in
``chaos_apps``, ``chaos_limits`` and ``chaos_schedules``; the schedule and the ledger checks,
with no Ray import, in ``chaos_checks``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import ray

from actors import Runtime, TerminalError
from benchmarks import chaos_apps as apps
from benchmarks import chaos_checks as checks
from benchmarks import chaos_limits, chaos_schedules
from benchmarks.chaos_base import DRIVER_INCREMENTS, Report, not_terminal
from benchmarks.chaos_faults import Faults
from benchmarks.chaos_invariants import check, scalar
from journal.retry import Backoff, retry

FAULTS = (
    "host_kill",
    "handler_exit",
    "await_exit",
    "journal_kill",
    "scheduler_kill",
    "driver_kill",
    "hostile_neighbour",
    "poison",
)
TOKEN_GRACE_S = 20.0  # how long the load goes on past the end for crash tokens to be taken


class Chaos(Faults):
    """The run: its setup, the clients' load, the fault schedule, and the end; the state is
    ``ChaosBase``'s, the fault injection ``Faults``'."""

    # -- setup --------------------------------------------------------------------------------

    def start(self) -> Runtime:
        self.rt = Runtime.start(
            [*apps.ALL, chaos_schedules.ticks, chaos_limits.limited],
            data_dir=self.data,
            namespace=self.namespace,
            pool_size=checks.POOL_SIZE,
        )
        chaos_schedules.ensure(self.rt, self.dir)
        if self.resolver is None:  # the outside world: outlives runtime restarts
            self.resolver = (
                ray.remote(apps.Resolver)
                .options(
                    name=apps.RESOLVER,
                    namespace=apps.outside(self.namespace),
                    lifetime="detached",
                    num_cpus=0,
                    max_restarts=-1,
                    max_task_retries=-1,
                )
                .remote(self.namespace)
            )
        return self.rt

    def job(self, **kw: Any) -> apps.Job:
        return apps.Job(
            ledger=self.ledger, crash_dir=str(self.crash_dir), namespace=self.namespace, **kw
        )

    # -- load ---------------------------------------------------------------------------------

    async def retrying(self, method: Callable[..., Awaitable[Any]], *args: Any, **kw: Any) -> Any:
        """``method(rt, *args, **kw)`` (a ``Runtime`` method) until acknowledged (idempotency
        keys make retries safe); TerminalError is an answer, not a failure. Each attempt takes
        the current ``self.rt`` once no restart is under way: a full restart closes the old
        client (it raises RuntimeError for good), so an attempt bound to it would retry
        forever."""

        async def once() -> Any:
            while self.paused:
                await asyncio.sleep(0.1)
            return await method(self.rt, *args, **kw)

        return await retry(
            once, when=not_terminal, backoff=Backoff(0.1, 2.0, 2.0), on_retry=self._count_retry
        )

    async def client(self, n: int) -> None:
        rng = random.Random(f"{self.seed}:client:{n}")  # its own: no other coroutine draws
        i = 0
        while time.monotonic() < self.load_until:
            i += 1
            kind = rng.choice(["add", "add", "add", "relay", "three", "nap", "approval", "limit"])
            tag = f"c{n}-{i}"
            if kind == "add":
                key = f"k{rng.randrange(40)}"
                await self.retrying(
                    Runtime.call_async, apps.add, key, self.job(), idempotency_key=tag
                )
                self.report.acked[key] += 1
            elif kind == "relay":
                target = f"r{rng.randrange(8)}"
                await self.retrying(
                    Runtime.call_async,
                    apps.relay,
                    f"relay-{n}",
                    self.job(target=target, seconds=rng.uniform(0.05, 0.4)),
                    idempotency_key=tag,
                )
                self.report.acked[f"call-{target}"] += 1
                self.report.acked[f"send-{target}"] += 1
            elif kind == "limit":
                job = self.job(seconds=rng.uniform(0.05, 0.3))
                h = await self.retrying(
                    Runtime.send_async, chaos_limits.guarded, None, job, idempotency_key=tag
                )
                self.limited.append(h.id)
            else:
                job = self.job(seconds=rng.uniform(0.2, 1.5)) if kind == "nap" else self.job()
                handler = {"three": apps.three, "nap": apps.nap, "approval": apps.approval}[kind]
                h = await self.retrying(Runtime.send_async, handler, None, job, idempotency_key=tag)
                self.handles.append((kind, h.id))
            self.completed_at.append(time.monotonic())

    # -- faults: the driver process, the schedule (each fault's injection: ``Faults``) --------

    def start_driver(self) -> None:
        env = {
            **os.environ,
            "RAY_AUTH_MODE": "disabled",
            "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
        }
        with open(self.dir / "driver.log", "ab") as log:
            self.driver = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.chaos",
                    "--client-driver",
                    self.namespace,
                    str(self.dir),
                    *map(str, self.driver_span),
                ],
                env=env,
                cwd=Path(__file__).resolve().parents[1],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def injector(self, start: float, stop: float) -> None:
        """Inject the seeded schedule's faults at their times (relative to ``start``)."""
        kinds = [*FAULTS, "restart"] if self.restarts else list(FAULTS)
        schedule = checks.make_schedule(self.seed, stop - start, kinds)
        self.report.schedule = [str(f) for f in schedule]
        self.report.scheduled.update(f.kind for f in schedule)
        for fault in schedule:
            await asyncio.sleep(max(start + fault.at - time.monotonic(), 0))
            if await asyncio.to_thread(self.inject, fault):
                self.report.faults[fault.kind] += 1
        await asyncio.sleep(max(stop - time.monotonic(), 0))
        # tokens still waiting keep the load going a while, so that they land
        while time.monotonic() < stop + TOKEN_GRACE_S and any(
            not n.startswith("taken-") for n in os.listdir(self.crash_dir)
        ):
            await asyncio.sleep(0.1)
        self.load_until = time.monotonic()
        for neighbour in self.neighbours:
            await asyncio.to_thread(neighbour.wait)
        for name in os.listdir(self.crash_dir):  # the check phase runs without faults
            if not name.startswith("taken-"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self.crash_dir / name)

    # -- the run ------------------------------------------------------------------------------

    async def run(self) -> Report:
        rt = self.start()
        # hosts start on first use: bring them up first, so the calm phase measures throughput,
        # not actor start-up (seconds on a loaded machine)
        await asyncio.gather(
            *(rt.call_async(apps.value, f"k{i}") for i in range(8)),
            *(rt.call_async(apps.ping) for _ in range(8)),
        )
        t0 = time.monotonic()
        calm_until = t0 + self.seconds * 0.25
        self.load_until = stop = t0 + self.seconds
        self.driver_span = (time.time(), time.time() + self.seconds)
        self.start_driver()
        await asyncio.gather(
            self.injector(calm_until, stop), *(self.client(n) for n in range(self.clients))
        )
        calm = sum(t < calm_until for t in self.completed_at)
        self.report.calm_per_s = calm / (calm_until - t0)
        self.report.faulty_per_s = (len(self.completed_at) - calm) / (self.load_until - calm_until)
        return self.report

    def finish(self) -> Report:
        """Let the client driver finish its increments, wait until nothing is left unfinished,
        then check the invariants."""
        rt = self.rt
        assert rt is not None
        if self.driver is None or self.driver.poll() is not None:
            self.start_driver()
        assert self.driver is not None
        self.driver.wait(timeout=300)
        chaos_schedules.stop(rt)
        deadline = time.monotonic() + 60
        while scalar(rt, "SELECT count(*) FROM sys_invocation WHERE status <> 'completed'"):
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self._count_restarts()
        self._neighbours_landed()
        check(self, rt)
        return self.report


# -- the client driver process ----------------------------------------------------------------


def client_driver(namespace: str, work_dir: str, start: str, until: str) -> None:
    """Idempotent increments over a few keys, the i-th not before ``start`` + i/N of the span
    to ``until`` (wall clock), so the driver lives through the run; killed at random and
    started again from the start, so every increment is re-sent and must still apply once."""
    rt = Runtime.connect(namespace=namespace)
    crash = str(Path(work_dir) / "crash")
    job = apps.Job(ledger=str(Path(work_dir) / "ledger.txt"), crash_dir=crash)
    t0, t1 = float(start), float(until)
    for i in range(DRIVER_INCREMENTS):
        time.sleep(max(t0 + (t1 - t0) * i / DRIVER_INCREMENTS - time.time(), 0))
        while True:
            try:
                rt.call(apps.add, key=f"drv-{i % 5}", arg=job, idempotency_key=f"drv-{i}")
                break
            except TerminalError:
                raise
            except Exception:
                time.sleep(0.2)


# -- entry points -----------------------------------------------------------------------------


def run_chaos(
    seconds: float,
    seed: int,
    *,
    restarts: bool = False,
    work_dir: Path | None = None,
    namespace: str | None = None,
) -> Report:
    """Run the chaos workload on this process's Ray (``ray.init`` first)."""
    work = work_dir or Path(tempfile.mkdtemp(prefix="raystate-chaos-"))
    chaos = Chaos(
        work,
        seed,
        seconds,
        restarts=restarts,
        namespace=namespace or f"chaos-{seed}-{os.getpid()}-{time.time_ns() % 10**6}",
    )
    try:
        asyncio.run(chaos.run())
        chaos.finish()
    finally:
        for proc in [chaos.driver, *chaos.neighbours]:
            if proc is not None and proc.poll() is None:
                proc.kill()
        if chaos.rt is not None:
            chaos.rt.shutdown()
        if chaos.resolver is not None:
            ray.kill(chaos.resolver)
    return chaos.report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--minutes", type=float, default=None)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--short", action="store_true", help="no full-runtime restarts")
    parser.add_argument(
        "--client-driver",
        nargs=4,
        metavar=("NAMESPACE", "WORK_DIR", "START", "UNTIL"),
        help=argparse.SUPPRESS,
    )
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if args.client_driver:
        client_driver(*args.client_driver)
        return
    seconds = args.seconds or (args.minutes or 1.0) * 60
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    report = run_chaos(seconds, args.seed, restarts=not args.short)
    print(report.render())
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()

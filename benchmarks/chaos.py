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
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

import ray

from actors import Runtime, TerminalError
from actors.cluster.names import JOURNAL, SCHEDULER, SCHEDULES, host_name
from benchmarks import chaos_apps as apps
from benchmarks import chaos_checks as checks
from benchmarks import chaos_limits, chaos_schedules
from journal.kinds import InvocationStatus
from journal.retry import Backoff, retry, retry_sync

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
NEIGHBOUR_S = 4.0  # how long one hostile neighbour floods
POISON_KILL_AFTER = 2  # attempts a never-healing poisoned invocation fails before it is killed
DRIVER_INCREMENTS = 60
TOKEN_GRACE_S = 20.0  # how long the load goes on past the end for crash tokens to be taken
SYSTEM_ACTORS = (
    JOURNAL,
    SCHEDULER,
    *(host_name(s, i) for s, i in product(checks.HOST_SERVICES, range(checks.POOL_SIZE))),
)


@dataclass
class Report:
    seed: int
    seconds: float
    invocations: int = 0
    acked: collections.Counter[str] = field(default_factory=collections.Counter)
    scheduled: collections.Counter[str] = field(default_factory=collections.Counter)
    faults: collections.Counter[str] = field(default_factory=collections.Counter)  # landed
    schedule: list[str] = field(default_factory=list)
    client_retries: int = 0
    calm_per_s: float = 0.0
    faulty_per_s: float = 0.0
    recoveries: dict[str, int] = field(default_factory=dict)
    checks: dict[str, str] = field(default_factory=dict)  # name -> "ok" or what failed
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(v == "ok" for v in self.checks.values())

    def render(self) -> str:
        landed = ", ".join(f"{k}={self.faults[k]}/{n}" for k, n in sorted(self.scheduled.items()))
        lines = [
            f"chaos seed={self.seed}: {self.invocations} invocations in {self.seconds:.0f}s",
            f"  throughput: {self.calm_per_s:.0f}/s without faults, "
            f"{self.faulty_per_s:.0f}/s during faults",
            "  faults landed/scheduled: " + (landed or "none"),
            "  schedule: "
            + ", ".join(self.schedule[:10])
            + (f" ... ({len(self.schedule)} in all)" if len(self.schedule) > 10 else ""),
            "  recoveries: " + ", ".join(f"{k}={v}" for k, v in self.recoveries.items()),
            f"  client retries after errors: {self.client_retries}",
            "  stats: " + json.dumps(self.stats, sort_keys=True),
            "  invariants:",
        ]
        lines += [
            f"    {'PASS' if v == 'ok' else 'FAIL'} {k}" + ("" if v == "ok" else f": {v}")
            for k, v in self.checks.items()
        ]
        return "\n".join(lines)


class Chaos:
    def __init__(
        self,
        work_dir: Path,
        seed: int,
        seconds: float,
        *,
        restarts: bool,
        namespace: str,
        clients: int = 6,
    ) -> None:
        self.dir = work_dir
        self.seed = seed
        self.seconds = seconds
        self.restarts = restarts
        self.namespace = namespace
        self.clients = clients
        self.data = work_dir / "data"
        self.ledger = str(work_dir / "ledger.txt")
        self.crash_dir = work_dir / "crash"
        self.crash_dir.mkdir(parents=True, exist_ok=True)
        self.report = Report(seed, seconds)
        self.completed_at: list[float] = []
        self.handles: list[tuple[str, str]] = []  # (handler, invocation id) of acked sends
        self.limited: list[str] = []  # acked sends to the limited service
        self.rt: Runtime | None = None
        self.resolver: Any = None
        self.driver: subprocess.Popen[bytes] | None = None
        self.neighbours: list[subprocess.Popen[bytes]] = []
        self.driver_span = (0.0, 0.0)  # wall clock: the driver paces its increments over it
        self.restarts_seen: collections.Counter[str] = collections.Counter()
        self.paused = False
        self.load_until = 0.0  # clients stop then (the injector may extend it)
        self.poisoned: dict[str, int] = {}  # poisoned invocation -> attempts that fail
        self.killed: list[str] = []  # poisoned invocations that never heal, killed on purpose

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
            once, when=_not_terminal, backoff=Backoff(0.1, 2.0, 2.0), on_retry=self._count_retry
        )

    def _count_retry(self, _: BaseException) -> None:
        self.report.client_retries += 1

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

    # -- faults -------------------------------------------------------------------------------

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

    def inject(self, fault: checks.Fault) -> bool:
        """Inject one fault; True if it landed now (crash tokens land when taken: counted at
        the end)."""
        ns, kind = self.namespace, fault.kind
        if kind == "host_kill":  # the scheduled host, or if it is not up, the others in order
            service, index = fault.target.split(":")
            first = host_name(service, index)
            return any(
                self._kill_host(name)
                for name in [first, *(n for n in SYSTEM_ACTORS[2:] if n != first)]
            )
        if kind in ("handler_exit", "await_exit"):
            prefix = apps.CRASH_TOKEN if kind == "handler_exit" else apps.AWAIT_TOKEN
            for i in range(int(fault.target)):
                (self.crash_dir / f"{prefix}{time.time_ns()}-{i}").touch()
            return False
        if kind == "poison":
            return self._poison(fault)
        if kind == "scheduler_kill":  # the timer scheduler and the schedule runner
            return _kill(SCHEDULER, ns) | _kill(SCHEDULES, ns)
        if kind == "journal_kill":
            return _kill(JOURNAL, ns)
        if kind == "hostile_neighbour":
            return self._neighbour()
        if kind == "driver_kill":
            landed = self.driver is not None and self.driver.poll() is None
            if self.driver is not None and landed:
                self.driver.kill()
                self.driver.wait()
            self.start_driver()
            return landed
        assert kind == "restart", kind
        self.paused = True
        assert self.rt is not None
        pids = self._host_pids() + chaos_limits.host_pids(self.namespace, checks.POOL_SIZE)
        self._count_restarts()
        self.rt.shutdown()
        for pid in pids:
            self._record_death(pid)
        chaos_limits.restarted(self.ledger)
        self.start()
        self.paused = False
        return True

    def _neighbour(self) -> bool:
        """Start a process that floods the journal's socket and a host's
        (``journal.transport.wire``); False (it lands when it reached a socket: counted at the
        end, ``_neighbours_landed``).
        """
        host = next((a for a in map(self._socket, SYSTEM_ACTORS[2:]) if a), None)
        addresses = [a for a in (self._socket(JOURNAL), host) if a]
        if addresses:
            out = self.dir / f"neighbour-{len(self.neighbours)}.json"
            self.neighbours.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "benchmarks.neighbour",
                        "--seconds",
                        str(NEIGHBOUR_S),
                        "--out",
                        str(out),
                        *addresses,
                    ],
                    cwd=Path(__file__).resolve().parents[1],
                )
            )
        return False

    def _socket(self, name: str) -> str | None:
        """The actor's socket, if it is up and on this node."""
        with contextlib.suppress(Exception):
            actor = ray.get_actor(name, namespace=self.namespace)
            endpoint: Any = ray.get(actor.wire_endpoint.remote(), timeout=10)
            if endpoint[0] == ray.get_runtime_context().get_node_id():
                return str(endpoint[1])
        return None

    def _neighbours_landed(self) -> None:
        """Count the floods that reached a socket, and what the servers did about them."""
        flooded: collections.Counter[str] = collections.Counter()
        for out in self.dir.glob("neighbour-*.json"):
            stats = json.loads(out.read_text())
            flooded.update(stats)
            self.report.faults["hostile_neighbour"] += stats.get("connected", 0) > 0
        if flooded:
            self.report.stats["neighbour"] = dict(flooded)

    def _poison(self, fault: checks.Fault) -> bool:
        """Poisoned invocations on the ChaosSteps hosts (every other workload shares them):
        one per kind of poison failing its first one or two attempts, and one failing every
        attempt, killed with ``rt.kill`` once it failed ``POISON_KILL_AFTER`` times."""
        rt = self.rt
        assert rt is not None
        tag = f"poison-{fault.at}"
        for i, what in enumerate(apps.POISON_KINDS):
            dose = apps.Dose(work_dir=str(self.dir), kind=what, failing=1 + i % 2)
            h = self._sync_retrying(
                lambda d=dose, i=i: rt.send(  # type: ignore[misc]
                    apps.poisoned, None, d, idempotency_key=f"{tag}-{i}"
                )
            )
            self.poisoned[h.id] = dose.failing
        dose = apps.Dose(
            work_dir=str(self.dir), kind=apps.POISON_KINDS[int(fault.at * 1000) % 4], failing=10**9
        )
        h = self._sync_retrying(
            lambda: rt.send(apps.poisoned, None, dose, idempotency_key=f"{tag}-forever")
        )
        self.killed.append(h.id)
        deadline = time.monotonic() + 60
        while (
            apps.poison_attempts(str(self.dir), h.id) < POISON_KILL_AFTER
            and time.monotonic() < deadline
        ):
            time.sleep(0.02)
        return self._sync_retrying(lambda: rt.kill(h.id)) == "killed"

    def _sync_retrying(self, fn: Any) -> Any:
        """``fn()`` until it answers (faults land meanwhile); TerminalError is an answer."""
        return retry_sync(
            fn,
            when=_not_terminal,
            backoff=Backoff(0.2, 1.0, 0.2),
            deadline_s=60,
            on_retry=self._count_retry,
        )

    def _kill_host(self, name: str) -> bool:
        """Kill a host and, once its process is gone, say so in the ledger (the checks let
        another process take over the work of a dead one)."""
        try:
            actor = ray.get_actor(name, namespace=self.namespace)
            pid = ray.get(actor.pid.remote(), timeout=30)  # slow while it restarts
        except Exception:
            return False
        ray.kill(actor, no_restart=False)
        return self._record_death(pid)

    def _host_pids(self) -> list[int]:
        pids: list[int] = []
        for name in SYSTEM_ACTORS[2:]:
            with contextlib.suppress(Exception):
                actor = ray.get_actor(name, namespace=self.namespace)
                pids.append(ray.get(actor.pid.remote(), timeout=10))
        return pids

    def _record_death(self, pid: int) -> bool:
        """Once ``pid`` is gone, say so in the ledger (False if it lived on for 30 s)."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not _alive(pid):
                apps.append(self.ledger, f"dead {pid}")
                return True
            time.sleep(0.01)
        return False

    def _count_restarts(self) -> None:
        """Add Ray's restart counts of this runtime's system actors (before a full restart
        replaces them, and at the end). Ray's actor table is a private API (the public state
        API needs the dashboard): without it the count is left out."""
        try:
            from ray._private import state

            table = state.actors()
            for name in SYSTEM_ACTORS:
                with contextlib.suppress(ValueError):
                    actor_id = ray.get_actor(name, namespace=self.namespace)._actor_id.hex()
                    kind = "host" if name.startswith("host:") else name
                    self.restarts_seen[kind] += int(table.get(actor_id, {}).get("NumRestarts", 0))
        except Exception as e:
            self.report.stats["actor_restarts_unavailable"] = repr(e)

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
        while _scalar(rt, "SELECT count(*) FROM sys_invocation WHERE status <> 'completed'"):
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self._count_restarts()
        self._neighbours_landed()
        check(self, rt)
        return self.report


def _not_terminal(e: BaseException) -> bool:
    """A TerminalError is an answer, not a failure to try again."""
    return not isinstance(e, TerminalError)


def _kill(name: str, namespace: str) -> bool:
    try:
        actor = ray.get_actor(name, namespace=namespace)
    except ValueError:  # not running right now (restarting)
        return False
    ray.kill(actor, no_restart=False)
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _scalar(rt: Runtime, query: str) -> Any:
    return rt.sql(query).column(0)[0].as_py()


# -- invariants -------------------------------------------------------------------------------


def check(chaos: Chaos, rt: Runtime) -> None:
    r = chaos.report
    lines = Path(chaos.ledger).read_text().splitlines() if Path(chaos.ledger).exists() else []
    r.invocations = _scalar(rt, "SELECT count(*) FROM sys_invocation")
    open_count = _scalar(rt, "SELECT count(*) FROM sys_invocation WHERE status <> 'completed'")
    unfinished = rt.sql(
        "SELECT id, target, status, last_failure FROM sys_invocation "
        "WHERE status <> 'completed' LIMIT 3"
    ).to_pylist()
    r.checks["every accepted invocation finished"] = (
        "ok" if not open_count else f"{open_count} unfinished, e.g. {unfinished}"
    )
    killed = ", ".join(f"'{i}'" for i in chaos.killed) or "''"  # invocation ids: hex
    failed = rt.sql(
        "SELECT target_handler_name AS h, completion_failure AS f, count(*) AS n "
        "FROM sys_invocation WHERE completion_result = 'failure' "
        f"AND id NOT IN ({killed}) GROUP BY ALL"
    ).to_pylist()
    r.checks["no invocation failed"] = "ok" if not failed else str(failed)
    _check_poisoned(chaos, rt)
    status = {
        row["id"]: row["status"]
        for row in rt.sql(
            "SELECT id, status FROM sys_invocation WHERE target_service_name = 'ChaosSteps'"
        ).to_pylist()
    }
    lost = [
        (h, i, status.get(i))
        for h, i in chaos.handles
        if status.get(i) != InvocationStatus.COMPLETED
    ]
    r.checks["every acknowledged send accepted and completed"] = (
        "ok" if not lost else f"{len(lost)} of {len(chaos.handles)}, e.g. {lost[:3]}"
    )
    r.stats["sends_acked"] = len(chaos.handles)
    r.recoveries = {
        "invocations_retried": _scalar(
            rt, "SELECT count(*) FROM sys_invocation WHERE retry_count > 0"
        ),
        "retries": _scalar(rt, "SELECT coalesce(sum(retry_count), 0) FROM sys_invocation"),
        **{f"{k}_restarts": v for k, v in sorted(chaos.restarts_seen.items())},
    }

    journaled = {
        (j["i"], j["s"]): j["nonce"]
        for j in rt.sql(
            "SELECT invocation_id AS i, name AS s, result->>'$' AS nonce FROM sys_journal "
            "WHERE entry_type = 'run' AND name LIKE 'step%'"
        ).to_pylist()
    }
    runs = checks.check_runs(lines, journaled, _alive)
    r.checks["journaled ctx.run ran once (others only in attempts that died)"] = (
        "ok" if not runs.problems else f"{len(runs.problems)}: {runs.problems[:3]}"
    )
    r.stats["runs"] = {
        "journaled": runs.journaled,
        "executed": runs.executions,
        "lost_with_their_process": runs.lost_with_process,
    }

    # counters equal acknowledged increments (client, calls, sends, the driver process)
    values = {
        row["k"]: int(row["v"])
        for row in rt.sql(
            "SELECT service_key AS k, value AS v FROM state WHERE service_name = 'ChaosCounter' "
            "AND key = 'n'"
        ).to_pylist()
    }
    wrong = {k: (values.get(k, 0), n) for k, n in r.acked.items() if values.get(k, 0) != n}
    r.checks["counters equal acknowledged increments"] = "ok" if not wrong else str(wrong)
    driver_total = sum(v for k, v in values.items() if k.startswith("drv-"))
    r.checks["driver's idempotent increments applied once"] = (
        "ok" if driver_total == DRIVER_INCREMENTS else f"{driver_total} != {DRIVER_INCREMENTS}"
    )

    r.checks["exclusive handlers never overlapped"] = checks.overlaps(lines)
    _check_sleeps(r, rt)
    _check_awakeables(chaos, rt)
    r.checks.update(chaos_schedules.check(rt, chaos.dir))
    r.checks.update(chaos_limits.check(lines, chaos.limited, rt))
    r.stats["limited"] = {"sends_acked": len(chaos.limited), **chaos_limits.stats(lines)}
    taken = [n for n in os.listdir(chaos.crash_dir) if n.startswith("taken-")]
    r.faults["handler_exit"] = sum(n.startswith(f"taken-{apps.CRASH_TOKEN}") for n in taken)
    r.faults["await_exit"] = sum(n.startswith(f"taken-{apps.AWAIT_TOKEN}") for n in taken)


def _check_poisoned(chaos: Chaos, rt: Runtime) -> None:
    """Poisoned invocations (their handler raised ``SystemExit``, ``KeyboardInterrupt``, a bare
    ``BaseException``) each failed as attempts, recorded, then completed once the poison wore
    off; the never-healing ones were killed (the host served on throughout: the other checks)."""
    r = chaos.report
    ids = [*chaos.poisoned, *chaos.killed]
    rows = {
        row["id"]: row
        for row in rt.sql(
            "SELECT id, completion_result AS res, completion_failure AS f, retry_count AS n, "
            "last_failure AS lf FROM sys_invocation WHERE id IN ("
            + (", ".join(f"'{i}'" for i in ids) or "''")
            + ")"
        ).to_pylist()
    }
    known = ("SystemExit: 3", "KeyboardInterrupt: ", "Poison: poisoned")
    bad = [
        (i, rows.get(i))
        for i, failing in chaos.poisoned.items()
        if (rows.get(i) or {}).get("res") != "success"
        or rows[i]["n"] < failing
        or rows[i]["lf"] not in known
    ]
    bad += [
        (i, rows.get(i))
        for i in chaos.killed
        if (rows.get(i) or {}).get("f") != "killed" or rows[i]["lf"] not in known
    ]
    r.checks["poisoned invocations failed as attempts, then healed or were killed"] = (
        "ok" if not bad else f"{len(bad)} of {len(ids)}, e.g. {bad[:2]}"
    )
    r.stats["poisoned"] = {"healed": len(chaos.poisoned), "killed": len(chaos.killed)}


def _check_sleeps(r: Report, rt: Runtime) -> None:
    """No timer fired before its time; no nap woke before its timer; and every sleep's timer
    lies at least the requested seconds after its invocation was accepted."""
    early = rt.sql(
        "SELECT t.invocation_id FROM sys_timer t WHERE t.fired AND t.fired_at < t.fire_at"
    ).num_rows
    woke_early = rt.sql(
        "SELECT i.id FROM sys_invocation i JOIN sys_timer t ON t.invocation_id = i.id "
        "AND t.kind = 'sleep' WHERE i.target_handler_name = 'nap' AND "
        "i.output::DOUBLE * 1000 < epoch_ms(t.fire_at)"
    ).num_rows
    short = rt.sql(
        "SELECT i.id, i.created_at, t.fire_at, i.input->>'seconds' AS s FROM sys_invocation i "
        "JOIN sys_timer t ON t.invocation_id = i.id AND t.kind = 'sleep' WHERE "
        "epoch_ms(t.fire_at) < epoch_ms(i.created_at) + floor((i.input->>'seconds')::DOUBLE "
        "* 1000)"
    ).to_pylist()
    sleeps = _scalar(rt, "SELECT count(*) FROM sys_timer WHERE kind = 'sleep'")
    r.checks["no sleep woke early"] = (
        "ok"
        if early == woke_early == len(short) == 0
        else f"{early} timers fired early, {woke_early} naps woke early, {len(short)} timers set "
        f"shorter than asked, e.g. {short[:2]}"
    )
    r.stats["sleeps"] = sleeps


def _check_awakeables(chaos: Chaos, rt: Runtime) -> None:
    """One awakeable entry per approval, completed exactly once (completions are rows of
    their own in the journal's log table: ``sys_journal`` only says whether one exists), with
    the approval's own value; the resolver never had two resolutions of one accepted."""
    r = chaos.report
    rows = rt.sql(
        "WITH c AS (SELECT id, (meta->>'idx')::INTEGER AS idx, count(*) AS n FROM log "
        "WHERE kind = 'completion' GROUP BY ALL), "
        'e AS (SELECT invocation_id AS id, "index" AS idx, count(*) AS entries '
        "FROM sys_journal WHERE entry_type = 'awakeable' GROUP BY ALL) "
        "SELECT i.id, count(e.idx) AS awakeables, max(e.entries) AS entries, "
        "min(coalesce(c.n, 0)) AS min_done, max(coalesce(c.n, 0)) AS max_done "
        "FROM sys_invocation i LEFT JOIN e ON e.id = i.id "
        "LEFT JOIN c ON c.id = e.id AND c.idx = e.idx "
        "WHERE i.target_handler_name = 'approval' GROUP BY i.id"
    ).to_pylist()
    bad = [
        row
        for row in rows
        if (row["awakeables"], row["entries"], row["min_done"], row["max_done"]) != (1, 1, 1, 1)
    ]
    wrong = rt.sql(
        "SELECT id, output FROM sys_invocation WHERE target_handler_name = 'approval' AND "
        "(output IS NULL OR NOT contains(output::VARCHAR, id))"
    ).to_pylist()
    counts: dict[str, Any] = {}
    try:
        counts.update(
            ray.get(
                ray.get_actor(
                    apps.RESOLVER, namespace=apps.outside(chaos.namespace)
                ).counts.remote(),
                timeout=30,
            )
        )
    except Exception as e:
        counts["unavailable"] = str(e)
    twice = counts.get("resolved", 0) > len(rows)
    r.checks["every awakeable delivered once, with its own value"] = (
        "ok"
        if not bad and not wrong and not twice
        else f"{len(bad)} not completed exactly once (e.g. {bad[:2]}), {len(wrong)} wrong values "
        f"(e.g. {wrong[:2]}), resolver accepted {counts.get('resolved')} for {len(rows)}"
    )
    r.stats["awakeables"] = len(rows)
    r.stats["resolver"] = counts  # refused_second: second resolutions the runtime refused


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

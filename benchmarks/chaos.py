"""Chaos: a mixed workload under seeded random faults, then invariants checked through SQL on
the journal and through ledgers kept outside the processes.

    python -m benchmarks.chaos --minutes 10 --seed 7          # the long mode, with full restarts
    python -m benchmarks.chaos --seconds 40 --seed 1 --short  # what tests/chaos runs

Workload: counter increments over many keys (idempotent client retries), three-step ``ctx.run``
services, sleeps, awakeables resolved by an outside actor, object-to-object calls and sends, and
a separate client driver process doing idempotent increments. Faults: ``ray.kill`` of host
actors, ``os._exit`` inside handlers (crash tokens), the journal and scheduler actors killed,
the client driver killed (and started again), and in the long mode the whole runtime stopped
and started again on the same data dir. The first part of the run is fault-free, for a
throughput baseline.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray

from actors import Runtime, TerminalError
from actors.routing import JOURNAL, SCHEDULER, host_name
from benchmarks import chaos_apps as apps

FAULTS = ("host_kill", "handler_exit", "journal_kill", "scheduler_kill", "driver_kill")
DRIVER_INCREMENTS = 60


@dataclass
class Report:
    seed: int
    seconds: float
    invocations: int = 0
    acked: collections.Counter[str] = field(default_factory=collections.Counter)
    faults: collections.Counter[str] = field(default_factory=collections.Counter)
    client_retries: int = 0
    calm_per_s: float = 0.0
    faulty_per_s: float = 0.0
    checks: dict[str, str] = field(default_factory=dict)  # name -> "ok" or what failed
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(v == "ok" for v in self.checks.values())

    def render(self) -> str:
        lines = [f"chaos seed={self.seed}: {self.invocations} invocations in {self.seconds:.0f}s",
                 f"  throughput: {self.calm_per_s:.0f}/s without faults, "
                 f"{self.faulty_per_s:.0f}/s during faults",
                 "  faults: " + (", ".join(f"{k}={v}" for k, v in sorted(self.faults.items()))
                                 or "none"),
                 f"  client retries after errors: {self.client_retries}",
                 "  stats: " + json.dumps(self.stats, sort_keys=True),
                 "  invariants:"]
        lines += [f"    {'PASS' if v == 'ok' else 'FAIL'} {k}" + ("" if v == "ok" else f": {v}")
                  for k, v in self.checks.items()]
        return "\n".join(lines)


class Chaos:
    def __init__(self, work_dir: Path, seed: int, seconds: float, *, restarts: bool,
                 namespace: str, clients: int = 6) -> None:
        self.dir = work_dir
        self.rng = random.Random(seed)
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
        self.handles: list[tuple[str, str, Any]] = []  # (kind, invocation id, expectation)
        self.rt: Runtime | None = None
        self.resolver: Any = None
        self.driver: subprocess.Popen[bytes] | None = None
        self.paused = False

    # -- setup --------------------------------------------------------------------------------

    def start(self) -> Runtime:
        self.rt = Runtime.start(apps.ALL, data_dir=self.data, namespace=self.namespace,
                                pool_size=2)
        if self.resolver is None:  # the outside world: outlives runtime restarts
            self.resolver = ray.remote(apps.Resolver).options(
                name=apps.RESOLVER, namespace=apps.outside(self.namespace),
                lifetime="detached", num_cpus=0, max_restarts=-1, max_task_retries=-1,
            ).remote(self.namespace)
        return self.rt

    def job(self, **kw: Any) -> apps.Job:
        return apps.Job(ledger=self.ledger, crash_dir=str(self.crash_dir),
                        namespace=self.namespace, **kw)

    # -- load ---------------------------------------------------------------------------------

    async def retrying(self, fn: Any, *args: Any, **kw: Any) -> Any:
        """Call until acknowledged (idempotency keys make retries safe); TerminalError is an
        answer, not a failure."""
        delay = 0.1
        while True:
            while self.paused:
                await asyncio.sleep(0.1)
            try:
                return await fn(*args, **kw)
            except TerminalError:
                raise
            except Exception:
                self.report.client_retries += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def client(self, n: int, stop: float) -> None:
        i = 0
        while time.monotonic() < stop:
            rt = self.rt  # a new one after a full restart
            assert rt is not None
            i += 1
            kind = self.rng.choice(["add", "add", "add", "relay", "three", "nap", "approval"])
            tag = f"c{n}-{i}"
            if kind == "add":
                key = f"k{self.rng.randrange(40)}"
                await self.retrying(rt.call_async, apps.add, key, self.job(),
                                    idempotency_key=tag)
                self.report.acked[key] += 1
            elif kind == "relay":
                target = f"r{self.rng.randrange(8)}"
                await self.retrying(rt.call_async, apps.relay, f"relay-{n}", self.job(
                    target=target), idempotency_key=tag)
                self.report.acked[f"call-{target}"] += 1
                self.report.acked[f"send-{target}"] += 1
            else:
                job = self.job(seconds=self.rng.uniform(0.2, 1.5)) if kind == "nap" \
                    else self.job()
                target = {"three": apps.three, "nap": apps.nap, "approval": apps.approval}[kind]
                h = await self.retrying(rt.send_async, target, None, job, idempotency_key=tag)
                self.handles.append((kind, h.id, None))
            self.completed_at.append(time.monotonic())

    # -- faults -------------------------------------------------------------------------------

    def start_driver(self) -> None:
        env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_ADDRESS":
               ray.get_runtime_context().gcs_address}
        with open(self.dir / "driver.log", "ab") as log:
            self.driver = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.chaos", "--client-driver", self.namespace,
                 str(self.dir)], env=env, cwd=Path(__file__).resolve().parents[1],
                stdout=log, stderr=subprocess.STDOUT)

    async def injector(self, start: float, stop: float) -> None:
        kinds = [*FAULTS, "restart"] if self.restarts else list(FAULTS)
        await asyncio.sleep(max(start - time.monotonic(), 0))
        while time.monotonic() < stop:
            kind = self.rng.choice(kinds)
            self.report.faults[kind] += 1
            await asyncio.to_thread(self.inject, kind)
            await asyncio.sleep(self.rng.uniform(1.0, 3.0))

    def inject(self, kind: str) -> None:
        ns = self.namespace
        if kind == "host_kill":
            service = self.rng.choice(["ChaosCounter", "ChaosSteps"])
            self._kill_host(host_name(service, self.rng.randrange(2)))
        elif kind == "handler_exit":
            for _ in range(self.rng.randint(1, 3)):
                (self.crash_dir / f"token-{time.time_ns()}").touch()
        elif kind == "journal_kill":
            _kill(JOURNAL, ns)
        elif kind == "scheduler_kill":
            _kill(SCHEDULER, ns)
        elif kind == "driver_kill":
            if self.driver is not None and self.driver.poll() is None:
                self.driver.kill()
                self.driver.wait()
            self.start_driver()
        elif kind == "restart":
            self.paused = True
            assert self.rt is not None
            pids = self._host_pids()
            self.rt.shutdown()
            for pid in pids:
                self._record_death(pid)
            self.start()
            self.paused = False

    def _kill_host(self, name: str) -> None:
        """Kill a host and, once its process is gone, say so in the ledger (the overlap check
        lets another process take over the keys of a dead one)."""
        try:
            actor = ray.get_actor(name, namespace=self.namespace)
            pid = ray.get(actor.pid.remote(), timeout=10)
        except Exception:
            return  # restarting right now
        ray.kill(actor, no_restart=False)
        self._record_death(pid)

    def _host_pids(self) -> list[int]:
        pids = []
        for service in ("ChaosCounter", "ChaosSteps"):
            for i in range(2):
                with contextlib.suppress(Exception):
                    actor = ray.get_actor(host_name(service, i), namespace=self.namespace)
                    pids.append(ray.get(actor.pid.remote(), timeout=10))
        return pids

    def _record_death(self, pid: int) -> None:
        """Once ``pid`` is gone, say so in the ledger."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                apps.append(self.ledger, f"dead {pid}")
                return
            time.sleep(0.01)

    # -- the run ------------------------------------------------------------------------------

    async def run(self) -> Report:
        self.start()
        self.start_driver()
        t0 = time.monotonic()
        calm_until = t0 + self.seconds * 0.25
        stop = t0 + self.seconds
        await asyncio.gather(self.injector(calm_until, stop),
                             *(self.client(n, stop) for n in range(self.clients)))
        calm = sum(t < calm_until for t in self.completed_at)
        self.report.calm_per_s = calm / (calm_until - t0)
        self.report.faulty_per_s = (len(self.completed_at) - calm) / (stop - calm_until)
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
        deadline = time.monotonic() + 60
        while _scalar(rt, "SELECT count(*) FROM sys_invocation WHERE status <> 'completed'"):
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        check(self, rt)
        return self.report


def _kill(name: str, namespace: str) -> None:
    with contextlib.suppress(ValueError):  # not running right now (restarting)
        ray.kill(ray.get_actor(name, namespace=namespace), no_restart=False)


def _scalar(rt: Runtime, query: str) -> Any:
    return rt.sql(query).column(0)[0].as_py()


# -- invariants -------------------------------------------------------------------------------


def check(chaos: Chaos, rt: Runtime) -> None:
    r = chaos.report
    lines = Path(chaos.ledger).read_text().splitlines() if Path(chaos.ledger).exists() else []
    r.invocations = _scalar(rt, "SELECT count(*) FROM sys_invocation")
    open_count = _scalar(rt, "SELECT count(*) FROM sys_invocation WHERE status <> 'completed'")
    unfinished = rt.sql("SELECT id, target, status, last_failure FROM sys_invocation "
                        "WHERE status <> 'completed' LIMIT 3").to_pylist()
    r.checks["every accepted invocation finished"] = "ok" if not open_count else \
        f"{open_count} unfinished, e.g. {unfinished}"
    failed = rt.sql("SELECT target_handler_name AS h, completion_failure AS f, count(*) AS n "
                    "FROM sys_invocation WHERE completion_result = 'failure' GROUP BY ALL"
                    ).to_pylist()
    r.checks["no invocation failed"] = "ok" if not failed else str(failed)

    # a journaled ctx.run never ran again: its journaled nonce is the last ledger line of it
    runs: dict[tuple[str, str], list[str]] = collections.defaultdict(list)
    for line in lines:
        if line.startswith("run "):
            _, inv, step, nonce = line.split()
            runs[inv, step].append(nonce)
    journaled = rt.sql("SELECT invocation_id AS i, name AS s, result->>'$' AS nonce "
                       "FROM sys_journal WHERE entry_type = 'run' AND name LIKE 'step%'"
                       ).to_pylist()
    bad = [(j["i"], j["s"]) for j in journaled if runs.get((j["i"], j["s"]), [None])[-1]
           != j["nonce"]]
    r.checks["journaled ctx.run never re-ran"] = "ok" if not bad else f"{len(bad)}: {bad[:3]}"
    r.stats["runs_journaled"] = len(journaled)
    r.stats["runs_executed"] = sum(len(v) for v in runs.values())

    # counters equal acknowledged increments (client, calls, sends, the driver process)
    values = {row["k"]: int(row["v"]) for row in rt.sql(
        "SELECT service_key AS k, value AS v FROM state WHERE service_name = 'ChaosCounter' "
        "AND key = 'n'").to_pylist()}
    wrong = {k: (values.get(k, 0), n) for k, n in r.acked.items() if values.get(k, 0) != n}
    r.checks["counters equal acknowledged increments"] = "ok" if not wrong else str(wrong)
    driver_total = sum(v for k, v in values.items() if k.startswith("drv-"))
    r.checks["driver's idempotent increments applied once"] = "ok" \
        if driver_total == DRIVER_INCREMENTS else f"{driver_total} != {DRIVER_INCREMENTS}"

    # exclusive handlers of a key never overlapped
    r.checks["exclusive handlers never overlapped"] = _overlaps(lines)

    # sleeps never woke early; awakeables delivered with their own value
    early = rt.sql("SELECT t.invocation_id FROM sys_timer t WHERE t.fired AND "
                   "t.fired_at < t.fire_at").num_rows
    woke_early = rt.sql(
        "SELECT i.id FROM sys_invocation i JOIN sys_timer t ON t.invocation_id = i.id "
        "AND t.kind = 'sleep' WHERE i.target_handler_name = 'nap' AND "
        "i.output::DOUBLE * 1000 < epoch_ms(t.fire_at)").num_rows
    r.checks["no sleep woke early"] = "ok" if early == woke_early == 0 else \
        f"{early} timers fired early, {woke_early} naps woke early"
    wrong_awk = rt.sql(
        "SELECT id, output FROM sys_invocation WHERE target_handler_name = 'approval' AND "
        "(output IS NULL OR NOT contains(output::VARCHAR, id))").to_pylist()
    r.checks["every awakeable delivered its own value"] = "ok" if not wrong_awk else \
        str(wrong_awk[:3])
    r.stats["awakeables"] = _scalar(
        rt, "SELECT count(*) FROM sys_invocation WHERE target_handler_name = 'approval'")
    try:
        r.stats["resolver"] = ray.get(ray.get_actor(
            apps.RESOLVER, namespace=apps.outside(chaos.namespace)).counts.remote(), timeout=30)
    except Exception as e:
        r.stats["resolver"] = f"unavailable: {e}"
    r.stats["crash_tokens_taken"] = sum(n.startswith("taken-") for n in
                                        os.listdir(chaos.crash_dir))


def _overlaps(lines: list[str]) -> str:
    """Per key, between an invocation's enter and exit no other invocation enters, unless the
    process it was inside had died before (its invocation is then run again, maybe after
    others whose acceptance became durable first)."""
    inside: dict[str, tuple[str, str] | None] = {}
    dead: set[str] = set()
    for line in lines:
        kind, _, rest = line.partition(" ")
        if kind == "dead":
            dead.add(rest)
        elif kind == "enter":
            key, inv, pid = rest.split()
            now = inside.get(key)
            if now is not None and now[0] != inv and now[1] not in dead:
                return f"{inv} entered {key} while {now[0]} was inside (pid {now[1]} alive)"
            inside[key] = (inv, pid)
        elif kind == "exit":
            key, inv, _pid = rest.split()
            if inside.get(key) is not None and inside[key][0] == inv:  # type: ignore[index]
                inside[key] = None
    return "ok"


# -- the client driver process ----------------------------------------------------------------


def client_driver(namespace: str, work_dir: str) -> None:
    """Idempotent increments over a few keys; killed at random and started again from the
    start, so every increment is re-sent and must still apply once."""
    rt = Runtime.connect(namespace=namespace)
    crash = str(Path(work_dir) / "crash")
    job = apps.Job(ledger=str(Path(work_dir) / "ledger.txt"), crash_dir=crash)
    for i in range(DRIVER_INCREMENTS):
        while True:
            try:
                rt.call(apps.add, key=f"drv-{i % 5}", arg=job, idempotency_key=f"drv-{i}")
                break
            except TerminalError:
                raise
            except Exception:
                time.sleep(0.2)
        time.sleep(0.05)


# -- entry points -----------------------------------------------------------------------------


def run_chaos(seconds: float, seed: int, *, restarts: bool = False,
              work_dir: Path | None = None, namespace: str | None = None) -> Report:
    """Run the chaos workload on this process's Ray (``ray.init`` first)."""
    work = work_dir or Path(tempfile.mkdtemp(prefix="raystate-chaos-"))
    chaos = Chaos(work, seed, seconds, restarts=restarts,
                  namespace=namespace or f"chaos-{seed}-{os.getpid()}-{time.time_ns() % 10**6}")
    try:
        asyncio.run(chaos.run())
        chaos.finish()
    finally:
        if chaos.driver is not None and chaos.driver.poll() is None:
            chaos.driver.kill()
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
    parser.add_argument("--client-driver", nargs=2, metavar=("NAMESPACE", "WORK_DIR"),
                        help=argparse.SUPPRESS)
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

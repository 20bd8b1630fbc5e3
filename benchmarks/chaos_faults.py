"""Fault injection for the chaos run (``benchmarks.chaos``): each scheduled fault made to
happen (hosts, the journal, the scheduler and the client driver killed, crash tokens, poison, a
hostile neighbour, a full restart), and what it takes to count them: deaths written to the
ledger, actor restarts, the neighbours that reached a socket."""

from __future__ import annotations

import collections
import contextlib
import json
import subprocess
import sys
import time
from itertools import product
from pathlib import Path
from typing import Any

import ray

from actors.cluster.names import JOURNAL, SCHEDULER, SCHEDULES, host_name
from benchmarks import chaos_apps as apps
from benchmarks import chaos_checks as checks
from benchmarks import chaos_limits
from benchmarks.chaos_base import ChaosBase, alive, not_terminal
from journal.retry import Backoff, retry_sync

NEIGHBOUR_S = 4.0  # how long one hostile neighbour floods
POISON_KILL_AFTER = 2  # attempts a never-healing poisoned invocation fails before it is killed
SYSTEM_ACTORS = (
    JOURNAL,
    SCHEDULER,
    *(host_name(s, i) for s, i in product(checks.HOST_SERVICES, range(checks.POOL_SIZE))),
)


class Faults(ChaosBase):
    """Injects faults into the run's runtime; a part of ``Chaos``."""

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
            when=not_terminal,
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
            if not alive(pid):
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


def _kill(name: str, namespace: str) -> bool:
    try:
        actor = ray.get_actor(name, namespace=namespace)
    except ValueError:  # not running right now (restarting)
        return False
    ray.kill(actor, no_restart=False)
    return True

"""ChaosBase: the state a chaos run (``benchmarks.chaos``) and its parts (fault injection,
``chaos_faults``; the invariants, ``chaos_invariants``) share, its report, and the small
helpers they all use."""

from __future__ import annotations

import collections
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actors import Runtime, TerminalError

DRIVER_INCREMENTS = 60


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


class ChaosBase:
    """The run's state; the fault injection is a mixin over it, and ``Chaos`` puts the run
    together."""

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

    def _count_retry(self, _: BaseException) -> None:
        self.report.client_retries += 1

    if TYPE_CHECKING:  # defined by ``Chaos``; the fault injection calls them

        def start(self) -> Runtime: ...

        def start_driver(self) -> None: ...


def not_terminal(e: BaseException) -> bool:
    """A TerminalError is an answer, not a failure to try again."""
    return not isinstance(e, TerminalError)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True

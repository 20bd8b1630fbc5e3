"""CPU seconds and RSS of the processes of a benchmark run, grouped by what they do.

The benchmark command starts its own local Ray, so every process of the run descends from it:
Ray's system processes (``gcs_server``, ``raylet``, agents, monitors, idle workers), the
runtime's actors and the load-driver process. Actors are told apart by the process title Ray
gives their workers (``ray::JournalActor``, ``ray::SchedulerActor``, ``ray::HostActor``...); this
cluster is private, so every such process belongs to the runtime under test. With several
partitions, a journal process is named after its partition (``journal:<p>``, from the pids the
journal actors report), and the journal files of every partition directory are sampled.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import ray  # noqa: F401  (puts Ray's vendored psutil on sys.path)

from journal.partitions import directories

import psutil  # isort: skip

KINDS = ("journal", "scheduler", "hosts", "driver", "ray", "bench")
"""journal, scheduler and host actors; the load driver; Ray's own processes; the benchmark
command itself (the Ray driver that started the cluster and the runtime)."""

CLASSES = {"JournalActor": "journal", "SchedulerActor": "scheduler", "HostActor": "hosts"}


@dataclass(frozen=True)
class Proc:
    kind: str
    name: str  # "ray" kind: gcs_server, raylet or other; "journal" kind: the journal's actor name
    cpu_s: float
    rss: int


@dataclass
class Snapshot:
    at: float  # time.monotonic()
    procs: dict[tuple[int, float], Proc] = field(default_factory=dict)  # (pid, create_time)
    files: dict[str, int] = field(default_factory=dict)  # journal file (path in data dir) -> bytes
    journal: dict[str, int] = field(default_factory=dict)  # counters: transactions, drains, reads

    def rss_mb(self) -> dict[str, float]:
        out = dict.fromkeys(KINDS, 0.0)
        for p in self.procs.values():
            out[p.kind] += p.rss / 2**20
        return out

    @property
    def db_bytes(self) -> int:
        return sum(self.files.values())

    def count(self, kind: str) -> int:
        """How many processes of ``kind`` ran at this snapshot (e.g. host actors)."""
        return sum(1 for p in self.procs.values() if p.kind == kind)


def classify(
    proc: psutil.Process, driver_pid: int | None, me: int, journals: dict[int, str] | None = None
) -> tuple[str, str]:
    if proc.pid == me:
        return "bench", "bench"
    if proc.pid == driver_pid:
        return "driver", "driver"
    title = (proc.cmdline() or [proc.name()])[0]
    if title.startswith("ray::"):  # "ray::HostActor", "ray::HostActor.invoke", "ray::name:..."
        for cls, kind in CLASSES.items():
            if cls in title:
                return kind, (journals or {}).get(proc.pid, kind) if kind == "journal" else kind
    name = proc.name()
    return "ray", name if name in ("gcs_server", "raylet") else "other"


def snapshot(
    data_dir: str | Path,
    driver_pid: int | None = None,
    journal: dict[str, int] | None = None,
    journals: dict[int, str] | None = None,
) -> Snapshot:
    """CPU and RSS of this process and all its descendants, and the journal's file sizes
    (every partition's); ``journals``: the journal actors' pids -> their names."""
    me = psutil.Process()
    snap = Snapshot(at=time.monotonic(), journal=journal or {})
    for proc in [me, *me.children(recursive=True)]:
        try:
            with proc.oneshot():
                kind, name = classify(proc, driver_pid, me.pid, journals)
                cpu = proc.cpu_times()
                snap.procs[(proc.pid, proc.create_time())] = Proc(
                    kind, name, cpu.user + cpu.system, proc.memory_info().rss
                )
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    root = Path(data_dir)
    for directory in directories(root):
        for f in directory.glob("journal.duckdb*"):
            try:
                snap.files[str(f.relative_to(root))] = f.stat().st_size
            except FileNotFoundError:
                continue
    return snap


def cpu_between(start: Snapshot, end: Snapshot) -> tuple[dict[str, float], dict[str, float]]:
    """CPU seconds per kind spent between two snapshots, and the "ray" kind by process name
    (a process born in between counts from zero; one that died in between is lost)."""
    kinds = dict.fromkeys(KINDS, 0.0)
    ray_names: dict[str, float] = {}
    for key, p in end.procs.items():
        before = start.procs.get(key)
        spent = max(p.cpu_s - (before.cpu_s if before is not None else 0.0), 0.0)
        kinds[p.kind] += spent
        if p.kind == "ray":
            ray_names[p.name] = ray_names.get(p.name, 0.0) + spent
    return kinds, ray_names


def journal_cpu_between(start: Snapshot, end: Snapshot) -> dict[str, float]:
    """CPU seconds of each journal process between two snapshots, by its actor name
    (``journal``, or ``journal:<p>`` per partition): how evenly the partitions are loaded."""
    out: dict[str, float] = {}
    for key, p in end.procs.items():
        if p.kind == "journal":
            before = start.procs.get(key)
            spent = max(p.cpu_s - (before.cpu_s if before is not None else 0.0), 0.0)
            out[p.name] = out.get(p.name, 0.0) + spent
    return dict(sorted(out.items()))

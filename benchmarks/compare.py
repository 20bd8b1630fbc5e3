"""Partition counts compared (``python -m benchmarks --partitions 1,2,4``): the cells of every
count combined over the rounds, their ratios to the smallest count (partitions=1), CPU per
invocation by process kind, and the scaling model that the journal's share of it gives.

The model: a partition's journal is one process, so one partition commits at most ``1 / j``
invocations a second, ``j`` being the journal's CPU seconds per invocation; the whole server
(journals, schedulers, hosts, Ray; the load driver is the client and runs elsewhere in
production) spends ``s`` CPU seconds per invocation, so ``C`` cores carry at most ``C / s``.
N partitions on C cores then give at most ``min(N / j, C / s)`` invocations a second: they
scale until ``N = C * j / s``, where the cores run out. A workload whose calls all go to one
key (``hot``) stays on one partition whatever N is.

Pure: rows in (the JSON lines of ``benchmarks.report``), tables out; no Ray.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table

KINDS = ("journal", "scheduler", "hosts", "driver", "ray")
SERVER = ("journal", "scheduler", "hosts", "ray")
"""The kinds that serve the invocations (the driver is the client)."""


def run_order(counts: Sequence[int], rounds: int) -> list[tuple[int, int]]:
    """(round, partition count) in the order to run them: the counts as given, then reversed,
    in turns (1,2,4 then 4,2,1), so a slow drift of the machine falls on every count alike."""
    return [
        (r, n) for r in range(rounds) for n in (counts if r % 2 == 0 else list(reversed(counts)))
    ]


@dataclass(frozen=True)
class Compared:
    """One workload at one concurrency and one partition count, over all its rounds."""

    workload: str
    concurrency: int
    partitions: int
    rounds: int
    inv_per_s: float | None  # all rounds' calls over all rounds' windows
    p50_ms: float | None  # the median of the rounds'
    p99_ms: float | None
    cpu_ms_per_inv: dict[str, float] = field(default_factory=dict)  # by process kind
    journal_busy: float | None = None  # cores busy per journal, mean over the partitions
    journal_busy_max: float | None = None  # ... of the busiest journal
    host_procs: int | None = None
    check: str = "OK"

    @property
    def journal_ms_per_partition(self) -> float | None:
        """The journal's CPU per invocation divided by the partitions (journal CPU / N)."""
        j = self.cpu_ms_per_inv.get("journal")
        return None if j is None else j / self.partitions

    @property
    def server_ms_per_inv(self) -> float | None:
        if not all(k in self.cpu_ms_per_inv for k in SERVER):
            return None
        return sum(self.cpu_ms_per_inv[k] for k in SERVER)


def _median(values: Iterable[Any]) -> float | None:
    nums = [v for v in values if isinstance(v, int | float)]
    return statistics.median(nums) if nums else None


def _combine_cell(rows: list[dict[str, Any]]) -> Compared:
    first = rows[0]
    timed = [(r["calls"], r["window_s"]) for r in rows if r.get("calls") and r.get("window_s")]
    window = sum(w for _, w in timed)
    inv_per_s = sum(n for n, _ in timed) / window if timed and len(timed) == len(rows) else None
    measured = [r for r in rows if "cpu_s" in r]
    invocations = sum(r.get("cpu_invocations") or 0 for r in measured)
    cpu_window = sum(r.get("cpu_window_s") or 0.0 for r in measured)
    cpu = (
        {k: sum(r["cpu_s"].get(k, 0.0) for r in measured) * 1000 / invocations for k in KINDS}
        if invocations
        else {}
    )
    journals: dict[str, float] = {}
    for r in measured:
        for name, spent in r.get("cpu_s_journals", {}).items():
            journals[name] = journals.get(name, 0.0) + spent
    busy = busy_max = None
    if cpu_window > 0 and journals:
        busy = sum(journals.values()) / first["partitions"] / cpu_window
        busy_max = max(journals.values()) / cpu_window
    failed = [r["check"] for r in rows if r.get("check", "OK") != "OK"]
    procs = [r["host_procs"] for r in rows if "host_procs" in r]
    return Compared(
        workload=first["workload"],
        concurrency=first["concurrency"],
        partitions=first["partitions"],
        rounds=len(rows),
        inv_per_s=inv_per_s,
        p50_ms=_median(r.get("p50_ms") for r in rows),
        p99_ms=_median(r.get("p99_ms") for r in rows),
        cpu_ms_per_inv=cpu,
        journal_busy=busy,
        journal_busy_max=busy_max,
        host_procs=max(procs) if procs else None,
        check=failed[0] if failed else "OK",
    )


def combine(rows: Iterable[dict[str, Any]]) -> list[Compared]:
    """The measured rows (each with ``partitions``) grouped by workload, concurrency and
    partition count, in the order the workloads and concurrencies first ran, counts rising."""
    groups: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    for r in rows:
        if "skipped" in r or "partitions" not in r:
            continue
        groups.setdefault((r["workload"], r["concurrency"], r["partitions"]), []).append(r)
    cells = list(dict.fromkeys((w, c) for w, c, _ in groups))
    return [
        _combine_cell(groups[(w, c, n)])
        for w, c in cells
        for n in sorted(n for w2, c2, n in groups if (w2, c2) == (w, c))
    ]


def _ratio(ours: float | None, base: float | None) -> float | None:
    return None if ours is None or not base else ours / base


def _fmt(v: float | None, digits: int = 1) -> str:
    if v is None:
        return ""
    if v >= 100:
        return f"{round(v):,}"
    return f"{v:.{digits}f}"


def _x(v: float | None) -> str:
    return "" if v is None else f"{v:.2f}x"


def table(compared: list[Compared], title: str) -> Table:
    """Per workload and concurrency, one line per partition count: throughput and latency
    with their ratio to the smallest count, CPU ms per invocation by process kind, how busy
    the journals were and how many host processes ran."""
    out = Table(
        title=f"{title}\nratios (x) to the smallest partition count of the cell; CPU in ms per "
        "invocation by process kind, journal/P = journal / partitions, server = all but the "
        "driver; journal busy = cores busy per journal, mean · busiest; hosts = host processes",
        title_justify="left",
        header_style="bold",
    )
    for name in [
        "workload",
        "c",
        "P",
        "inv/s",
        "x",
        "p50 ms",
        "x",
        "p99 ms",
        "x",
        "journal",
        "journal/P",
        "sched",
        "hosts",
        "driver",
        "ray",
        "server",
        "journal busy",
        "hosts",
        "check",
    ]:
        out.add_column(
            name, justify="left" if name in ("workload", "check") else "right", overflow="fold"
        )
    bases: dict[tuple[str, int], Compared] = {}
    for c in compared:
        base = bases.setdefault((c.workload, c.concurrency), c)
        cpu = c.cpu_ms_per_inv
        busy = (
            f"{c.journal_busy:.2f} · {c.journal_busy_max:.2f}"
            if c.journal_busy is not None and c.journal_busy_max is not None
            else ""
        )
        out.add_row(
            c.workload,
            str(c.concurrency),
            str(c.partitions),
            _fmt(c.inv_per_s),
            _x(_ratio(c.inv_per_s, base.inv_per_s)),
            _fmt(c.p50_ms),
            _x(_ratio(c.p50_ms, base.p50_ms)),
            _fmt(c.p99_ms),
            _x(_ratio(c.p99_ms, base.p99_ms)),
            _fmt(cpu.get("journal"), 2),
            _fmt(c.journal_ms_per_partition, 2),
            *(_fmt(cpu.get(k), 2) for k in ("scheduler", "hosts", "driver", "ray")),
            _fmt(c.server_ms_per_inv, 2),
            busy,
            "" if c.host_procs is None else str(c.host_procs),
            c.check,
        )
    return out


@dataclass(frozen=True)
class Model:
    """The scaling model of one workload, from its cell at the smallest partition count and
    the highest concurrency (the closest to saturation)."""

    workload: str
    concurrency: int
    journal_ms: float  # j: journal CPU per invocation
    server_ms: float  # s: server CPU per invocation

    @property
    def partition_ceiling(self) -> float:
        """1 / j: what one partition's journal commits at most, in invocations a second."""
        return 1000 / self.journal_ms

    def ceiling(self, partitions: int, cores: int) -> float:
        """min(N / j, C / s), in invocations a second."""
        return min(partitions * self.partition_ceiling, self.cores_ceiling(cores))

    def cores_ceiling(self, cores: int) -> float:
        """C / s: what ``cores`` cores carry at most, however many partitions."""
        return cores * 1000 / self.server_ms

    def useful_partitions(self, cores: int) -> float:
        """C * j / s: the partition count where the cores run out."""
        return cores * self.journal_ms / self.server_ms


def models(compared: list[Compared]) -> list[Model]:
    best: dict[str, Compared] = {}
    for c in compared:
        have = best.get(c.workload)
        if have is None or (c.partitions, -c.concurrency) < (have.partitions, -have.concurrency):
            best[c.workload] = c
    out = []
    for c in best.values():
        j, s = c.cpu_ms_per_inv.get("journal"), c.server_ms_per_inv
        if j and s:
            out.append(Model(c.workload, c.concurrency, j, s))
    return out


def model_table(found: list[Model], cores: Sequence[int], partitions: int) -> Table:
    """The model per workload: j, s, one partition's ceiling, the cores one busy partition
    needs (s / j) and, for each core count C, the partition count where the cores run out
    (C * j / s) and the ceiling there (C / s)."""
    out = Table(
        title=f"model from partitions={partitions}: N partitions on C cores carry at most "
        "min(N / j, C / s) inv/s (j = journal, s = server CPU per invocation); partitions "
        "help up to N = C * j / s",
        title_justify="left",
        header_style="bold",
    )
    for name in ["workload", "c", "j ms", "s ms", "1 partition inv/s", "cores/partition"]:
        out.add_column(name, justify="left" if name == "workload" else "right")
    for n in cores:
        out.add_column(f"C={n}: N · inv/s", justify="right")
    for m in found:
        per_core = [f"{m.useful_partitions(n):.1f} · {_fmt(m.cores_ceiling(n))}" for n in cores]
        out.add_row(
            m.workload,
            str(m.concurrency),
            _fmt(m.journal_ms, 2),
            _fmt(m.server_ms, 2),
            _fmt(m.partition_ceiling),
            _fmt(m.server_ms / m.journal_ms, 1),
            *per_core,
        )
    return out

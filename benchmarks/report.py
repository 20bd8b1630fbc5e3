"""One cell's figures (``row``) from the driver's result and the benchmark command's samples,
and the tables and JSON lines they are printed as."""

from __future__ import annotations

import json
import math
from typing import IO, Any

from rich.table import Table

from actors.client.tables import console
from benchmarks.procs import Snapshot, cpu_between, journal_cpu_between
from benchmarks.workloads import Workload

RESTATE = "Restate 1.7.12, raw client, same kind of 2-core machine"


def _ratio(ours: Any, theirs: float | None) -> float | None:
    if theirs is None or not isinstance(ours, int | float) or math.isnan(ours):
        return None
    return round(ours / theirs, 2)


def row(
    w: Workload, concurrency: int, result: dict[str, Any], snaps: dict[str, Snapshot]
) -> dict[str, Any]:
    """The JSON line of one cell: the driver's figures, CPU seconds per process kind over the
    measured window, RSS per kind (at the window's end, or when all timers sleep), journal
    file bytes per invocation, Restate's figures and the ratios to them, the check."""
    out: dict[str, Any] = {"workload": w.name, "concurrency": concurrency}
    for k in ("calls", "window_s", "inv_per_s", "p50_ms", "p90_ms", "p99_ms", "errors"):
        v = result.get(k)
        out[k] = round(v, 2) if isinstance(v, float) else v
    problems = list(result.get("problems", []))
    out["check"] = "FAIL: " + "; ".join(problems) if problems else "OK"
    invocations = result.get("invocations") or 0
    counted = result.get("cpu_invocations") or invocations  # those the samples span
    start, end = snaps.get("start"), snaps.get("end")
    notes = {
        k: round(v, 1) if isinstance(v, float) else v for k, v in result.get("notes", {}).items()
    }
    if start is not None and end is not None:
        cpu, ray_cpu = cpu_between(start, end)
        span = end.at - start.at
        out["cpu_window_s"] = round(span, 2)
        out["cpu_s"] = {k: round(v, 2) for k, v in cpu.items()}
        out["cpu_s_ray"] = {k: round(v, 2) for k, v in sorted(ray_cpu.items())}
        out["cpu_ms_per_inv"] = round(sum(cpu.values()) * 1000 / counted, 2) if counted else None
        rss = snaps.get("rss", end)
        out["rss_mb"] = {k: round(v) for k, v in rss.rss_mb().items()}
        # DuckDB moves the WAL into the file at a checkpoint (compressed): across one, the
        # growth says nothing per invocation, so there is no figure for that cell
        checkpointed = any(
            end.files.get(f, 0) < n for f, n in start.files.items() if f.endswith(".wal")
        )
        grown = end.db_bytes - start.db_bytes
        out["db_bytes_per_inv"] = round(grown / counted) if counted and not checkpointed else None
        out["db_wal_checkpointed"] = checkpointed
        for counter, key in (
            ("transactions", "commits_per_s"),
            ("drains", "drains_per_s"),
            ("reads", "reads_per_s"),
        ):
            out[key] = (
                round((end.journal.get(counter, 0) - start.journal.get(counter, 0)) / span, 1)
                if span > 0
                else None
            )
        if "rss" in snaps and invocations:
            sleeping = snaps["rss"].rss_mb()["hosts"] - start.rss_mb()["hosts"]
            notes["host_kb_per_sleeping"] = round(sleeping * 1024 / invocations, 2)
    out["notes"] = notes
    ref = w.restate.get(concurrency)
    out["restate"] = ref
    out["vs_restate"] = {k: _ratio(out.get(k), v) for k, v in ref.items()} if ref else None
    return out


def partition_fields(
    result: dict[str, Any],
    snaps: dict[str, Snapshot],
    partitions: int,
    round_: int,
    rounds: int,
) -> dict[str, Any]:
    """What a run comparing partition counts adds to a cell's JSON line: the count, the
    round (from 0, of ``rounds``), the invocations the CPU samples span (the CPU figures
    divide by them), each journal's CPU seconds (by actor name) and how many host processes
    ran."""
    out: dict[str, Any] = {
        "partitions": partitions,
        "round": round_,
        "rounds": rounds,
        "cpu_invocations": result.get("cpu_invocations") or result.get("invocations") or 0,
    }
    start, end = snaps.get("start"), snaps.get("end")
    if start is not None and end is not None:
        out["cpu_s_journals"] = {k: round(v, 2) for k, v in journal_cpu_between(start, end).items()}
        out["host_procs"] = end.count("hosts")
    return out


def _num(v: Any, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, int) or (isinstance(v, float) and v >= 100):
        return f"{round(v):,}"
    return f"{v:.{digits}f}"


def _vs(r: dict[str, Any], key: str, label: str = "") -> str:
    ref, ratio = (r.get("restate") or {}).get(key), (r.get("vs_restate") or {}).get(key)
    if ref is None:
        return ""
    return f"{label}{ref:g} ({ratio:.2f}x)" if ratio is not None else f"{label}{ref:g}"


def _notes(r: dict[str, Any]) -> str:
    n = r.get("notes", {})
    parts = []
    if "keys" in n:
        parts.append(f"{n['keys']:,} key{'s' if n['keys'] != 1 else ''}")
    if "sleeping" in n:
        parts.append(
            f"{n['sleeping']:,} slept at once ({n['in_memory']:,} in memory), "
            f"late p50 {_num(n['lateness_p50_ms'], 0)} · p99 "
            f"{_num(n['lateness_p99_ms'], 0)} · max {_num(n['lateness_max_ms'], 0)} ms"
        )
        if "host_kb_per_sleeping" in n:
            parts.append(f"{n['host_kb_per_sleeping']:.1f} KB/sleeping")
        if n.get("window_opened_during_submission"):
            parts.append("window opened before all were sent")
    if "orders" in n:
        parts.append(f"{n['orders']:,} orders")
    if r.get("db_wal_checkpointed"):
        parts.append("WAL checkpointed in the window: no B/inv")
    return "; ".join(parts)


def tables(rows: list[dict[str, Any]], title: str, restate: str = RESTATE) -> list[Table]:
    """The throughput table (``restate`` says where its Restate figures come from) and the
    resources table."""
    speed = Table(
        title=f"{title}\nthroughput and latency (Restate: {restate})",
        title_justify="left",
        header_style="bold",
    )
    parted = any("partitions" in r for r in rows)
    for name, right in [
        ("workload", False),
        ("c", True),
        *([("P", True)] if parted else []),
        ("calls", True),
        ("inv/s", True),
        ("p50 ms", True),
        ("p90 ms", True),
        ("p99 ms", True),
        ("Restate inv/s (ours/theirs)", True),
        ("Restate ms (ours/theirs)", True),
        ("check", False),
    ]:
        speed.add_column(name, justify="right" if right else "left", overflow="fold")
    use = Table(
        title="resources in the measured window (CPU s per process kind; RSS MB)",
        title_justify="left",
        header_style="bold",
    )
    for name in [
        "workload",
        "c",
        *(["P"] if parted else []),
        "cpu journal",
        "cpu sched",
        "cpu hosts",
        "cpu driver",
        "cpu ray",
        "cpu ms/inv",
        "rss journal",
        "rss hosts",
        "rss driver",
        "rss ray",
        "db B/inv",
        "commits/s",
        "notes",
    ]:
        use.add_column(
            name, justify="left" if name in ("workload", "notes") else "right", overflow="fold"
        )
    for r in rows:
        latency = " · ".join(x for x in (_vs(r, "p50_ms", "p50 "), _vs(r, "p99_ms", "p99 ")) if x)
        parts = [_partition(r)] if parted else []
        speed.add_row(
            r["workload"],
            str(r["concurrency"]),
            *parts,
            _num(r["calls"]),
            _num(r["inv_per_s"]),
            _num(r["p50_ms"]),
            _num(r["p90_ms"]),
            _num(r["p99_ms"]),
            _vs(r, "inv_per_s"),
            latency,
            r["check"],
        )
        cpu, rss = r.get("cpu_s", {}), r.get("rss_mb", {})
        use.add_row(
            r["workload"],
            str(r["concurrency"]),
            *parts,
            *(_num(cpu.get(k), 2) for k in ("journal", "scheduler", "hosts", "driver", "ray")),
            _num(r.get("cpu_ms_per_inv"), 2),
            *(_num(rss.get(k)) for k in ("journal", "hosts", "driver", "ray")),
            _num(r.get("db_bytes_per_inv")),
            _num(r.get("commits_per_s")),
            _notes(r),
        )
    return [speed, use]


def _partition(r: dict[str, Any]) -> str:
    """The partition count of a row, and its round when the run had several."""
    n = str(r.get("partitions", ""))
    return f"{n} r{r['round'] + 1}" if r.get("rounds", 1) > 1 else n


def print_tables(
    rows: list[dict[str, Any]], title: str, file: IO[str] | None = None, restate: str = RESTATE
) -> None:
    out = console(file)
    for t in tables(rows, title, restate):
        out.print(t)


def json_line(r: dict[str, Any]) -> str:
    return json.dumps(_nan_to_none(r), default=str)


def _nan_to_none(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, dict):
        return {k: _nan_to_none(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_nan_to_none(x) for x in v]
    return v

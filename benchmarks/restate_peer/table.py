"""The peer's rows (raystate's field names, ``benchmarks.report``) and its table."""

from __future__ import annotations

import json
import math
from typing import IO, Any

from rich.table import Table

from actors.client.tables import console
from benchmarks.restate_peer.install import VERSION
from benchmarks.restate_peer.procstat import Usage

SYSTEM = f"restate-{VERSION}"
KINDS = ("restate", "sdk", "driver")


def row(
    workload: str,
    concurrency: int,
    result: dict[str, Any],
    snaps: dict[str, tuple[float, dict[str, Usage | None]]],
) -> dict[str, Any]:
    """One cell's JSON line: the driver's figures, CPU seconds of restate-server, the SDK
    process and the driver over the measured window (and per invocation, all three), RSS at
    the window's end, the check."""
    out: dict[str, Any] = {"system": SYSTEM, "workload": workload, "concurrency": concurrency}
    for k in ("calls", "window_s", "inv_per_s", "p50_ms", "p90_ms", "p99_ms", "errors"):
        v = result.get(k)
        out[k] = round(v, 2) if isinstance(v, float) else v
    problems = list(result.get("problems", []))
    out["check"] = "FAIL: " + "; ".join(problems) if problems else "OK"
    if "start" in snaps and "end" in snaps:
        (t0, start), (t1, end) = snaps["start"], snaps["end"]
        cpu = {
            k: round(e.cpu_s - s.cpu_s, 2)
            for k in KINDS
            if (s := start.get(k)) is not None and (e := end.get(k)) is not None
        }
        out["cpu_window_s"] = round(t1 - t0, 2)
        out["cpu_s"] = cpu
        calls = result.get("invocations") or 0
        out["cpu_ms_per_inv"] = round(sum(cpu.values()) * 1000 / calls, 2) if calls else None
        out["rss_mb"] = {k: round(u.rss_bytes / 2**20) for k, u in end.items() if u}
    out["notes"] = result.get("notes", {})
    return out


def _num(v: Any, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, int) or (isinstance(v, float) and v >= 100):
        return f"{round(v):,}"
    return f"{v:.{digits}f}"


def table(rows: list[dict[str, Any]], title: str) -> Table:
    out = Table(title=title, title_justify="left", header_style="bold")
    for name in (
        "workload",
        "c",
        "calls",
        "inv/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "cpu restate",
        "cpu sdk",
        "cpu driver",
        "cpu ms/inv",
        "rss restate",
        "rss sdk",
        "check",
    ):
        out.add_column(
            name, justify="left" if name in ("workload", "check") else "right", overflow="fold"
        )
    for r in rows:
        cpu, rss = r.get("cpu_s", {}), r.get("rss_mb", {})
        out.add_row(
            r["workload"],
            str(r["concurrency"]),
            _num(r.get("calls")),
            _num(r.get("inv_per_s")),
            _num(r.get("p50_ms")),
            _num(r.get("p90_ms")),
            _num(r.get("p99_ms")),
            *(_num(cpu.get(k), 2) for k in KINDS),
            _num(r.get("cpu_ms_per_inv"), 2),
            _num(rss.get("restate")),
            _num(rss.get("sdk")),
            r["check"],
        )
    return out


def print_table(rows: list[dict[str, Any]], title: str, file: IO[str] | None = None) -> None:
    console(file).print(table(rows, title))


def json_line(r: dict[str, Any]) -> str:
    """``r`` as strict JSON (a percentile of no samples, NaN, becomes null)."""
    return json.dumps(_nan_to_none(r), default=str)


def _nan_to_none(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, dict):
        return {k: _nan_to_none(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_nan_to_none(x) for x in v]
    return v

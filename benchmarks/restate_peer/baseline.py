"""The peer's rows as the baseline of raystate's report (``python -m benchmarks --restate``):
they replace the figures hard-coded from the issue (``Workload.restate``), so the report's
ratios are to Restate measured in the same run on the same machine."""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, TypeVar

from benchmarks.restate_peer.install import VERSION

LABEL = f"Restate {VERSION} measured in this run on this machine, raw HTTP/1.1 client"
KEYS = ("inv_per_s", "p50_ms", "p90_ms", "p99_ms")


class HasBaseline(Protocol):
    """A workload (``benchmarks.workloads.Workload``, a frozen dataclass)."""

    @property
    def name(self) -> str: ...

    @property
    def restate(self) -> dict[int, dict[str, float]]: ...


W = TypeVar("W", bound=HasBaseline)


def figures(rows: list[dict[str, Any]]) -> dict[str, dict[int, dict[str, float]]]:
    """workload -> concurrency -> figures, of the cells whose check passed (a failed cell
    gives no baseline)."""
    out: dict[str, dict[int, dict[str, float]]] = {}
    for r in rows:
        if r.get("check") != "OK":
            continue
        cell = {k: float(r[k]) for k in KEYS if isinstance(r.get(k), int | float)}
        out.setdefault(r["workload"], {})[r["concurrency"]] = cell
    return out


def measured(workloads: list[W], rows: list[dict[str, Any]]) -> list[W]:
    """``workloads`` with the peer's figures as their baseline; a workload the peer did not
    run keeps the figures it has."""
    found = figures(rows)
    ran = {r["workload"] for r in rows}
    return [
        dataclasses.replace(w, restate=found.get(w.name, {}))  # type: ignore[type-var]
        if w.name in ran
        else w
        for w in workloads
    ]

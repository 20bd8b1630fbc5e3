"""Garbage-collector settings for the long-lived actors (hosts, journal, scheduler).

An actor process holds hundreds of thousands of long-lived objects (Ray's modules, a host's
per-key slots) and allocates many short-lived ones per call. With CPython's defaults every
700 allocations start a young collection and every few hundred of those a full one that walks
everything; with very many keys the full collections cost a host a large share of its time and
put long pauses in the tail latency (benchmarks keys100k, see docs/performance.md).
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000


def tune_gc() -> None:
    """Move what exists at actor start (imports, Ray's state) out of the collector's sight and
    collect young objects less often; cycles are still found, only less eagerly."""
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)

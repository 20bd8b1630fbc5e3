"""Garbage-collector settings for the long-lived actors (hosts, journal, scheduler).

An actor process holds hundreds of thousands of long-lived objects (Ray's modules, a host's
per-key slots) and allocates many short-lived ones per call. With CPython's defaults every
700 allocations start a young collection and every few hundred of those a full one that walks
everything; over 100,000 keys the full collections cost a host about a tenth of its time and
put ~180 ms pauses in the p99 (benchmarks keys100k, see the README's performance section).
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

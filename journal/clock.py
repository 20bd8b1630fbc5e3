"""The one wall clock of raystate: epoch milliseconds, as every record and view stores time.

Code that must be testable takes a ``clock`` parameter defaulting to ``now_ms``.
"""

from __future__ import annotations

import time


def now_ms() -> int:
    """Milliseconds since the epoch (wall clock: journaled times and timers' due times)."""
    return time.time_ns() // 1_000_000

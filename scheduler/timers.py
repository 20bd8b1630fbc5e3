"""TimerQueue: due times in a heap, with an injectable clock (no Ray, no I/O; unit-tested).

A timer is identified by its ``timer_id``; adding one twice keeps one entry, so a scheduler
that reloads timers from the journal after a restart and also hears about them from hosts
fires each once.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Generic, TypeVar

from journal.clock import now_ms

T = TypeVar("T")


class TimerQueue(Generic[T]):
    """Timers ordered by due time (epoch ms); ``pop_due`` hands out those whose time has come."""

    def __init__(self, clock: Callable[[], int] = now_ms) -> None:
        self.clock = clock
        self._heap: list[tuple[int, int, str]] = []
        self._items: dict[str, T] = {}
        self._counter = 0

    def __len__(self) -> int:
        return len(self._items)

    def add(self, timer_id: str, due_ms: int, item: T) -> bool:
        """Add a timer; False if one with this id is already pending."""
        if timer_id in self._items:
            return False
        self._items[timer_id] = item
        self._counter += 1
        heapq.heappush(self._heap, (due_ms, self._counter, timer_id))
        return True

    def next_due_ms(self) -> int | None:
        while self._heap and self._heap[0][2] not in self._items:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def pop_due(self, limit: int = 10_000) -> list[T]:
        """Remove and return the timers due now (never one whose time has not come)."""
        now = self.clock()
        due: list[T] = []
        while self._heap and len(due) < limit and self._heap[0][0] <= now:
            _, _, timer_id = heapq.heappop(self._heap)
            item = self._items.pop(timer_id, None)
            if item is not None:
                due.append(item)
        return due

    def discard(self, timer_id: str) -> None:
        self._items.pop(timer_id, None)

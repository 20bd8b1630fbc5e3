"""TimerQueue: ordering, never early, de-duplication by id (an injected clock, no sleeping)."""

from __future__ import annotations

from scheduler.timers import TimerQueue


class Clock:
    def __init__(self) -> None:
        self.now = 1_000

    def __call__(self) -> int:
        return self.now


def test_pops_only_due_timers_in_due_order() -> None:
    clock = Clock()
    q: TimerQueue[str] = TimerQueue(clock)
    q.add("c", 1_300, "c")
    q.add("a", 1_100, "a")
    q.add("b", 1_200, "b")
    assert q.pop_due() == []
    assert q.next_due_ms() == 1_100
    clock.now = 1_200
    assert q.pop_due() == ["a", "b"]
    clock.now = 1_299
    assert q.pop_due() == []
    clock.now = 5_000
    assert q.pop_due() == ["c"]
    assert len(q) == 0 and q.next_due_ms() is None


def test_same_id_is_kept_once() -> None:
    clock = Clock()
    q: TimerQueue[str] = TimerQueue(clock)
    assert q.add("t", 1_000, "first")
    assert not q.add("t", 900, "again")
    assert q.pop_due() == ["first"]
    assert q.pop_due() == []


def test_discard_and_limit() -> None:
    clock = Clock()
    q: TimerQueue[int] = TimerQueue(clock)
    for i in range(10):
        q.add(str(i), 1_000, i)
    q.discard("3")
    assert q.pop_due(limit=4) == [0, 1, 2, 4]
    assert q.pop_due() == [5, 6, 7, 8, 9]

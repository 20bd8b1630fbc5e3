"""The limiter's bookkeeping without Ray: room, acceptance order without overtaking, rate
windows, hosts that restart, and what a host says it holds."""

from __future__ import annotations

from datetime import timedelta

import pytest

from actors import DefinitionError, RateLimit, Service
from scheduler.limiter import Limiter, LimitSpec, Owner, Request

A, B = Owner("host:S:0", "a1"), Owner("host:S:1", "b1")
ONE = LimitSpec("S", concurrency=1)
TWO = LimitSpec("S", concurrency=2)
RATE = LimitSpec("R", rate=2, per_ms=1000)


class Clock:
    def __init__(self) -> None:
        self.t = 10_000

    def __call__(self) -> int:
        return self.t


def ask(lim: Limiter, inv: str, order: int, *limits: LimitSpec, owner: Owner = A) -> list[str]:
    assert lim.request(Request(inv, owner, order, limits))
    return [r.invocation_id for r in lim.pump()]


def test_concurrency_admits_in_acceptance_order():
    lim = Limiter()
    assert ask(lim, "i1", 1, TWO) == ["i1"]
    assert ask(lim, "i3", 3, TWO) == ["i3"]
    assert ask(lim, "i4", 4, TWO) == []
    assert ask(lim, "i2", 2, TWO) == []  # earlier, so it goes first when room comes
    lim.release("i1")
    assert [r.invocation_id for r in lim.pump()] == ["i2"]
    lim.release("i3")
    assert [r.invocation_id for r in lim.pump()] == ["i4"]
    assert lim.holding("S") == 2


def test_no_overtaking_on_a_shared_limit():
    """i2 waits for S and S/h (S/h is full); i3, under S only, does not overtake it on S
    (it would starve i2 whenever S/h frees while S is full); other limits go on."""
    lim = Limiter()
    handler = LimitSpec("S/h", concurrency=1)
    assert ask(lim, "i0", 0, handler) == ["i0"]
    assert ask(lim, "i2", 2, TWO, handler) == []
    assert ask(lim, "i3", 3, TWO) == []
    assert ask(lim, "i5", 5, RATE) == ["i5"]
    lim.release("i0")
    assert [r.invocation_id for r in lim.pump()] == ["i2", "i3"]


def test_asking_again_is_harmless():
    lim = Limiter()
    assert ask(lim, "i1", 1, ONE) == ["i1"]
    assert ask(lim, "i1", 1, ONE) == []
    assert lim.is_held("i1") and lim.holding("S") == 1
    assert ask(lim, "i2", 2, ONE) == [] and ask(lim, "i2", 2, ONE) == []
    assert lim.stats() == {"limits": 1, "held": 1, "waiting": 1}


def test_rate_window():
    clock = Clock()
    lim = Limiter(clock)
    assert ask(lim, "i1", 1, RATE) == ["i1"]
    assert ask(lim, "i2", 2, RATE) == ["i2"]
    assert ask(lim, "i3", 3, RATE) == []
    assert lim.next_room_ms() == clock.t + 1001
    clock.t += 1000
    assert lim.pump() == []  # an admission exactly a window ago still counts
    clock.t += 1
    assert [r.invocation_id for r in lim.pump()] == ["i3"]


def test_rate_seeded_from_the_journal():
    clock = Clock()
    lim = Limiter(clock)
    lim.seed(RATE, [clock.t - 500, clock.t - 100])
    assert ask(lim, "i1", 1, RATE) == []
    clock.t += 501
    assert [r.invocation_id for r in lim.pump()] == ["i1"]


def test_a_restarted_host_frees_what_it_held_and_its_zombie_is_refused():
    lim = Limiter()
    assert ask(lim, "i1", 1, ONE) == ["i1"]
    assert ask(lim, "i2", 2, ONE, owner=B) == []
    lim.hello(Owner(A.host, "a2"))
    assert [r.invocation_id for r in lim.pump()] == ["i2"]
    assert not lim.request(Request("i9", A, 9, (ONE,)))  # the old process of host A


def test_sync_adopts_unknown_slots_and_releases_forgotten_ones():
    lim = Limiter()
    lim.sync(A, [("i1", 1, (ONE,))])  # a limiter that restarted learns what A holds
    assert lim.is_held("i1")
    assert ask(lim, "i2", 2, ONE, owner=B) == []
    lim.sync(A, [], entering=["i7"])  # A holds i1 no more
    assert [r.invocation_id for r in lim.pump()] == ["i2"]


def test_sync_keeps_a_slot_whose_answer_is_on_its_way():
    lim = Limiter()
    assert ask(lim, "i1", 1, ONE) == ["i1"]
    lim.sync(A, [], entering=["i1"])
    assert lim.is_held("i1")


@pytest.mark.parametrize(
    "make",
    [
        lambda: Service("X", concurrency=0),
        lambda: Service("X", concurrency=True),
        lambda: Service("X", rate=5),
        lambda: Service("X").handler(concurrency=-1)(_h),
    ],
)
def test_bad_limits_are_refused_at_definition(make):
    with pytest.raises(DefinitionError):
        make()


@pytest.mark.parametrize("n, per", [(0, timedelta(seconds=1)), (5, timedelta(0)), (5, 1.0)])
def test_bad_rate_limits(n, per):
    with pytest.raises(ValueError):
        RateLimit(n, per=per)


async def _h(ctx) -> None:
    return None

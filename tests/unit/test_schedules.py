"""Schedules' pure logic (no Ray): cron ticks in a time zone across DST changes, intervals,
catch-up of missed ticks, overlap decisions, and every malformed definition refused."""

from __future__ import annotations

import datetime as dt
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest

from journal.kinds import Overlap
from scheduler.schedules import (
    Action,
    ScheduleError,
    Spec,
    check_catchup,
    check_id,
    check_overlap,
    decide,
    parse_spec,
    tick_key,
    tick_time_ms,
)

BERLIN = ZoneInfo("Europe/Berlin")


def ms(*args: int, tz: dt.tzinfo = dt.UTC) -> int:
    return round(dt.datetime(*args, tzinfo=tz).timestamp() * 1000)  # type: ignore[misc]


def local(at_ms: int, tz: dt.tzinfo = BERLIN) -> str:
    return dt.datetime.fromtimestamp(at_ms / 1000, tz).isoformat()


def ticks(spec: Spec, after_ms: int, n: int) -> list[int]:
    out = []
    for _ in range(n):
        after_ms = spec.next_after(after_ms)
        out.append(after_ms)
    return out


def test_cron_in_a_time_zone_keeps_local_time_across_dst() -> None:
    spec = parse_spec("0 3 * * *", None, "Europe/Berlin", 0)
    got = ticks(spec, ms(2026, 3, 27), 4)
    assert [local(t) for t in got] == [
        "2026-03-27T03:00:00+01:00",
        "2026-03-28T03:00:00+01:00",
        "2026-03-29T03:00:00+02:00",  # the spring change: 03:00 local is 01:00 UTC now
        "2026-03-30T03:00:00+02:00",
    ]
    assert got[2] - got[1] == 23 * 3_600_000, "the day of the spring change has 23 hours"


def test_cron_time_the_spring_change_skips_fires_once_after_the_gap() -> None:
    spec = parse_spec("30 2 * * *", None, "Europe/Berlin", 0)
    got = ticks(spec, ms(2026, 3, 28), 3)
    assert [local(t) for t in got] == [
        "2026-03-28T02:30:00+01:00",
        "2026-03-29T03:00:00+02:00",  # 02:30 does not exist that day
        "2026-03-30T02:30:00+02:00",
    ]


def test_cron_time_the_autumn_change_repeats_fires_once() -> None:
    spec = parse_spec("30 2 * * *", None, "Europe/Berlin", 0)
    got = ticks(spec, ms(2026, 10, 24), 3)
    assert [local(t) for t in got] == [
        "2026-10-24T02:30:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
    ]


def test_cron_ticks_are_strictly_after_and_seconds_are_supported() -> None:
    spec = parse_spec("*/10 * * * * *", None, "UTC", 0)  # cronsim: seconds come first
    at = ms(2026, 1, 1, 12, 0, 0)
    assert spec.next_after(at) == at + 10_000
    assert spec.next_after(at + 1) == at + 10_000
    assert spec.next_after(at - 1) == at


def test_every_ticks_at_multiples_after_its_anchor() -> None:
    spec = parse_spec(None, timedelta(seconds=30), "UTC", 1_000)
    assert spec.next_after(0) == 31_000
    assert spec.next_after(1_000) == 31_000
    assert spec.next_after(31_000) == 61_000
    assert spec.next_after(31_001) == 61_000
    assert parse_spec(None, 1.5, "UTC", 0).every_ms == 1_500, "seconds as a number"


def test_describe() -> None:
    assert parse_spec(None, timedelta(seconds=90), "UTC", 0).describe() == "@every 1m30s"
    assert parse_spec(None, timedelta(hours=25), "UTC", 0).describe() == "@every 1d1h"
    assert parse_spec(None, timedelta(milliseconds=1500), "UTC", 0).describe() == "@every 1.5s"
    assert parse_spec("0 3 * * *", None, "UTC", 0).describe() == "0 3 * * *"


def test_first_due_catches_up_only_within_the_window() -> None:
    spec = parse_spec(None, timedelta(seconds=1), "UTC", 0)
    now = 100_500
    assert spec.first_due(10_000, now, 0) == 101_000, "catchup 0: none of the missed ticks"
    assert spec.first_due(10_000, now, 3_000) == 98_000, "ticks at most 3 s old still run"
    assert spec.first_due(99_000, now, 60_000) == 100_000, "never before the cursor"
    assert spec.first_due(100_000, now, 60_000) == 101_000, "the cursor's tick was decided"


@pytest.mark.parametrize(
    ("overlap", "running", "buffered", "action"),
    [
        (Overlap.SKIP, False, False, Action.FIRE),
        (Overlap.SKIP, True, False, Action.SKIP),
        (Overlap.BUFFER_ONE, False, False, Action.FIRE),
        (Overlap.BUFFER_ONE, True, False, Action.BUFFER),
        (Overlap.BUFFER_ONE, True, True, Action.SKIP),
        (Overlap.ALLOW_ALL, True, False, Action.FIRE),
        (Overlap.ALLOW_ALL, True, True, Action.FIRE),
    ],
)
def test_overlap_decisions(overlap: Overlap, running: bool, buffered: bool, action: Action) -> None:
    assert decide(overlap, running, buffered) == action


def test_overlap_accepts_its_strings() -> None:
    assert check_overlap("buffer_one") is Overlap.BUFFER_ONE
    with pytest.raises(ScheduleError, match="overlap must be one of 'skip', 'buffer_one'"):
        check_overlap("queue")


@pytest.mark.parametrize(
    ("cron", "every", "tz", "message"),
    [
        ("0 3 * *", None, "UTC", "malformed cron expression"),
        ("61 * * * *", None, "UTC", "malformed cron expression"),
        ("0 0 30 2 *", None, "UTC", "0 0 30 2 \\*"),  # February 30th: never
        ("0 3 * * *", None, "Mars/Olympus", "unknown time zone"),
        ("0 3 * * *", None, "", "unknown time zone"),
        (None, timedelta(0), "UTC", "every must be positive"),
        (None, timedelta(seconds=-1), "UTC", "every must be positive"),
        (None, -5, "UTC", "every must be positive"),
        (None, "10s", "UTC", "every must be a timedelta"),
        ("0 3 * * *", timedelta(seconds=1), "UTC", "exactly one"),
        (None, None, "UTC", "exactly one"),
    ],
)
def test_bad_timing_is_refused(cron: object, every: object, tz: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        parse_spec(cron, every, tz, 0)  # type: ignore[arg-type]


def test_bad_ids_and_catchup_are_refused() -> None:
    for bad in ["", "  ", None, "a\nb", "x" * 201]:
        with pytest.raises(ScheduleError):
            check_id(bad)
    assert check_id("nightly:acme") == "nightly:acme"
    with pytest.raises(ScheduleError, match="catchup must not be negative"):
        check_catchup(timedelta(seconds=-1))
    assert check_catchup(timedelta(0)) == 0
    assert check_catchup(2.5) == 2_500


def test_tick_key_names_schedule_and_time() -> None:
    at = ms(2026, 12, 6, 3, 0, 0) + 123
    key = tick_key("a@b", at)
    assert key == "schedule:a@b@2026-12-06T03:00:00.123Z"
    assert tick_time_ms(key) == ("a@b", at)
    assert tick_time_ms("user-key") is None

"""Schedule timing: cron in a time zone across both daylight saving transitions, everySeconds, bad input."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from taskq.recurrence import BadRecurrence, Recurrence, check_cron

BERLIN = ZoneInfo("Europe/Berlin")


def ms(
    year: int,
    month: int,
    day: int,
    hour: int = 0,
    minute: int = 0,
    second: int = 0,
    *,
    tz: ZoneInfo = BERLIN,
    fold: int = 0,
) -> int:
    return int(datetime(year, month, day, hour, minute, second, tzinfo=tz, fold=fold).timestamp() * 1000)


def utc(value: int | None) -> str:
    assert value is not None, "no occurrence"
    return datetime.fromtimestamp(value / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def daily_0230() -> Recurrence:
    return Recurrence(cron="30 2 * * *", every_ms=None, timezone="Europe/Berlin", anchor_ms=0)


def occurrences(rec: Recurrence, start: int, n: int) -> list[str]:
    out, at = [], start
    for _ in range(n):
        at = rec.after(at)
        out.append(utc(at))
    return out


def test_daily_0230_berlin_spring_forward_fires_once_right_after_the_gap() -> None:
    """2026-03-29 02:00 CET jumps to 03:00 CEST: 02:30 does not exist that day; it fires at 03:00 CEST."""
    fires = occurrences(daily_0230(), ms(2026, 3, 27, 12, 0), 4)
    assert fires == [
        "2026-03-28 01:30",  # 02:30 CET (UTC+1)
        "2026-03-29 01:00",  # 03:00 CEST, the first moment after the gap
        "2026-03-30 00:30",  # 02:30 CEST (UTC+2)
        "2026-03-31 00:30",
    ]


def test_daily_0230_berlin_fall_back_fires_once_in_the_repeated_hour() -> None:
    """2026-10-25 03:00 CEST falls back to 02:00 CET: 02:30 happens twice; it fires at the first only."""
    fires = occurrences(daily_0230(), ms(2026, 10, 23, 12, 0), 4)
    assert fires == [
        "2026-10-24 00:30",  # 02:30 CEST
        "2026-10-25 00:30",  # 02:30 CEST, the first of the two 02:30s
        "2026-10-26 01:30",  # 02:30 CET
        "2026-10-27 01:30",
    ]
    second_0230 = ms(2026, 10, 25, 2, 30, fold=1)
    assert utc(second_0230) == "2026-10-25 01:30"
    assert utc(daily_0230().after(ms(2026, 10, 25, 2, 30))) == "2026-10-26 01:30"  # nothing at the repeat


def test_latest_occurrence_due_across_the_transitions() -> None:
    rec = daily_0230()
    assert utc(rec.latest(ms(2026, 3, 29, 1, 59))) == "2026-03-28 01:30"  # 01:59 CET, before the gap
    assert utc(rec.latest(ms(2026, 3, 29, 3, 0))) == "2026-03-29 01:00"  # 03:00 CEST
    assert utc(rec.latest(ms(2026, 10, 25, 2, 45, fold=1))) == "2026-10-25 00:30"


def test_hourly_expressions_keep_their_pace_through_the_repeated_hour() -> None:
    rec = Recurrence(cron="*/30 * * * *", every_ms=None, timezone="Europe/Berlin", anchor_ms=0)
    fires = occurrences(rec, ms(2026, 10, 25, 1, 45), 5)
    assert fires == ["2026-10-25 00:00", "2026-10-25 00:30", "2026-10-25 01:00", "2026-10-25 01:30",
                     "2026-10-25 02:00"]  # fmt: skip


def test_every_seconds_counts_from_its_anchor_whatever_the_clocks_say() -> None:
    anchor = ms(2026, 3, 29, 1, 59, 59)
    rec = Recurrence(cron=None, every_ms=2000, timezone="Europe/Berlin", anchor_ms=anchor)
    assert rec.after(anchor) == anchor + 2000
    assert rec.after(anchor + 2000) == anchor + 4000
    assert rec.after(anchor + 2001) == anchor + 4000
    assert rec.latest(anchor + 7999) == anchor + 6000
    assert rec.latest(anchor - 1) is None


@pytest.mark.parametrize("expr", ["", "61 * * * *", "* * *", "@daily", "0 0 30 2 *"])
def test_bad_cron_expressions_are_refused(expr: str) -> None:
    with pytest.raises(BadRecurrence, match="invalid cron expression"):
        check_cron(expr, "UTC")


def test_unknown_time_zones_are_refused() -> None:
    with pytest.raises(BadRecurrence, match="unknown time zone"):
        check_cron("0 * * * *", "Mars/Olympus")
    with pytest.raises(BadRecurrence, match="unknown time zone"):
        check_cron("0 * * * *", "../etc/passwd")

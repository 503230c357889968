"""When a recurring schedule fires: a cron expression in a time zone (cronsim, zoneinfo), or every N seconds.

Daylight saving time follows cron as Debian runs it (cronsim's rules), in the schedule's time zone:

- a time that does not exist that day (spring forward) fires once, at the first moment after the gap:
  ``30 2 * * *`` in Europe/Berlin fires at 03:00 CEST on the last Sunday of March;
- a time that happens twice (fall back) fires once, at its first occurrence: ``30 2 * * *`` fires at
  02:30 CEST on the last Sunday of October, not again at 02:30 CET an hour later;
- expressions that run every hour or more often (``*/30 * * * *``, ``0 * * * *``) keep their pace
  through both: every wall-clock match fires, the repeated hour included.

``everySeconds`` ignores the time zone: it fires every N seconds from the moment the schedule was made
(or last re-timed), whatever the clocks say.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError


class BadRecurrence(ValueError):
    """A cron expression or a time zone that cannot be used; the message says why."""


def zone(name: str) -> ZoneInfo:
    """The time zone of an IANA name (Europe/Berlin, UTC); BadRecurrence if unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadRecurrence(f"unknown time zone {name!r}: use an IANA name such as Europe/Berlin") from None


def check_cron(expr: str, timezone: str) -> None:
    """BadRecurrence unless the expression parses and has a next occurrence."""
    try:
        next(CronSim(expr, datetime.now(zone(timezone))))
    except (CronSimError, StopIteration) as exc:
        raise BadRecurrence(f"invalid cron expression {expr!r}: {exc or 'it never fires'}") from None


@dataclass(frozen=True, slots=True)
class Recurrence:
    """One schedule's timing: ``cron`` in ``timezone``, or ``every_ms`` counted from ``anchor_ms``."""

    cron: str | None
    every_ms: int | None
    timezone: str
    anchor_ms: int

    def after(self, ms: int) -> int:
        """The first occurrence strictly after ``ms`` (epoch milliseconds)."""
        if self.every_ms is not None:
            steps = max(0, (ms - self.anchor_ms) // self.every_ms + 1)
            return self.anchor_ms + steps * self.every_ms
        assert self.cron is not None
        start = datetime.fromtimestamp(ms / 1000, zone(self.timezone))
        return _ms(next(CronSim(self.cron, start)))

    def latest(self, ms: int) -> int | None:
        """The last occurrence at or before ``ms``, or None when there is none (before the anchor)."""
        if self.every_ms is not None:
            if ms < self.anchor_ms:
                return None
            return self.anchor_ms + (ms - self.anchor_ms) // self.every_ms * self.every_ms
        assert self.cron is not None
        start = datetime.fromtimestamp((ms + 1) / 1000, zone(self.timezone))
        try:
            return _ms(next(CronSim(self.cron, start, reverse=True)))
        except StopIteration:
            return None


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)

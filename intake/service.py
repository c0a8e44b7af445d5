"""The service level: ``due_at``, when the first contact is due (docs/intake-rules.md).

- ``Elapsed``: real time after the submission, around the clock. Across a DST change the
  due instant's local clock time moves (72 h after Saturday 10:00 EDT is Tuesday 09:00 EST).
- ``BusinessDays``: business time passes only inside the calendar's [open, close) on its
  business weekdays that are not holidays, read in the intake's own time zone (a zone, not
  the event's offset: only a zone knows a future instant's offset). ``due_at`` is the
  earliest instant at which business time since the submission reaches the amount: Mon
  10:00 -> Tue 10:00; Mon 07:00 -> Mon 17:00; Mon 17:00 -> Tue 17:00; Fri 16:00 -> Mon
  16:00; Fri 18:00 or Sat 11:00 -> Mon 17:00 (one business day, 08:00-17:00, Mon-Fri).

Arithmetic is done on UTC instants (Python subtracts two datetimes of one ZoneInfo by their
wall clocks). A business interval is measured in real time; a local open or close that a
DST change skips or repeats is taken at the offset in force before the change (fold 0).
Pure: no clock; the time zone data is the pinned tzdata package's.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from intake.rules import BusinessCalendar, Elapsed, IntakeRules, Route

_UTC = dt.UTC
# The furthest a search for business time looks ahead: a calendar with at least one
# business weekday reaches any amount the rules allow long before (holidays are dates).
_SEARCH_DAYS = 3 * 366


def _instant(day: dt.date, at: dt.time, zone: ZoneInfo) -> dt.datetime:
    """The UTC instant of a local date and time of day in ``zone`` (fold 0)."""
    return dt.datetime.combine(day, at, tzinfo=zone).astimezone(_UTC)


def _aware(when: dt.datetime, name: str) -> None:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")


def add_business_time(
    start: dt.datetime, amount: dt.timedelta, calendar: BusinessCalendar, zone: ZoneInfo
) -> dt.datetime:
    """The earliest instant at which ``amount`` of business time has passed since
    ``start`` (returned in ``zone``)."""
    _aware(start, "start")
    if amount <= dt.timedelta(0):
        raise ValueError("amount must be positive")
    begin_at = start.astimezone(_UTC)
    remaining = amount
    day = start.astimezone(zone).date()
    for _ in range(_SEARCH_DAYS):
        if calendar.is_business_day(day):
            opens = _instant(day, calendar.open, zone)
            closes = _instant(day, calendar.close, zone)
            begin = max(opens, begin_at)
            if begin < closes:
                available = closes - begin
                if available >= remaining:
                    return (begin + remaining).astimezone(zone)
                remaining -= available
        day += dt.timedelta(days=1)
    raise ValueError(f"the calendar has no business time within {_SEARCH_DAYS} days")


def due_at(
    submitted_at: dt.datetime, route: Route, timezone: str, rules: IntakeRules
) -> dt.datetime:
    """When the first contact of an intake submitted at ``submitted_at`` (an instant) on
    ``route`` is due, in the intake's ``timezone``."""
    _aware(submitted_at, "submitted_at")
    zone = ZoneInfo(timezone)
    level = rules.service_levels[route]
    if isinstance(level, Elapsed):
        return (submitted_at.astimezone(_UTC) + level.duration).astimezone(zone)
    amount = level.days * rules.calendar.day_length
    return add_business_time(submitted_at, amount, rules.calendar, zone)

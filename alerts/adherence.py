"""Adherence (pure): completed vs prescribed exercise sessions per patient-local date.

Definitions (design/alert-rules.md, events.md; the choices where they are silent are marked):
- A completion counts on its patient-local date (``occurred_at`` in its own offset) and only
  if it belongs to an episode (the one it names, else the one active on that date), like
  billing data days.
- Completed sessions on a date = distinct ``session_id`` values + 1 if the date has any
  completion without a ``session_id`` (those all form one session). *Choice:* a session_id
  seen on several dates counts once, on the date of its earliest completion (by instant), so
  a sitting across midnight is one session and arrival order does not matter.
- Prescribed per day = ``sessions_per_week`` in force that day / 7 (0 outside an episode).
  Prescribed over the trailing window = the sum of the daily values, i.e. exactly
  ``sessions_per_week`` for a full 7-day window with one program (the rule's definition).
  *Choice:* a window straddling a program.updated is prorated day by day, and a window that
  starts before the episode counts only the episode's days.
- adherence_7d on date d = min(1, completed in d-6..d / prescribed in d-6..d); undefined
  (None, empty in CSV) when nothing is prescribed.
- A paused program (``alerts.pauses``, set on the book's episodes) counts neither sessions
  nor prescription on its paused days.

All inputs are sets/dicts keyed by event_id, so late, duplicate and out-of-order events give
the same numbers. Arithmetic uses Fraction so thresholds compare exactly (3.5/7 == 50%).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction

from schemas.episodes import EpisodeBook
from schemas.events import ExerciseCompleted

_ONE_DAY = dt.timedelta(days=1)
_ONE = Fraction(1)


@dataclass(frozen=True, slots=True)
class Completion:
    """One ``exercise.completed``, reduced to what adherence needs (a plain record: one is
    made per completion in the worker's per-event path, from an event that passed its
    contract or a stored state; ``occurred_at`` is aware)."""

    occurred_at: dt.datetime
    session_id: str | None = None
    episode_id: str | None = None

    @property
    def local_date(self) -> dt.date:
        return self.occurred_at.date()

    @classmethod
    def of(cls, event: ExerciseCompleted) -> Completion:
        return cls(event.occurred_at, event.session_id, event.episode_id)


def sessions_by_day(completions: Mapping[str, Completion], book: EpisodeBook) -> dict[dt.date, int]:
    """Completed sessions per patient-local date (only dates inside an episode)."""
    first_seen: dict[str, tuple[dt.datetime, dt.date]] = {}
    anonymous_days: set[dt.date] = set()
    counted: dict[tuple[str | None, dt.date], bool] = {}  # a session's exercises share these
    for c in completions.values():
        day = c.local_date
        where = (c.episode_id, day)
        inside = counted.get(where)
        if inside is None:
            episode = book.resolve(c.episode_id, day)
            inside = counted[where] = episode is not None and not episode.paused_on(day)
        if not inside:
            continue
        if c.session_id is None:
            anonymous_days.add(day)
            continue
        key = (c.occurred_at, day)  # earliest instant wins; the date breaks instant ties
        prev = first_seen.get(c.session_id)
        if prev is None or key < prev:
            first_seen[c.session_id] = key
    counts: dict[dt.date, int] = {day: 1 for day in anonymous_days}
    for _, day in first_seen.values():
        counts[day] = counts.get(day, 0) + 1
    return counts


def weekly_on(book: EpisodeBook, day: dt.date) -> int:
    """The sessions_per_week in force on one day (0: no episode, or its program paused)."""
    episode = book.resolve(None, day)
    if episode is None or episode.paused_on(day):
        return 0
    return episode.sessions_per_week_on(day)


def prescribed_on(book: EpisodeBook, day: dt.date) -> Fraction:
    """Sessions prescribed for one day: sessions_per_week in force / 7 (none while the
    program is paused)."""
    return sevenths(weekly_on(book, day))


_SEVENTHS = tuple(Fraction(n, 7) for n in range(29))  # the contract's 0-28 sessions a week


def sevenths(weekly: int) -> Fraction:
    """``weekly`` / 7 (a day's prescription), exact."""
    return _SEVENTHS[weekly] if 0 <= weekly < len(_SEVENTHS) else Fraction(weekly, 7)


def window_days(day: dt.date, length: int = 7) -> list[dt.date]:
    """The trailing window ending on ``day`` (inclusive), oldest first."""
    return [day - dt.timedelta(days=i) for i in range(length - 1, -1, -1)]


def adherence_on(
    counts: Mapping[dt.date, int], book: EpisodeBook, day: dt.date, length: int = 7
) -> Fraction | None:
    """Trailing ``length``-day adherence ending on ``day``, capped at 1; None if nothing
    was prescribed in the window."""
    return adherence_series(counts, book, day, day, length)[day]


def adherence_series(
    counts: Mapping[dt.date, int],
    book: EpisodeBook,
    first: dt.date,
    last: dt.date,
    length: int = 7,
    weekly: Mapping[dt.date, int] | None = None,
) -> dict[dt.date, Fraction | None]:
    """``adherence_on`` of every day from ``first`` to ``last``: one sliding window, each
    day's prescription and sessions added once and taken off once. Exact: the window's
    prescription is its days' sessions_per_week summed, over 7 (``weekly``: those already
    resolved, by day)."""
    days = window_days(first, length)[:-1] + list(_date_range(first, last))
    known = weekly or {}
    prescribed = [w if (w := known.get(d)) is not None else weekly_on(book, d) for d in days]
    completed = [counts.get(d, 0) for d in days]
    out: dict[dt.date, Fraction | None] = {}
    p_sum, c_sum = sum(prescribed[: length - 1]), sum(completed[: length - 1])
    for i in range(length - 1, len(days)):
        p_sum += prescribed[i]
        c_sum += completed[i]
        if p_sum == 0:
            out[days[i]] = None
        else:  # capped at 1
            out[days[i]] = _ONE if 7 * c_sum >= p_sum else Fraction(7 * c_sum, p_sum)
        p_sum -= prescribed[i - length + 1]
        c_sum -= completed[i - length + 1]
    return out


@dataclass(frozen=True)
class AdherenceRow:
    patient_id: str
    date: dt.date
    prescribed: Fraction
    completed: int
    adherence_7d: Fraction | None

    def csv(self) -> str:
        ratio = "" if self.adherence_7d is None else f"{float(self.adherence_7d):.4f}"
        return (
            f"{self.patient_id},{self.date.isoformat()},{float(self.prescribed):.4f},"
            f"{self.completed},{ratio}"
        )


CSV_HEADER = "patient_id,date,prescribed,completed,adherence_7d"


def daily_rows(
    patient_id: str,
    completions: Mapping[str, Completion],
    book: EpisodeBook,
    last_day: dt.date | None,
    length: int = 7,
    *,
    first: dt.date | None = None,
    until: dt.date | None = None,
) -> list[AdherenceRow]:
    """One row per date covered by an episode, from its start to its end date (or, for an
    open episode, to ``last_day``; an open episode yields no rows if ``last_day`` is None),
    only those in [``first``, ``until``] when given (and only those are computed)."""
    days = covered_days(book, last_day, first, until)
    return rows_on(patient_id, completions, book, days, length)


def covered_days(
    book: EpisodeBook,
    last_day: dt.date | None,
    first: dt.date | None = None,
    until: dt.date | None = None,
) -> list[dt.date]:
    """The dates covered by an episode (open ones up to ``last_day``), oldest first, only
    those in [``first``, ``until``]: each episode's range is clipped before it is walked."""
    days: set[dt.date] = set()
    for ep in book.episodes.values():
        end = ep.end_date if ep.end_date is not None else last_day
        if end is None:
            continue
        start = ep.start_date if first is None else max(ep.start_date, first)
        if until is not None:
            end = min(end, until)
        days.update(_date_range(start, end))
    return sorted(days)


def last_covered(book: EpisodeBook, last_day: dt.date | None) -> dt.date | None:
    """The latest date ``covered_days`` would give (None: no rows)."""
    ends = [
        end
        for ep in book.episodes.values()
        if (end := ep.end_date if ep.end_date is not None else last_day) is not None
        and end >= ep.start_date
    ]
    return max(ends, default=None)


def rows_on(
    patient_id: str,
    completions: Mapping[str, Completion],
    book: EpisodeBook,
    days: Iterable[dt.date],
    length: int = 7,
) -> list[AdherenceRow]:
    """The adherence rows of the given dates (as ``daily_rows`` computes each); each date's
    prescription is resolved once."""
    counts = sessions_by_day(completions, book)
    days = list(days)
    weekly = {d: weekly_on(book, d) for d in days}
    series = adherence_series(counts, book, min(days), max(days), length, weekly) if days else {}
    return [
        AdherenceRow(
            patient_id=patient_id,
            date=day,
            prescribed=sevenths(weekly[day]),
            completed=counts.get(day, 0),
            adherence_7d=series[day],
        )
        for day in days
    ]


def _date_range(first: dt.date, last: dt.date) -> Iterable[dt.date]:
    day = first
    while day <= last:
        yield day
        day += _ONE_DAY

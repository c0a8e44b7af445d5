"""Paused programs (pure): the pauses of each episode, derived from its holds.

docs/alert-rules.md, "Paused programs" (the pathway design's Decisions): a fall
(``symptom.reported`` with ``fall: true``) or a ``program.paused`` pauses the episode's
program from its patient-local date when it is not paused (reason ``fall`` /
``clinician``); a ``program.resumed`` resumes it from its date when it is paused. A pause
covers its date up to, not including, the resume date. The holds are taken in
``occurred_at``, then ``event_id`` order, never arrival order, so a replay (or the same
events in another order) gives the same pauses. A second fall while paused is not a new
pause; a hold belongs to the episode it names if that covers its date, else to the one
active on its date (``EpisodeBook.resolve``), and to none outside every episode (a fall
before the episode pauses nothing).

The pauses are set on the book's episodes (``Episode.pauses``), where adherence
(``alerts.adherence``: neither sessions nor prescription on paused days) and the
time-driven rules (``alerts.rules``: ``adherence_low`` and ``inactivity`` suspended,
inactivity's L at least the resume date) read them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Literal

from schemas.episodes import EpisodeBook, ProgramPause
from schemas.events import Event, ProgramPaused, ProgramResumed, SymptomReported

HoldKind = Literal["fall", "paused", "resumed"]
# the stored form's one-letter codes
HOLD_CODES: dict[HoldKind, str] = {"fall": "f", "paused": "p", "resumed": "r"}
HOLD_KINDS: dict[str, HoldKind] = {v: k for k, v in HOLD_CODES.items()}
# the event types a hold can come from (a symptom.reported only with ``fall: true``)
HOLD_EVENT_TYPES: tuple[str, ...] = ("program.paused", "program.resumed", "symptom.reported")


@dataclass(frozen=True, slots=True)
class Hold:
    """What a pause needs of a fall, a ``program.paused`` or a ``program.resumed``."""

    occurred_at: dt.datetime
    event_id: str
    kind: HoldKind
    episode_id: str | None

    @property
    def local_date(self) -> dt.date:
        return self.occurred_at.date()

    @property
    def order(self) -> tuple[dt.datetime, str]:
        return (self.occurred_at, self.event_id)


def hold_of(event: Event) -> Hold | None:
    """The hold an event is, or None (only falls, pauses and resumes are)."""
    if isinstance(event, SymptomReported):
        if not event.fall:
            return None
        return Hold(event.occurred_at, event.event_id, "fall", event.episode_id)
    if isinstance(event, ProgramPaused):
        return Hold(event.occurred_at, event.event_id, "paused", event.episode_id)
    if isinstance(event, ProgramResumed):
        return Hold(event.occurred_at, event.event_id, "resumed", event.episode_id)
    return None


def _by_episode(book: EpisodeBook, holds: Iterable[Hold]) -> dict[str, list[Hold]]:
    """Each episode's holds in (occurred_at, event_id) order; holds of no episode dropped."""
    out: dict[str, list[Hold]] = {}
    for h in holds:
        ep = book.resolve(h.episode_id, h.local_date)
        if ep is not None:
            out.setdefault(ep.episode_id, []).append(h)
    for hs in out.values():
        hs.sort(key=lambda h: h.order)
    return out


def _fold(hs: list[Hold]) -> list[tuple[Hold, Hold | None]]:
    """(the hold that began it, the resume that ended it or None) per pause, oldest first."""
    out: list[tuple[Hold, Hold | None]] = []
    current: Hold | None = None
    for h in hs:
        if h.kind == "resumed":
            if current is not None:
                out.append((current, h))
                current = None
        elif current is None:
            current = h
    if current is not None:
        out.append((current, None))
    return out


def fold_pauses(book: EpisodeBook, holds: Iterable[Hold]) -> dict[str, tuple[ProgramPause, ...]]:
    """The pauses of each episode that has any, oldest first."""
    out: dict[str, tuple[ProgramPause, ...]] = {}
    for episode_id, hs in _by_episode(book, holds).items():
        pauses = tuple(
            ProgramPause(
                start=began.local_date,
                end=None if ended is None else ended.local_date,
                reason="fall" if began.kind == "fall" else "clinician",
                event_id=began.event_id,
                resumed_by=None if ended is None else ended.event_id,
            )
            for began, ended in _fold(hs)
        )
        if pauses:
            out[episode_id] = pauses
    return out


def with_pauses(book: EpisodeBook, holds: Iterable[Hold]) -> EpisodeBook:
    """The book with each episode's pauses set (the book itself when there are none)."""
    pauses = fold_pauses(book, holds)
    if not pauses:
        return book
    return replace(
        book,
        episodes={
            k: replace(e, pauses=pauses.get(k, ())) if k in pauses else e
            for k, e in book.episodes.items()
        },
    )


def compact_holds(holds: Mapping[str, Hold], book: EpisodeBook, cut: dt.date) -> dict[str, Hold]:
    """The holds still worth keeping, given that no rule looks at a day before ``cut`` any
    more (``alerts.rules.prune``): those dated from ``cut`` on, and of the older ones, per
    episode, only what the pauses from ``cut`` on and inactivity's L depend on: the hold
    that began a pause still running at the end of them, else the pair that began and
    ended the latest pause (its resume date). Older holds of no known episode go, as the
    patient data of those days does. At most two old holds per episode: bounded."""
    old = [h for h in holds.values() if h.local_date < cut]
    if not old:
        return dict(holds)
    kept = {k: h for k, h in holds.items() if h.local_date >= cut}
    for hs in _by_episode(book, old).values():
        pauses = _fold(hs)
        if not pauses:
            continue
        began, ended = pauses[-1]
        kept[began.event_id] = began
        if ended is not None:
            kept[ended.event_id] = ended
    return kept

"""Episodes of care, folded from episode.* and program.updated events (pure).

Shared by adherence, alerts and billing: which episode an event belongs to, and which
program is in force on a patient-local date. State is plain values so that any arrival
order of the same events yields the same book (except the 409-style rejection of a second
concurrent episode.started, which is decided in arrival order by definition).
"""

from __future__ import annotations

import datetime as dt
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Annotated

from pydantic import Field

from schemas.events import (
    BillingInfo,
    ClinicianRole,
    EpisodeEnded,
    EpisodeStarted,
    Event,
    ProgramUpdated,
    type_of,
)

# The events that shape episodes, as one validated type (kept by alerts and billing states).
EpisodeEvent = Annotated[
    EpisodeStarted | ProgramUpdated | EpisodeEnded, Field(discriminator="type")
]
EPISODE_EVENT_TYPES: tuple[str, ...] = tuple(
    type_of(m) for m in typing.get_args(typing.get_args(EpisodeEvent)[0])
)


@dataclass(frozen=True)
class ProgramPause:
    """One pause of an episode's program: it covers ``start`` up to, not including,
    ``end`` (the resume date; None while it lasts). Derived by ``alerts.pauses``."""

    start: dt.date
    end: dt.date | None
    reason: str  # "fall" | "clinician"
    event_id: str  # the fall or program.paused that began it
    resumed_by: str | None = None  # the program.resumed that ended it

    def covers(self, day: dt.date) -> bool:
        return self.start <= day and (self.end is None or day < self.end)


@dataclass(frozen=True)
class Episode:
    patient_id: str
    episode_id: str
    clinician_id: str
    clinician_role: ClinicianRole
    timezone: str
    start_date: dt.date
    started_at: dt.datetime
    billing: BillingInfo
    setup_education_completed: bool
    sessions_per_week: int
    end_date: dt.date | None = None
    # (effective local date, sessions_per_week), sorted by date then arrival
    program_changes: tuple[tuple[dt.date, int], ...] = ()
    # the program's pauses, oldest first (set by alerts.pauses; empty in a plain fold)
    pauses: tuple[ProgramPause, ...] = ()

    def covers(self, day: dt.date) -> bool:
        return self.start_date <= day and (self.end_date is None or day <= self.end_date)

    def paused_on(self, day: dt.date) -> bool:
        """Whether the program is paused on this patient-local date."""
        return any(p.covers(day) for p in self.pauses)

    def resumed_by(self, day: dt.date) -> dt.date | None:
        """The latest resume date on or before ``day`` (None: no pause ended by then)."""
        return max((p.end for p in self.pauses if p.end is not None and p.end <= day), default=None)

    def sessions_per_week_on(self, day: dt.date) -> int:
        spw = self.sessions_per_week
        for eff, value in self.program_changes:
            if eff <= day:
                spw = value
            else:
                break
        return spw


class EpisodeConflict(ValueError):
    """A second episode.started while the patient has an active episode (409-style)."""


@dataclass
class EpisodeBook:
    """All episodes of one patient, keyed by episode_id."""

    episodes: dict[str, Episode] = field(default_factory=dict)
    # program.updated / episode.ended seen before their episode.started
    _pending: list[ProgramUpdated | EpisodeEnded] = field(default_factory=list)

    def active(self) -> Episode | None:
        open_eps = [e for e in self.episodes.values() if e.end_date is None]
        return max(open_eps, key=lambda e: e.start_date) if open_eps else None

    def apply(self, event: Event) -> None:
        """Fold one episode-shaping event; raises EpisodeConflict for a second active episode."""
        if isinstance(event, EpisodeStarted):
            if event.episode_id in self.episodes:
                return  # re-sent start under a new event_id: the first one stands
            current = self.active()
            if current is not None:
                raise EpisodeConflict(
                    f"patient already has an active episode {current.episode_id}; "
                    "end it before starting another"
                )
            self.episodes[event.episode_id] = Episode(
                patient_id=event.patient_id,
                episode_id=event.episode_id,
                clinician_id=event.clinician_id,
                clinician_role=event.clinician_role,
                timezone=event.timezone,
                start_date=event.local_date,
                started_at=event.occurred_at,
                billing=event.billing,
                setup_education_completed=event.setup_education_completed,
                sessions_per_week=event.program.sessions_per_week,
            )
            pending, self._pending = self._pending, []
            for p in pending:
                self.apply(p)
        elif isinstance(event, ProgramUpdated):
            ep = self.episodes.get(event.episode_id)
            if ep is None:
                self._pending.append(event)
                return
            changes = sorted(
                ep.program_changes + ((event.local_date, event.program.sessions_per_week),),
                key=lambda c: c[0],
            )
            self.episodes[ep.episode_id] = replace(ep, program_changes=tuple(changes))
        elif isinstance(event, EpisodeEnded):
            ep = self.episodes.get(event.episode_id)
            if ep is None:
                self._pending.append(event)
                return
            end = max(event.local_date, ep.start_date)
            if ep.end_date is None or end < ep.end_date:
                self.episodes[ep.episode_id] = replace(ep, end_date=end)

    def resolve(self, episode_id: str | None, day: dt.date) -> Episode | None:
        """The episode an event belongs to: the one it names, else the one active on its date.

        Only dates from the episode's start to its end (inclusive) count; an event outside
        that range belongs to no episode.
        """
        if episode_id is not None:
            ep = self.episodes.get(episode_id)
            return ep if ep is not None and ep.covers(day) else None
        candidates = [e for e in self.episodes.values() if e.covers(day)]
        return max(candidates, key=lambda e: e.start_date) if candidates else None


# Within one instant an end is folded before a start, so "ended at T, next started at T"
# is accepted whatever order the two arrived in.
_FOLD_RANK = {"episode.ended": 0, "episode.started": 1, "program.updated": 2}


def fold_book(
    events: Iterable[EpisodeStarted | ProgramUpdated | EpisodeEnded],
) -> tuple[EpisodeBook, dict[str, str]]:
    """The episodes of one patient folded in event-time order (never arrival order), and
    event_id -> reason for each episode.started refused as a second active episode."""
    book = EpisodeBook()
    rejected: dict[str, str] = {}
    for ev in sorted(events, key=lambda e: (e.occurred_at, _FOLD_RANK[e.type], e.event_id)):
        try:
            book.apply(ev)
        except EpisodeConflict as exc:
            rejected[ev.event_id] = str(exc)
    return book, rejected

"""Per-patient billing state: the one billing reducer over contract events (pure).

``PatientBillingState.apply`` is the only fold of events into billing facts: the offline
evaluator folds a JSONL file with it (``fold_events``), the worker's ledger rows are the
events it takes as new (``billing.ledger.ledger_rows``), and the ledger's rows load back
into the same objects (``billing.ledger.states_from_rows``). Everything is stored as sets
or dicts keyed by ``event_id`` and resolved to episodes only when claims are computed, so
duplicates count once and any arrival order of the same events yields the same claims.
Episode events are kept as billing sees them: without the gateway's stamps
(``strip_received``), so a fold of stamped events equals a fold of the same events unstamped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import cast

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from schemas.episodes import EpisodeBook, EpisodeEvent, fold_book
from schemas.events import (
    ClinicianRole,
    ClinicianTimeLogged,
    EpisodeEnded,
    EpisodeStarted,
    Event,
    PatientKey,
    ProgramUpdated,
    is_patient_data,
)


def strip_received(event: Event) -> Event:
    """The event as billing keeps it: without the gateway's stamps (``received_at``, and
    ``org_id``, which the ledger keeps in its own column and the state in its key)."""
    if event.received_at is None and event.org_id is None:
        return event
    return event.model_copy(update={"received_at": None, "org_id": None})


# An event's identity in its patient's billing state: a data day is (date, episode named),
# a time log or an episode event is its event_id.
BillingKey = tuple[str, object, object]


def billing_key(event: Event) -> BillingKey | None:
    """What makes ``event`` new to its patient's billing state, or None if billing ignores
    it: ``("day", local_date, episode_id or None)`` for patient data, ``("time", event_id,
    None)`` for a time log, ``("episode", event_id, None)`` for an episode event.
    ``PatientBillingState.apply`` takes an event whose key the state has not seen, and the
    worker's ledger rows are the same events (``billing.ledger.ledger_rows``)."""
    if is_patient_data(event):
        return ("day", event.local_date, getattr(event, "episode_id", None))
    if isinstance(event, ClinicianTimeLogged):
        return ("time", event.event_id, None)
    if isinstance(event, (EpisodeStarted, ProgramUpdated, EpisodeEnded)):
        return ("episode", event.event_id, None)
    return None


class TimeLog(BaseModel):
    """One ``clinician.time_logged``, reduced to what billing needs."""

    model_config = ConfigDict(frozen=True)

    event_id: str
    local_date: dt.date
    occurred_at: dt.datetime
    minutes: int
    clinician_role: ClinicianRole
    interactive: bool
    episode_id: str | None = None
    supersedes: str | None = None  # the event_id of the log this one corrects


class PatientBillingState(BaseModel):
    """Billing facts of one patient: data dates, time logs and episode events.

    ``data_dates`` holds (patient-local date, episode_id named by the event or None):
    being a set, ten events on one date or a re-sent event add nothing. Time logs are
    keyed by ``event_id`` because their minutes add up (a correction names the log it
    supersedes, and ``counted_time_logs`` leaves the superseded one out). The
    ``EpisodeBook`` is derived by folding the episode events in event-time order, never
    arrival order.
    """

    model_config = ConfigDict(extra="forbid")

    patient_id: str
    data_dates: set[tuple[dt.date, str | None]] = Field(default_factory=set)
    time_logs: dict[str, TimeLog] = Field(default_factory=dict)
    episode_events: dict[str, EpisodeEvent] = Field(default_factory=dict)

    _book: EpisodeBook | None = PrivateAttr(default=None)
    _rejected: dict[str, str] = PrivateAttr(default_factory=dict)

    def apply(self, event: Event) -> bool:
        """Fold one event; True if the state changed (False for a duplicate or an
        event billing ignores, e.g. ``program.updated`` already seen)."""
        if event.patient_id != self.patient_id:
            raise ValueError(f"event {event.event_id} is for another patient than this state's")
        key = billing_key(event)
        if key is None:
            return False
        if key[0] == "day":
            day = (event.local_date, getattr(event, "episode_id", None))
            if day in self.data_dates:
                return False
            self.data_dates.add(day)
            return True
        if event.event_id in (self.time_logs if key[0] == "time" else self.episode_events):
            return False
        if isinstance(event, ClinicianTimeLogged):
            self.time_logs[event.event_id] = TimeLog(
                event_id=event.event_id,
                local_date=event.local_date,
                occurred_at=event.occurred_at,
                minutes=event.minutes,
                clinician_role=event.clinician_role,
                interactive=event.interactive,
                episode_id=event.episode_id,
                supersedes=event.supersedes,
            )
            return True
        if isinstance(event, (EpisodeStarted, ProgramUpdated, EpisodeEnded)):
            self.episode_events[event.event_id] = cast(EpisodeEvent, strip_received(event))
            self._book = None
            return True
        return False

    def counted_time_logs(self) -> list[TimeLog]:
        """The time logs the month counts: every log but those another log of this patient
        supersedes (a correction replaces its original; a correction of a correction
        replaces both). Resolved over the set, so a correction that arrives before its
        original, or alone, gives the same answer; a log naming itself supersedes nothing."""
        replaced = {
            log.supersedes
            for log in self.time_logs.values()
            if log.supersedes is not None and log.supersedes != log.event_id
        }
        return [log for eid, log in self.time_logs.items() if eid not in replaced]

    @property
    def book(self) -> EpisodeBook:
        """The patient's episodes, folded in (occurred_at, end-before-start, event_id)
        order so that the result does not depend on arrival order."""
        if self._book is None:
            book, rejected = fold_book(self.episode_events.values())
            self._book, self._rejected = book, rejected
        return self._book

    @property
    def rejected_episode_events(self) -> dict[str, str]:
        """event_id -> reason for episode.started events the book refused (409-style)."""
        _ = self.book
        return dict(self._rejected)


def fold_events(
    events: Iterable[Event], states: dict[PatientKey, PatientBillingState] | None = None
) -> dict[PatientKey, PatientBillingState]:
    """Fold events into per-patient states by (organisation, patient_id) (new dict unless
    ``states`` is given): one patient_id in two organisations is two patients. What the
    ledger gives back for the same events (``billing.ledger.states_from_rows``)."""
    out = states if states is not None else {}
    for event in events:
        key = event.patient_key
        state = out.get(key)
        if state is None:
            state = out[key] = PatientBillingState(patient_id=event.patient_id)
        state.apply(event)
    return out

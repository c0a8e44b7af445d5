"""Per-patient state of the adherence and alert engine (plain, JSON-serialisable).

The streaming worker keeps ``state_to_dict(state)`` in a Faust table keyed by patient_id
and rebuilds it with ``state_from_dict``; the offline evaluators fold a JSONL file into the
same objects. Facts are stored keyed by event_id (sets, not counters) so duplicates add
nothing; the alert bookkeeping (``alerts``, ``day_cursor``) is what makes rules idempotent.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, PrivateAttr

from alerts.adherence import Completion
from alerts.models import Alert
from schemas.episodes import EpisodeBook, EpisodeEvent, fold_book


class DataRecord(BaseModel):
    """One patient-data event (exercise, pain, symptom): for inactivity."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    occurred_at: AwareDatetime
    episode_id: str | None = None

    @property
    def local_date(self) -> dt.date:
        return self.occurred_at.date()


class PainRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    occurred_at: AwareDatetime
    score: int

    @property
    def local_date(self) -> dt.date:
        return self.occurred_at.date()


class PatientState(BaseModel):
    """Everything the rules need about one patient. Treat as a value: the engine's
    functions return a new state and never modify the one they are given."""

    model_config = ConfigDict(extra="forbid")

    patient_id: str
    seen_event_ids: set[str] = Field(default_factory=set)
    episode_events: dict[str, EpisodeEvent] = Field(default_factory=dict)
    data: dict[str, DataRecord] = Field(default_factory=dict)
    pain: dict[str, PainRecord] = Field(default_factory=dict)
    completions: dict[str, Completion] = Field(default_factory=dict)
    # Every alert ever fired for the patient, by id, in firing order.
    alerts: dict[str, Alert] = Field(default_factory=dict)
    # Per episode: the last local date whose start (00:00 in the episode's time zone) the
    # timer has evaluated. Makes on_tick idempotent and lets it catch up missed days.
    day_cursor: dict[str, dt.date] = Field(default_factory=dict)

    _book: EpisodeBook | None = PrivateAttr(default=None)
    _refused: dict[str, str] = PrivateAttr(default_factory=dict)

    @property
    def book(self) -> EpisodeBook:
        """The patient's episodes, folded in event-time order (cached, derived)."""
        if self._book is None:
            self._book, self._refused = fold_book(self.episode_events.values())
        return self._book

    @property
    def refused_episode_starts(self) -> dict[str, str]:
        """event_id -> reason, for episode.started events refused as a second active
        episode (they shape nothing: adherence, alerts and billing all ignore them)."""
        _ = self.book
        return self._refused

    def __eq__(self, other: object) -> bool:
        # Value equality of the stored facts; the cached book is derived, not state.
        if not isinstance(other, PatientState):
            return NotImplemented
        return self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]  # mutable container, as BaseModel

    def invalidate_book(self) -> None:
        self._book = None

    def copy_for_update(self) -> PatientState:
        """A copy whose containers may be changed without touching ``self``.

        Containers are copied, their items shared: every item is a frozen model (records,
        alerts, events) or an immutable value, so a shallow copy per container is enough
        and keeps an event O(size of state) in cheap dict copies, not a deep copy.
        """
        new = self.model_copy(
            update={
                "seen_event_ids": set(self.seen_event_ids),
                "episode_events": dict(self.episode_events),
                "data": dict(self.data),
                "pain": dict(self.pain),
                "completions": dict(self.completions),
                "alerts": dict(self.alerts),
                "day_cursor": dict(self.day_cursor),
            }
        )
        new._book, new._refused = self._book, self._refused  # shared until episode events change (invalidate_book)
        return new


def new_state(patient_id: str) -> PatientState:
    return PatientState(patient_id=patient_id)


def state_to_dict(state: PatientState) -> dict[str, Any]:
    """A JSON-able dict (for the Faust table); round-trips with ``state_from_dict``."""
    return state.model_dump(mode="json")


def state_from_dict(data: dict[str, Any]) -> PatientState:
    return PatientState.model_validate(data)

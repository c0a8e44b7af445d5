"""The intake engine: a reducer over events, state per (patient_id, intake_id), and a
``result(state, as_of, rules)`` (one engine, two drivers: the worker will keep the states
of a patient in its batch transaction; ``rtm intake evaluate`` folds a file with the same
functions). Pure: no I/O, no clock; "now" is an argument.

What counts (docs/intake-rules.md, Duplicates, amendments, arrival order):
- ``intake.submitted``: the version in force is the one with the latest ``occurred_at``
  instant; on equal instants the larger ``event_id`` (by code point), so arrival order
  never decides. Older versions change nothing.
- ``intake.contacted`` and ``episode.started`` with ``intake_id``: contacts; the first
  contact is the earliest ``occurred_at`` (any channel, also one before the submission).
  They may arrive before their intake: the state keeps them and counts them once the
  intake arrives; a state without an intake has no result.
- A repeated ``event_id`` is ignored, the first copy counts: ``fold`` skips event ids it
  has seen (as the worker's events table does), and a state ignores an event id it holds.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict

from intake.routing import route_intake
from intake.rules import DEFAULT_RULES, IntakeRules, Route
from intake.sbst import SbstScore
from intake.service import due_at as service_due_at
from schemas.events import EpisodeStarted, Event, IntakeContacted, IntakeSubmitted

IntakeKey = tuple[str, str]  # (patient_id, intake_id)
IntakeEvent = IntakeSubmitted | IntakeContacted | EpisodeStarted


class IntakeState(BaseModel):
    """What the rules need of one intake: the version in force and the first contact."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    patient_id: str
    intake_id: str
    submitted: IntakeSubmitted | None = None  # the version in force
    first_contact_at: dt.datetime | None = None
    first_contact_event_id: str | None = None
    event_ids: frozenset[str] = frozenset()  # every event folded in (versions, contacts)

    @property
    def key(self) -> IntakeKey:
        return (self.patient_id, self.intake_id)


class Assessment(BaseModel):
    """The routing of one intake version: route, reasons, STarT Back, due time, and the
    rule-set version it was made under."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    route: Route
    reasons: tuple[str, ...]
    sbst: SbstScore | None
    submitted_at: dt.datetime  # the version's occurred_at, in the intake's zone
    due_at: dt.datetime  # in the intake's zone
    rules_version: str


class IntakeResult(BaseModel):
    """An intake as of a time: its assessment, its first contact, whether it is breached."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    patient_id: str
    intake_id: str
    event_id: str  # of the version in force
    timezone: str
    route: Route
    reasons: tuple[str, ...]
    sbst: SbstScore | None
    submitted_at: dt.datetime
    due_at: dt.datetime
    first_contact_at: dt.datetime | None
    breached: bool
    rules_version: str

    def output(self) -> dict[str, object]:
        """The offline command's object: times as RFC 3339 in the intake zone's offset
        at that instant (no rules version: it is the rule set the command was given)."""
        return {
            "intake_id": self.intake_id,
            "patient_id": self.patient_id,
            "route": self.route,
            "reasons": list(self.reasons),
            "sbst": self.sbst.model_dump() if self.sbst is not None else None,
            "due_at": self.due_at.isoformat(),
            "first_contact_at": (
                self.first_contact_at.isoformat() if self.first_contact_at is not None else None
            ),
            "breached": self.breached,
        }


def intake_key(event: Event) -> IntakeKey | None:
    """The intake an event belongs to, or None for an event the intake rules ignore."""
    if isinstance(event, IntakeSubmitted | IntakeContacted):
        return (event.patient_id, event.intake_id)
    if isinstance(event, EpisodeStarted) and event.intake_id is not None:
        return (event.patient_id, event.intake_id)
    return None


def new_state(key: IntakeKey) -> IntakeState:
    return IntakeState(patient_id=key[0], intake_id=key[1])


def _wins(new: IntakeSubmitted, current: IntakeSubmitted | None) -> bool:
    """Whether ``new`` replaces the version in force: a later instant, or on an equal
    instant a larger event_id (aware datetimes compare as instants)."""
    if current is None:
        return True
    return (new.occurred_at, new.event_id) > (current.occurred_at, current.event_id)


def apply(state: IntakeState, event: Event) -> IntakeState:
    """Fold one event into its intake's state (a new state; events of other intakes or
    types are refused with ValueError, so a driver cannot mix states up)."""
    if intake_key(event) != state.key:
        raise ValueError(f"event {event.event_id} does not belong to this intake")
    if event.event_id in state.event_ids:
        return state  # a repeated event_id: the first copy counts
    update: dict[str, object] = {"event_ids": state.event_ids | {event.event_id}}
    if isinstance(event, IntakeSubmitted):
        if _wins(event, state.submitted):
            update["submitted"] = event
    else:
        first = state.first_contact_at
        if first is None or (event.occurred_at, event.event_id) < (
            first,
            state.first_contact_event_id or "",
        ):
            update["first_contact_at"] = event.occurred_at
            update["first_contact_event_id"] = event.event_id
    return state.model_copy(update=update)


def fold(
    events: Iterable[Event], states: dict[IntakeKey, IntakeState] | None = None
) -> dict[IntakeKey, IntakeState]:
    """Fold events (any order) into states per intake, each event_id once."""
    out = dict(states) if states else {}
    seen: set[str] = set()
    for event in events:
        if event.event_id in seen:
            continue
        seen.add(event.event_id)
        key = intake_key(event)
        if key is None:
            continue
        out[key] = apply(out.get(key) or new_state(key), event)
    return out


def assess(intake: IntakeSubmitted, rules: IntakeRules = DEFAULT_RULES) -> Assessment:
    """Route one intake version and set its clock."""
    routing = route_intake(intake, rules)
    return Assessment(
        route=routing.route,
        reasons=routing.reasons,
        sbst=routing.sbst,
        submitted_at=intake.occurred_at.astimezone(ZoneInfo(intake.timezone)),
        due_at=service_due_at(intake.occurred_at, routing.route, intake.timezone, rules),
        rules_version=rules.version,
    )


def result(
    state: IntakeState, as_of: dt.datetime, rules: IntakeRules = DEFAULT_RULES
) -> IntakeResult | None:
    """The intake as of ``as_of`` ("now" for an intake without a contact), or None while
    only contacts are known. Breached: (first contact, or as_of if none) > due_at; a
    contact exactly at due_at is on time."""
    if as_of.tzinfo is None or as_of.utcoffset() is None:
        raise ValueError("as_of must be timezone-aware")
    intake = state.submitted
    if intake is None:
        return None
    a = assess(intake, rules)
    zone = ZoneInfo(intake.timezone)
    first = state.first_contact_at
    breached = (first if first is not None else as_of) > a.due_at
    return IntakeResult(
        patient_id=state.patient_id,
        intake_id=state.intake_id,
        event_id=intake.event_id,
        timezone=intake.timezone,
        route=a.route,
        reasons=a.reasons,
        sbst=a.sbst,
        submitted_at=a.submitted_at,
        due_at=a.due_at,
        first_contact_at=first.astimezone(zone) if first is not None else None,
        breached=breached,
        rules_version=a.rules_version,
    )


def results(
    states: Iterable[IntakeState], as_of: dt.datetime, rules: IntakeRules = DEFAULT_RULES
) -> list[IntakeResult]:
    """The results of every intake that arrived, sorted by intake_id, then patient_id."""
    out = [r for s in states if (r := result(s, as_of, rules)) is not None]
    return sorted(out, key=lambda r: (r.intake_id, r.patient_id))

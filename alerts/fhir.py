"""Clinical data as FHIR R4 (4.0.1), pure: pain reports, exercise sessions and the scores of
valid assessments (outcomes.fhir, issue 19) as ``Observation`` resources in a ``searchset``
Bundle (issue 12 part 7).

Profile: R4 core ``Observation`` (no implementation guide: US Core's screening-assessment
profile is not among the bundled R4 definitions a receiver can validate offline).

- **Pain** (``pain.reported``): LOINC 72514-3 "Pain severity - 0-10 verbal numeric rating
  [Score] - Reported", category ``survey``, ``valueInteger`` (the NPRS is an ordinal score
  0-10 without a unit, so an integer, not a Quantity with a made-up ``{score}`` unit);
  the context (rest, activity, exercise) as a component with a text code.
- **Exercise session** (``exercise.completed``): an ``Observation`` too, not a
  ``Procedure``: the patient reports having done a home exercise, nobody performed or
  observed a procedure on them, and an Observation is what the app's other reports are,
  so one ``GET /fhir/Observation`` search returns a patient's data. Category ``activity``
  (observation-category: "bodily activity that enhances or maintains physical fitness"),
  code LOINC 73985-4 "Exercise activity", the exercise as ``valueCodeableConcept`` (the
  program's exercise id, text only), duration as a component (LOINC 55411-3 "Exercise
  duration", UCUM ``s``), sets and reps as components with text codes.

Both: ``status`` final, ``effectiveDateTime`` = ``occurred_at`` in the producer's own
offset (in UTC when the offset is beyond FHIR's +-14:00: ``outcomes.fhir.fhir_time``),
``issued`` = when the gateway received it, ``subject`` = ``Patient/<patient_id>`` (the
pseudonymous id; an id outside FHIR's id grammar is referenced by identifier instead),
``performer`` = the same patient (self-reported), ``identifier`` = the event id. Resource
ids are UUIDv5 of the event id, so a re-export names the same resources.
Nothing here reads the clock or the database.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from typing import Any

from outcomes.fhir import (
    EVENT_ID_SYSTEM,
    LOINC,
    OBSERVATION_CATEGORY,
    UCUM,
    fhir_time,
    patient_reference,
    resource_id,
    score_observation,
    searchset,
)
from schemas.events import AssessmentCompleted, Event, ExerciseCompleted, PainReported

EXERCISE_ID_SYSTEM = "urn:rtm:exercise-id"
PAIN_CODE = ("72514-3", "Pain severity - 0-10 verbal numeric rating [Score] - Reported")
EXERCISE_CODE = ("73985-4", "Exercise activity")
EXERCISE_DURATION_CODE = ("55411-3", "Exercise duration")
# an assessment's Observation is its score (outcomes.fhir), for a valid form only
CLINICAL_TYPES = ("pain.reported", "exercise.completed", "assessment.completed")


def _concept(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def _category(code: str, display: str) -> list[dict[str, Any]]:
    return [{"coding": [{"system": OBSERVATION_CATEGORY, "code": code, "display": display}]}]


def _common(event: PainReported | ExerciseCompleted) -> dict[str, Any]:
    out: dict[str, Any] = {
        "resourceType": "Observation",
        "id": resource_id(event.event_id),
        "identifier": [{"system": EVENT_ID_SYSTEM, "value": event.event_id}],
        "status": "final",
    }
    return out


def _timing(event: PainReported | ExerciseCompleted) -> dict[str, Any]:
    patient = patient_reference(event.patient_id)
    out: dict[str, Any] = {
        "subject": patient,
        "effectiveDateTime": fhir_time(event.occurred_at),
    }
    if event.received_at is not None:
        out["issued"] = fhir_time(event.received_at)
    out["performer"] = [patient]  # self-reported: the patient did and reported it
    return out


def pain_observation(event: PainReported) -> dict[str, Any]:
    obs = {
        **_common(event),
        "category": _category("survey", "Survey"),
        "code": _concept(LOINC, *PAIN_CODE),
        **_timing(event),
        "valueInteger": event.score,
    }
    if event.context is not None:
        obs["component"] = [{"code": {"text": "Pain context"}, "valueString": event.context}]
    return obs


def exercise_observation(event: ExerciseCompleted) -> dict[str, Any]:
    obs: dict[str, Any] = {
        **_common(event),
        "category": _category("activity", "Activity"),
        "code": _concept(LOINC, *EXERCISE_CODE),
        **_timing(event),
        "valueCodeableConcept": {
            "coding": [{"system": EXERCISE_ID_SYSTEM, "code": event.exercise_id}],
            "text": event.exercise_id,
        },
    }
    components: list[dict[str, Any]] = []
    if event.duration_s is not None:
        components.append(
            {
                "code": _concept(LOINC, *EXERCISE_DURATION_CODE),
                "valueQuantity": {
                    "value": event.duration_s,
                    "unit": "s",
                    "system": UCUM,
                    "code": "s",
                },
            }
        )
    for name, value in (("Sets", event.sets), ("Repetitions", event.reps)):
        if value is not None:
            components.append({"code": {"text": name}, "valueInteger": value})
    if components:
        obs["component"] = components
    return obs


def observation(event: Event) -> dict[str, Any] | None:
    """The Observation of a pain report, an exercise session or a valid assessment (its
    score); None for other types and invalid forms."""
    if isinstance(event, PainReported):
        return pain_observation(event)
    if isinstance(event, ExerciseCompleted):
        return exercise_observation(event)
    if isinstance(event, AssessmentCompleted):
        return score_observation(event)
    return None


def observation_bundle(
    events: Iterable[Event], timestamp: dt.datetime, self_url: str | None = None
) -> dict[str, Any]:
    """A ``searchset`` Bundle of the events' Observations, in event time order (then
    event id), each entry a ``match``; ``total`` counts them (no ``entry`` when none)."""
    chosen = sorted(
        (e for e in events if e.type in CLINICAL_TYPES),
        key=lambda e: (e.occurred_at, e.event_id),
    )
    found = (observation(e) for e in chosen)
    return searchset((o for o in found if o is not None), timestamp, self_url)


# --- search parameters ------------------------------------------------------------------------

_DATE_PARAM = re.compile(r"(eq|ge|le|gt|lt)?([0-9]{4}-[0-9]{2}-[0-9]{2})")


def date_range(values: Iterable[str]) -> tuple[dt.date | None, dt.date | None]:
    """The inclusive [from, to] of patient-local dates that FHIR ``date`` search values
    (``ge2026-10-01``, ``le2026-10-31``, ``gt``, ``lt``, ``eq`` or none) select, at day
    precision. Raises ValueError naming a value it cannot take (another prefix, a time)."""
    frm: dt.date | None = None
    to: dt.date | None = None
    for v in values:
        m = _DATE_PARAM.fullmatch(v)
        if m is None:
            raise ValueError(
                f"date {v!r}: expected [eq|ge|le|gt|lt]YYYY-MM-DD (a patient-local date)"
            )
        prefix, text = m.group(1) or "eq", m.group(2)
        lo = hi = None
        try:
            day = dt.date.fromisoformat(text)
            if prefix in ("eq", "ge"):
                lo = day
            if prefix in ("eq", "le"):
                hi = day
            if prefix == "gt":
                lo = day + dt.timedelta(days=1)
            if prefix == "lt":
                hi = day - dt.timedelta(days=1)
        except (ValueError, OverflowError) as exc:
            raise ValueError(f"date {v!r}: {exc}") from None
        if lo is not None:
            frm = lo if frm is None else max(frm, lo)
        if hi is not None:
            to = hi if to is None else min(to, hi)
    return frm, to

"""The producer contract: every bad-input rule of events.md, and the good shapes."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from schemas.events import (
    EpisodeStarted,
    FieldError,
    PainReported,
    json_schema,
    parse_event_json,
    validate_event,
)

EXAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "examples"


def base(**over: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "event_id": "e-1",
        "schema_version": 1,
        "type": "pain.reported",
        "patient_id": "p-001",
        "occurred_at": "2026-11-03T23:30:00-05:00",
        "episode_id": "ep-001",
        "score": 6,
    }
    ev.update(over)
    return {k: v for k, v in ev.items() if v is not None}


def episode(**over: Any) -> dict[str, Any]:
    ev = base(type="episode.started", score=None, clinician_id="c-01", clinician_role="PT",
              timezone="America/Chicago",
              program={"sessions_per_week": 5, "exercise_ids": ["bridge"]},
              billing={"rendering_npi": "1234567893", "billing_npi": "1234567893",
                       "payer": "medicare", "member_id": "1EG4TE5MK73",
                       "diagnosis_codes": ["M54.50"], "place_of_service": "11"},
              setup_education_completed=True)
    ev.update(over)
    return ev


def fields(result: object) -> set[str]:
    assert isinstance(result, list), f"expected errors, got {result!r}"
    return {e.field for e in result if isinstance(e, FieldError)}


def test_local_date_is_the_producers_own_offset() -> None:
    ev = validate_event(base())
    assert isinstance(ev, PainReported)
    assert ev.local_date == dt.date(2026, 11, 3)  # 2026-11-04 in UTC
    assert ev.occurred_at.utcoffset() == dt.timedelta(hours=-5)


def test_round_trip_keeps_the_offset() -> None:
    ev = validate_event(base())
    assert not isinstance(ev, list)
    again = parse_event_json(ev.model_dump_json())
    assert again == ev and again.occurred_at.isoformat() == "2026-11-03T23:30:00-05:00"


@pytest.mark.parametrize(
    "override, field",
    [
        ({"occurred_at": "2026-11-03T23:30:00"}, "occurred_at"),  # naive
        ({"occurred_at": "yesterday"}, "occurred_at"),
        ({"score": 11}, "score"),
        ({"score": -1}, "score"),
        ({"score": "6"}, "score"),  # strings are not numbers
        ({"score": 6.5}, "score"),
        ({"type": "pain.guessed"}, "type"),
        ({"type": None}, "type"),
        ({"event_id": "has space"}, "event_id"),
        ({"event_id": "x" * 129}, "event_id"),
        ({"event_id": ""}, "event_id"),
        ({"patient_id": "jane.doe@example.com"}, "patient_id"),
        ({"patient_id": "p" * 65}, "patient_id"),
        ({"schema_version": 2}, "schema_version"),
        ({"schema_version": "1"}, "schema_version"),
        ({"context": "sleep"}, "context"),
        ({"mood": "ok"}, "mood"),  # unknown fields are refused, not silently dropped
        ({"recorded_at": "2026-11-03T23:30:00"}, "recorded_at"),
        ({"source": {"kind": "fax", "id": "x"}}, "source.kind"),
    ],
)
def test_bad_pain_report_names_the_field(override: dict[str, Any], field: str) -> None:
    assert field in fields(validate_event(base(**override)))


def test_unknown_schema_version_message_is_clear() -> None:
    errs = validate_event(base(schema_version=2))
    assert isinstance(errs, list)
    assert "unsupported schema_version 2" in errs[0].message


@pytest.mark.parametrize(
    "override, field",
    [
        ({"clinician_role": "RN"}, "clinician_role"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"program": {"sessions_per_week": -1}}, "program.sessions_per_week"),
        ({"episode_id": None}, "episode_id"),
        ({"billing": {"rendering_npi": "123"}}, "billing.rendering_npi"),
    ],
)
def test_bad_episode_started(override: dict[str, Any], field: str) -> None:
    assert field in fields(validate_event(episode(**override)))


@pytest.mark.parametrize(
    "event, field",
    [
        ({"type": "exercise.completed", "exercise_id": "bridge", "sets": 51}, "sets"),
        ({"type": "exercise.completed", "exercise_id": "bridge", "reps": 1001}, "reps"),
        ({"type": "exercise.completed", "exercise_id": "bridge", "duration_s": 14401}, "duration_s"),
        ({"type": "exercise.completed", "exercise_id": "bridge", "sets": -1}, "sets"),
        ({"type": "exercise.completed"}, "exercise_id"),
        ({"type": "symptom.reported", "red_flags": ["headache"]}, "red_flags.0"),
        ({"type": "symptom.reported", "fall": "yes"}, "fall"),
        ({"type": "clinician.time_logged", "clinician_id": "c", "clinician_role": "PT",
          "minutes": 0, "activity": "call", "interactive": True}, "minutes"),
        ({"type": "clinician.time_logged", "clinician_id": "c", "clinician_role": "PT",
          "minutes": 241, "activity": "call", "interactive": True}, "minutes"),
        ({"type": "clinician.time_logged", "clinician_id": "c", "clinician_role": "PT",
          "minutes": 10, "activity": "email", "interactive": True}, "activity"),
        ({"type": "program.updated", "episode_id": None,
          "program": {"sessions_per_week": 3}}, "episode_id"),
        ({"type": "episode.ended", "episode_id": None}, "episode_id"),
    ],
)
def test_bad_other_types(event: dict[str, Any], field: str) -> None:
    assert field in fields(validate_event(base(score=None, **event)))


def test_not_an_object() -> None:
    assert isinstance(validate_event(["x"]), list)


@pytest.mark.parametrize(
    "event",
    [
        {"type": "symptom.reported"},  # an empty report is a valid check-in
        {"type": "exercise.completed", "exercise_id": "bridge", "episode_id": None},
        {"type": "clinician.time_logged", "clinician_id": "c-01", "clinician_role": "PTA",
         "minutes": 240, "activity": "video", "interactive": True},
        {"type": "episode.ended", "reason": "discharged"},
        {"type": "program.updated", "program": {"sessions_per_week": 3, "exercise_ids": []}},
        {"occurred_at": "2026-11-03T10:00:00Z"},
    ],
)
def test_valid_shapes(event: dict[str, Any]) -> None:
    result = validate_event(base(score=None if "type" in event else 6, **event))
    assert not isinstance(result, list), result


def test_episode_started_from_contract() -> None:
    assert isinstance(validate_event(episode()), EpisodeStarted)


def test_shared_examples_validate() -> None:
    for name in ("billing-example.jsonl", "alerts-example.jsonl"):
        for line in (EXAMPLES / name).read_text().splitlines():
            assert not isinstance(validate_event(json.loads(line)), list)


def test_json_schema_covers_every_type() -> None:
    schema = json_schema()
    text = json.dumps(schema)
    for t in ("episode.started", "program.updated", "exercise.completed", "pain.reported",
              "symptom.reported", "clinician.time_logged", "episode.ended"):
        assert t in text

"""The producer contract: every bad-input rule of events.md, and the good shapes."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from schemas.events import (
    TIMESTAMP_PATTERN,
    EpisodeStarted,
    FieldError,
    PainReported,
    errors_of,
    future_skew_error,
    json_schema,
    parse_event_json,
    published_pattern,
    validate_event,
)
from streams.settings import Settings

EXAMPLES = (
    Path(__file__).resolve().parents[1] / "fixtures" / "examples"
)  # copied from the design examples


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
    ev = base(
        type="episode.started",
        score=None,
        clinician_id="c-01",
        clinician_role="PT",
        timezone="America/Chicago",
        program={"sessions_per_week": 5, "exercise_ids": ["bridge"]},
        billing={
            "rendering_npi": "1234567893",
            "billing_npi": "1234567893",
            "payer": "medicare",
            "member_id": "1EG4TE5MK73",
            "diagnosis_codes": ["M54.50"],
            "place_of_service": "11",
        },
        setup_education_completed=True,
    )
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
        (
            {"type": "exercise.completed", "exercise_id": "bridge", "duration_s": 14401},
            "duration_s",
        ),
        ({"type": "exercise.completed", "exercise_id": "bridge", "sets": -1}, "sets"),
        ({"type": "exercise.completed"}, "exercise_id"),
        ({"type": "symptom.reported", "red_flags": ["headache"]}, "red_flags.0"),
        ({"type": "symptom.reported", "fall": "yes"}, "fall"),
        (
            {
                "type": "clinician.time_logged",
                "clinician_id": "c",
                "clinician_role": "PT",
                "minutes": 0,
                "activity": "call",
                "interactive": True,
            },
            "minutes",
        ),
        (
            {
                "type": "clinician.time_logged",
                "clinician_id": "c",
                "clinician_role": "PT",
                "minutes": 241,
                "activity": "call",
                "interactive": True,
            },
            "minutes",
        ),
        (
            {
                "type": "clinician.time_logged",
                "clinician_id": "c",
                "clinician_role": "PT",
                "minutes": 10,
                "activity": "email",
                "interactive": True,
            },
            "activity",
        ),
        (
            {"type": "program.updated", "episode_id": None, "program": {"sessions_per_week": 3}},
            "episode_id",
        ),
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
        {
            "type": "clinician.time_logged",
            "clinician_id": "c-01",
            "clinician_role": "PTA",
            "minutes": 240,
            "activity": "video",
            "interactive": True,
        },
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
    for t in (
        "episode.started",
        "program.updated",
        "exercise.completed",
        "pain.reported",
        "symptom.reported",
        "clinician.time_logged",
        "episode.ended",
    ):
        assert t in text


# --- Content the database or the rules cannot take (issue 8) -------------------------------


def both_paths(obj: dict[str, Any]) -> tuple[object, object]:
    """validate_event (orjson-decoded dict, validate_python) and parse_event_json
    (validate_json) on the same event: errors as lists of FieldError, or the event."""
    raw = orjson.dumps(obj)
    by_python = validate_event(orjson.loads(raw))
    try:
        by_json: object = parse_event_json(raw)
    except ValidationError as exc:
        by_json = errors_of(exc)
    return by_python, by_json


def rejected_naming(obj: dict[str, Any], field: str) -> list[str]:
    """Both paths refuse ``obj`` with the same errors, one naming ``field``; its messages."""
    by_python, by_json = both_paths(obj)
    assert field in fields(by_python), by_python
    assert by_json == by_python
    assert isinstance(by_python, list)
    return [e.message for e in by_python if e.field == field]


def accepted(obj: dict[str, Any]) -> None:
    by_python, by_json = both_paths(obj)
    assert not isinstance(by_python, list), by_python
    assert by_json == by_python


def full_events() -> list[dict[str, Any]]:
    """One event of every type with every optional field filled (string leaves everywhere)."""
    env = {
        "source": {"kind": "app", "id": "ios-app 4.2"},
        "recorded_at": "2026-11-03T23:31:00-05:00",
        "received_at": "2026-11-04T04:31:02Z",
    }
    program = {"sessions_per_week": 5, "exercise_ids": ["bridge", "bird-dog"]}
    return [
        episode(**env),
        base(type="program.updated", score=None, program=program, **env),
        base(
            type="exercise.completed",
            score=None,
            exercise_id="bridge",
            session_id="s-17",
            sets=3,
            reps=10,
            duration_s=240,
            **env,
        ),
        base(context="activity", **env),
        base(
            type="symptom.reported",
            score=None,
            red_flags=["fever", "major_trauma"],
            fall=True,
            **env,
        ),
        base(
            type="clinician.time_logged",
            score=None,
            clinician_id="c-01",
            clinician_role="PT",
            minutes=12,
            activity="call",
            interactive=True,
            **env,
        ),
        base(type="episode.ended", score=None, reason="discharged", **env),
    ]


def string_leaves(value: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    if isinstance(value, str):
        return [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in string_leaves(v, (*path, k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in string_leaves(v, (*path, i))]
    return []


def with_nul(obj: Any, path: tuple[str | int, ...]) -> Any:
    """A deep copy of ``obj`` with a NUL in the middle of the string at ``path``."""
    copy = orjson.loads(orjson.dumps(obj))
    *head, last = path
    parent = copy
    for p in head:
        parent = parent[p]
    text = parent[last]
    parent[last] = text[: len(text) // 2] + "\u0000" + text[len(text) // 2 :]
    return copy


def test_full_events_are_valid() -> None:
    for ev in full_events():
        accepted(ev)


NUL_CASES = [
    (ev["type"], path)
    for ev in full_events()
    for path in string_leaves(ev)
    if path != ("type",)  # the discriminator: refused as an unknown type, naming "type"
]


@pytest.mark.parametrize(
    "etype, path", NUL_CASES, ids=[f"{t}:{'.'.join(map(str, p))}" for t, p in NUL_CASES]
)
def test_nul_in_any_string_is_rejected_naming_the_field(
    etype: str, path: tuple[str | int, ...]
) -> None:
    ev = next(e for e in full_events() if e["type"] == etype)
    field = ".".join(map(str, path))
    rejected_naming(with_nul(ev, path), field)


@pytest.mark.parametrize(
    "override, field",
    [
        ({"type": "episode.ended", "score": None, "reason": "dis\x00charged"}, "reason"),
        ({"source": {"kind": "device", "id": "\x00"}}, "source.id"),
        ({"source": {"kind": "device", "id": "scale-7\x00"}}, "source.id"),
        ({"event_id": "e-1\x00"}, "event_id"),
        ({"patient_id": "\x00p-001"}, "patient_id"),
        ({"episode_id": "ep\x00-001"}, "episode_id"),
        ({"occurred_at": "2026-11-03T23:30:00\x00-05:00"}, "occurred_at"),
        ({"recorded_at": "2026-11-03T23:30:00-05:00\x00"}, "recorded_at"),
        ({"type": "symptom.reported", "score": None, "red_flags": ["fever\x00"]}, "red_flags.0"),
    ],
)
def test_nul_message(override: dict[str, Any], field: str) -> None:
    assert rejected_naming(base(**override), field) == [f"{field}: must not contain NUL characters"]


@pytest.mark.parametrize(
    "path",
    [
        ("billing", "payer"),
        ("billing", "member_id"),
        ("timezone",),
        ("program", "exercise_ids", 0),
        ("billing", "diagnosis_codes", 0),
    ],
)
def test_nul_in_episode_started(path: tuple[str | int, ...]) -> None:
    field = ".".join(map(str, path))
    assert rejected_naming(with_nul(episode(), path), field) == [
        f"{field}: must not contain NUL characters"
    ]


TIMESTAMP_FIELDS = ["occurred_at", "recorded_at", "received_at"]
YEAR_MESSAGE = "timestamp must be between 2000 and 2100"


@pytest.mark.parametrize("field", TIMESTAMP_FIELDS)
@pytest.mark.parametrize(
    "value",
    [
        "1999-12-31T23:59:59Z",
        "1999-12-31T23:59:59.999999+14:00",
        "2101-01-01T00:00:00Z",
        "2101-06-01T12:00:00-05:00",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "9999-12-31T23:59:59-05:00",
    ],
)
def test_years_outside_2000_2100_are_rejected(field: str, value: str) -> None:
    assert rejected_naming(base(**{field: value}), field) == [f"{field}: {YEAR_MESSAGE}"]


@pytest.mark.parametrize("field", TIMESTAMP_FIELDS)
@pytest.mark.parametrize(
    "value",
    [
        "2000-01-01T00:00:00Z",
        "2000-01-01T00:00:00+01:00",  # 1999 in UTC: the year as written
        "2100-12-31T23:59:59.999999Z",
        "2100-12-31T23:59:59-05:00",
    ],
)
def test_years_2000_and_2100_are_accepted(field: str, value: str) -> None:
    accepted(base(**{field: value}))


@pytest.mark.parametrize("field", TIMESTAMP_FIELDS)
@pytest.mark.parametrize(
    "value, why",
    [
        (1735689600, "not a number"),  # pydantic's lax mode: 2025-01-01T00:00:00Z
        (1735689600.5, "not a number"),
        (0, "not a number"),
        ("1735689600", "not epoch seconds"),  # lax mode again
        ("1735689600.5", "not epoch seconds"),
        ("1.7e9", "not epoch seconds"),
        (True, "not a boolean"),
        (["2026-11-03T10:00:00Z"], "not an array"),
        ({"t": "2026-11-03T10:00:00Z"}, "not an object"),
    ],
)
def test_numbers_and_epoch_strings_are_not_timestamps(field: str, value: Any, why: str) -> None:
    (message,) = rejected_naming(base(**{field: value}), field)
    assert message.startswith(f"{field}: timestamp must be an RFC 3339 string")
    assert message.endswith(why)


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-03 10:00:00Z",
        "2026-11-03T10:00Z",
        "2026-11-03T10:00:00+0000",
        "2026-11-03T10:00:00+05",
        "20261103T100000Z",
        "2026-11-03",
        "yesterday",
        "",
        "\uff12\uff10\uff12\uff16-11-03T10:00:00Z",
    ],  # fullwidth digits
)
def test_lax_datetime_forms_are_refused(value: str) -> None:
    (message,) = rejected_naming(base(occurred_at=value), "occurred_at")
    assert message.startswith("occurred_at: timestamp must")


@pytest.mark.parametrize(
    "value, message",
    [
        ("2026-11-03T10:00:00", "timestamp must carry an explicit UTC offset (e.g. Z or -05:00)"),
        ("2026-11-03T10:00:00.5", "timestamp must carry an explicit UTC offset (e.g. Z or -05:00)"),
        ("2026-13-03T10:00:00Z", "month value is outside expected range of 1-12"),
        ("2026-02-30T10:00:00Z", "day value is outside expected range"),
    ],
)
def test_timestamp_messages(value: str, message: str) -> None:
    (got,) = rejected_naming(base(occurred_at=value), "occurred_at")
    assert got.endswith(message)


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-03T10:00:00Z",
        "2026-11-03t10:00:00z",
        "2026-11-03T10:00:00.123456789+05:30",
        "2026-11-03T10:00:00-00:00",
    ],
)
def test_rfc3339_forms_accepted(value: str) -> None:
    accepted(base(occurred_at=value))


def test_python_callers_may_pass_aware_datetimes() -> None:
    utc = dt.UTC
    ev = validate_event(base(occurred_at=dt.datetime(2026, 11, 3, 10, tzinfo=utc)))
    assert isinstance(ev, PainReported) and ev.occurred_at.year == 2026
    assert fields(validate_event(base(occurred_at=dt.datetime(2026, 11, 3)))) == {"occurred_at"}
    errs = validate_event(base(occurred_at=dt.datetime(1999, 12, 31, tzinfo=utc)))
    assert isinstance(errs, list) and errs[0].message == f"occurred_at: {YEAR_MESSAGE}"


def test_json_schema_states_the_timestamp_rule() -> None:
    import re

    props = json_schema()["$defs"]["PainReported"]["properties"]
    # the contract's pattern, its end anchored for Python's re too (no final newline)
    assert props["occurred_at"]["pattern"] == published_pattern(TIMESTAMP_PATTERN)
    assert published_pattern(TIMESTAMP_PATTERN) == TIMESTAMP_PATTERN[:-1] + r"(?!\n)$"
    is_ok = re.compile(published_pattern(TIMESTAMP_PATTERN)).search
    assert is_ok("2100-12-31T23:59:59-05:00") and is_ok("2000-01-01T00:00:00Z")
    assert not is_ok("2101-01-01T00:00:00Z") and not is_ok("1735689600")
    assert re.search(TIMESTAMP_PATTERN, "2000-01-01T00:00:00Z\n")  # what the anchor is for
    assert not is_ok("2000-01-01T00:00:00Z\n")


def test_gateway_stamped_events_round_trip() -> None:
    ev = validate_event(base())
    assert not isinstance(ev, list)
    stamped = ev.model_copy(update={"received_at": dt.datetime.now(dt.UTC)})
    assert parse_event_json(stamped.model_dump_json()) == stamped


RECEIVED = dt.datetime(2026, 11, 4, 4, 30, tzinfo=dt.UTC)  # 2026-11-03T23:30-05:00


@pytest.mark.parametrize(
    "occurred_at, max_skew_s, rejected",
    [
        ("2026-11-03T23:30:00-05:00", 600.0, False),  # the same instant
        ("2025-11-03T23:30:00-05:00", 600.0, False),  # a year late: fine, phones sync late
        ("2026-11-03T23:40:00-05:00", 600.0, False),  # exactly at the tolerance
        ("2026-11-04T04:40:00Z", 600.0, False),  # the same, in another offset
        ("2026-11-03T23:40:00.000001-05:00", 600.0, True),
        ("2026-11-03T23:40:01-05:00", 600.0, True),  # 1 s beyond
        ("2026-11-04T04:40:01Z", 600.0, True),
        ("2027-11-03T23:30:00-05:00", 600.0, True),  # a year ahead
        ("2026-11-03T23:30:01-05:00", 0.0, True),
        ("2026-11-03T23:30:00-05:00", 0.0, False),
        ("2026-11-04T00:30:00-05:00", 3600.0, False),
        ("2026-11-04T00:30:01-05:00", 3600.0, True),
    ],
)
def test_future_skew_boundary(occurred_at: str, max_skew_s: float, rejected: bool) -> None:
    ev = validate_event(base(occurred_at=occurred_at))
    assert not isinstance(ev, list)
    err = future_skew_error(ev, RECEIVED, max_skew_s)
    if not rejected:
        assert err is None
        return
    assert err is not None and err.field == "occurred_at"
    assert err.message.startswith(f"occurred_at: more than {max_skew_s:g} s ahead of received_at")


def test_future_skew_message_and_reference() -> None:
    ev = validate_event(base(occurred_at="2027-11-03T23:30:00-05:00"))
    assert not isinstance(ev, list)
    err = future_skew_error(ev, RECEIVED, Settings().gateway.max_future_skew_s)
    assert err is not None
    assert err.message.startswith("occurred_at: more than 600 s ahead of received_at")
    assert "31536000 s after 2026-11-04T04:30:00+00:00" in err.message
    assert future_skew_error(ev, RECEIVED, float("inf")) is None
    with pytest.raises(ValueError, match="timezone-aware"):
        future_skew_error(ev, RECEIVED.replace(tzinfo=None), 600.0)


def test_max_future_skew_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().gateway.max_future_skew_s == 600.0
    monkeypatch.setenv("RTM_MAX_FUTURE_SKEW_S", "30")
    assert Settings().gateway.max_future_skew_s == 30.0
    monkeypatch.setenv("RTM_MAX_FUTURE_SKEW_S", "-1")
    with pytest.raises(ValidationError):
        Settings()


def test_event_type_sets_are_read_off_the_contract_union() -> None:
    from schemas.episodes import EPISODE_EVENT_TYPES
    from schemas.events import (
        EVENT_ADAPTER,
        EVENT_TYPES,
        INTEGRATION_TYPES,
        PATIENT_DATA_TYPES,
        PRODUCER_TYPES,
        READINESS_FACT_TYPES,
    )

    # every listed type is one the contract decodes, each once, and only those
    assert len(set(EVENT_TYPES)) == len(EVENT_TYPES) == 18
    schema = EVENT_ADAPTER.json_schema()
    assert set(schema["discriminator"]["mapping"]) == set(EVENT_TYPES)
    assert PATIENT_DATA_TYPES == {"exercise.completed", "pain.reported", "symptom.reported"}
    # key scopes: an intake comes from a patient app or a scheduler; contacts from the latter;
    # a PROM form from the patient's app or the EHR
    assert PRODUCER_TYPES == PATIENT_DATA_TYPES | {"intake.submitted", "assessment.completed"}
    assert INTEGRATION_TYPES == {
        "episode.started",
        "program.updated",
        "episode.ended",
        "program.paused",
        "program.resumed",
        "clinician.time_logged",
        "intake.submitted",
        "intake.contacted",
        "assessment.completed",
        "visit.completed",
        "consent.recorded",
        "plan_of_care.certified",
        "procedure.recorded",
        "rpm.enrolled",
        "therapy_spend.reported",
    }
    assert set(EPISODE_EVENT_TYPES) == {"episode.started", "program.updated", "episode.ended"}
    assert not PATIENT_DATA_TYPES & set(EPISODE_EVENT_TYPES)
    # claim-readiness facts (issue 20): posted by EHR integrations, never by a patient app
    assert READINESS_FACT_TYPES == {
        "consent.recorded",
        "plan_of_care.certified",
        "procedure.recorded",
        "rpm.enrolled",
        "therapy_spend.reported",
    }
    assert READINESS_FACT_TYPES <= INTEGRATION_TYPES
    assert not READINESS_FACT_TYPES & (PATIENT_DATA_TYPES | set(EPISODE_EVENT_TYPES))

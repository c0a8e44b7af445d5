"""Home exercise programs (issue 17 item 3): the contract's exercises and template, the
page's program history, the copy form's checks, and adherence over a program change
mid-window (a template's program replaced by the patient's own copy)."""

from __future__ import annotations

import datetime as dt
import itertools
from fractions import Fraction
from typing import Any

import orjson
import pytest

from alerts.adherence import daily_rows
from schemas.events import FieldError, dump_event, validate_event
from streams.http.pages.common import PageError
from streams.http.pages.programs import OWN_COPY, copy_program, program_histories
from streams.services.program_templates import parse_exercises
from tests.unit.test_adherence import P, ex, fold, mk, start

BRIDGE = {"exercise_id": "bridge", "name": "Glute bridge", "sets": 3, "reps": 10, "hold_s": 5}
DOG = {"exercise_id": "bird-dog", "sets": 2, "reps": 8}


def updated(at: str, eid: str, spw: int, exercises: list[Any], template: Any = None) -> Any:
    program: dict[str, Any] = {
        "sessions_per_week": spw,
        "exercise_ids": [e["exercise_id"] for e in exercises],
        "exercises": exercises,
    }
    if template is not None:
        program["template"] = template
    return mk("program.updated", at, eid, episode_id="ep-1", program=program)


def program_event(program: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_id": "e1",
        "schema_version": 1,
        "type": "program.updated",
        "patient_id": P,
        "occurred_at": "2026-11-03T10:00:00-06:00",
        "episode_id": "ep-1",
        "program": program,
    }


def fields_of(errors: Any) -> set[str]:
    assert isinstance(errors, list), errors
    return {e.field for e in errors if isinstance(e, FieldError)}


def test_a_program_with_exercises_and_a_template_round_trips() -> None:
    raw = program_event(
        {
            "sessions_per_week": 3,
            "exercises": [BRIDGE, DOG],
            "template": {"id": "low-back-1", "version": 2},
        }
    )
    event = validate_event(raw)
    assert not isinstance(event, list), event
    again = orjson.loads(dump_event(event))["program"]
    assert again["template"] == {"id": "low-back-1", "version": 2}
    assert again["exercises"][1] == DOG | {"hold_s": 0}
    # an older producer's program (ids only) is still a program
    assert not isinstance(validate_event(program_event({"sessions_per_week": 3})), list)


@pytest.mark.parametrize(
    "change,field",
    [
        ({"reps": 0}, "program.exercises.1.reps"),
        ({"sets": 21}, "program.exercises.1.sets"),
        ({"hold_s": -1}, "program.exercises.1.hold_s"),
        ({"hold_s": "5"}, "program.exercises.1.hold_s"),
        ({"exercise_id": "no spaces"}, "program.exercises.1.exercise_id"),
        ({"exercise_id": "bridge"}, "program.exercises"),  # the same exercise twice
        ({"colour": "red"}, "program.exercises.1.colour"),
    ],
)
def test_a_bad_dosage_is_refused_naming_its_field(change: dict[str, Any], field: str) -> None:
    raw = program_event({"sessions_per_week": 3, "exercises": [BRIDGE, DOG | change]})
    assert field in fields_of(validate_event(raw))


def test_a_template_needs_an_id_and_a_version_from_1() -> None:
    raw = program_event({"sessions_per_week": 3, "template": {"id": "t", "version": 0}})
    assert fields_of(validate_event(raw)) == {"program.template.version"}


def _payload(event: Any) -> str:
    return dump_event(event).decode()


def test_the_history_names_the_template_version_then_the_patients_own_copy() -> None:
    events = [
        start(spw=5),
        updated("2026-11-03T10:00:00-06:00", "assign", 3, [BRIDGE], {"id": "lb", "version": 2}),
        updated("2026-11-06T10:00:00-06:00", "copy", 4, [BRIDGE | {"reps": 12}]),
    ]
    # arrival order does not change the history: it follows the patient-local dates
    for order in (events, events[::-1]):
        history = program_histories(_payload(e) for e in order)["ep-1"]
        assert [h["source"] for h in history] == [
            "the episode's initial program",
            "template lb version 2",
            OWN_COPY,
        ]
        assert [h["date"] for h in history] == ["2026-11-02", "2026-11-03", "2026-11-06"]
        assert history[-1]["exercises"][0]["reps"] == 12


def _current() -> dict[str, Any]:
    events = [
        start(),
        updated("2026-11-03T10:00:00-06:00", "a", 3, [BRIDGE, DOG], {"id": "lb", "version": 1}),
    ]
    return program_histories(_payload(e) for e in events)["ep-1"][-1]


def test_the_copy_form_makes_the_patients_own_program_with_the_new_dosage() -> None:
    form = {"sessions_per_week": "4", "sets-0": "3", "reps-0": "15", "hold_s-0": "5"}
    form |= {"sets-1": "2", "reps-1": "8", "hold_s-1": "0"}
    program = copy_program(_current(), form)
    assert "template" not in program
    assert program["sessions_per_week"] == 4
    assert program["exercises"][0] == BRIDGE | {"reps": 15}


def test_the_copy_form_names_each_bad_field() -> None:
    form = {"sessions_per_week": "40", "sets-0": "3", "reps-0": "0", "hold_s-0": "5"}
    form |= {"sets-1": "two", "reps-1": "8", "hold_s-1": "0"}
    with pytest.raises(PageError) as caught:
        copy_program(_current(), form)
    assert caught.value.status == 422
    assert "bird-dog sets: a whole number is required" in caught.value.message
    form["sets-1"] = "2"
    with pytest.raises(PageError) as caught:
        copy_program(_current(), form)
    message = caught.value.message
    assert "bridge reps: Input should be greater than or equal to 1" in message
    assert "sessions per week: Input should be less than or equal to 28" in message


def test_adherence_uses_the_program_in_force_on_each_local_date_across_a_change() -> None:
    """A template's program (7 / week) from the start, the patient's own copy (2 / week)
    from 11-06 (its patient-local date; 11-07 in UTC): the window 11-02..11-08 prescribes
    4 days x 1 + 3 days x 2/7 = 34/7, in whatever order the events arrive."""
    events = [
        start(spw=7),
        updated("2026-11-02T09:30:00-06:00", "assign", 7, [BRIDGE], {"id": "lb", "version": 1}),
        updated("2026-11-06T20:00:00-06:00", "copy", 2, [BRIDGE | {"reps": 5}]),
        *[ex(f"2026-11-0{d}T10:00:00-06:00", f"x{d}", f"s{d}") for d in (2, 3, 4, 7)],
    ]
    seen = set()
    for order in itertools.permutations(events[:3]):
        state = fold([*order, *events[3:]])
        got = daily_rows(P, state.completions, state.book, dt.date(2026, 11, 8))
        seen.add(tuple(got))
    (rows,) = seen
    by_day = {r.date.isoformat(): r for r in rows}
    assert by_day["2026-11-05"].prescribed == 1
    assert by_day["2026-11-06"].prescribed == Fraction(2, 7)
    assert by_day["2026-11-08"].prescribed == Fraction(2, 7)
    assert by_day["2026-11-08"].adherence_7d == Fraction(4) / Fraction(34, 7)
    # without the change the same sessions are 4 of 7
    state = fold([events[0], events[1], *events[3:]])
    flat = daily_rows(P, state.completions, state.book, dt.date(2026, 11, 8))
    assert flat[-1].adherence_7d == Fraction(4, 7)


def test_a_template_file_is_checked_field_by_field() -> None:
    bad = orjson.dumps([BRIDGE | {"reps": 0}, DOG | {"sets": "2"}])
    with pytest.raises(ValueError) as caught:
        parse_exercises(bad, 3)
    assert "0.reps: Input should be greater than or equal to 1" in str(caught.value)
    assert "1.sets" in str(caught.value)
    with pytest.raises(ValueError, match="only once"):
        parse_exercises(orjson.dumps([BRIDGE, BRIDGE]), 3)
    with pytest.raises(ValueError, match="at least one exercise"):
        parse_exercises(b"[]", 3)
    assert [e.reps for e in parse_exercises(orjson.dumps([BRIDGE, DOG]), 3)] == [10, 8]

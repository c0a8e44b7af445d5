"""The intake rules (issue 18 part 2; docs/intake-rules.md): STarT Back scoring over every
answer combination, each routing row and reason code, the rule set as data, and the due
time of each service level, with the business calendar in the intake's time zone."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from intake.routing import REASON_CODES, route_intake
from intake.rules import (
    DEFAULT_RULES,
    INTAKE_FLAGS,
    BusinessCalendar,
    BusinessDays,
    Elapsed,
    IntakeRules,
    load_rules,
)
from intake.sbst import score_sbst
from intake.service import due_at
from schemas.events import IntakeSubmitted, SbstAnswers, validate_event

NY = "America/New_York"
EMERGENCY = [
    "saddle_anesthesia",
    "bladder_dysfunction",
    "bowel_incontinence",
    "bilateral_leg_symptoms",
    "progressive_weakness",
]
SERIOUS = [
    "fever",
    "unexplained_weight_loss",
    "constant_night_pain",
    "major_trauma",
    "cancer_history",
]


def sbst(*items: int) -> dict[str, int]:
    assert len(items) == 9
    return {str(i): v for i, v in enumerate(items, start=1)}


def answers(*items: int) -> SbstAnswers:
    return SbstAnswers.model_validate(sbst(*items))


def intake(
    *,
    region: str = "knee",
    flags: tuple[str, ...] = (),
    nprs: int = 3,
    sbst_answers: dict[str, int] | None = None,
    at: str = "2026-11-09T10:00:00-05:00",
    tz: str = NY,
    event_id: str = "e-1",
) -> IntakeSubmitted:
    body: dict[str, Any] = {"nprs": nprs}
    if sbst_answers is not None:
        body["sbst"] = sbst_answers
    ev = validate_event(
        {
            "event_id": event_id,
            "schema_version": 1,
            "type": "intake.submitted",
            "patient_id": "p-1",
            "occurred_at": at,
            "intake_id": "in-1",
            "timezone": tz,
            "body_region": region,
            "red_flags": list(flags),
            "answers": body,
        }
    )
    assert isinstance(ev, IntakeSubmitted), ev
    return ev


# --- STarT Back -------------------------------------------------------------------------------


def all_answer_combinations() -> list[tuple[int, ...]]:
    return [
        (*yes_no, ninth) for yes_no in itertools.product((0, 1), repeat=8) for ninth in range(5)
    ]


def test_sbst_tiers_over_all_1280_answer_combinations() -> None:
    combos = all_answer_combinations()
    assert len(combos) == len(set(combos)) == 1280
    tiers = Counter(score_sbst(answers(*c)).tier for c in combos)
    assert tiers == {"low": 353, "medium": 719, "high": 208}


def test_sbst_total_and_distress_by_the_definition() -> None:
    # written out again from the rules, item by item, for every combination
    for c in all_answer_combinations():
        score = score_sbst(answers(*c))
        bothersome = 1 if c[8] in (3, 4) else 0
        assert score.total == c[0] + c[1] + c[2] + c[3] + c[4] + c[5] + c[6] + c[7] + bothersome
        assert score.distress == c[4] + c[5] + c[6] + c[7] + bothersome
        assert 0 <= score.total <= 9 and 0 <= score.distress <= 5


@pytest.mark.parametrize(
    "items, total, distress, tier",
    [
        ((0, 0, 0, 0, 0, 0, 0, 0, 0), 0, 0, "low"),
        ((1, 1, 1, 0, 0, 0, 0, 0, 2), 3, 0, "low"),  # "moderately" is not bothersome
        ((1, 1, 1, 0, 0, 0, 0, 0, 3), 4, 1, "medium"),  # "very much" is
        ((1, 1, 1, 1, 0, 0, 0, 0, 4), 5, 1, "medium"),
        ((0, 0, 0, 0, 1, 1, 1, 0, 3), 4, 4, "high"),  # distress 4 with bothersomeness
        ((0, 0, 0, 0, 1, 1, 1, 1, 0), 4, 4, "high"),
        ((0, 0, 0, 0, 1, 1, 1, 0, 2), 3, 3, "low"),  # distress 3, total 3
        ((1, 0, 0, 0, 1, 1, 1, 0, 2), 4, 3, "medium"),  # distress 3, total 4
        ((1, 1, 1, 1, 1, 1, 1, 1, 4), 9, 5, "high"),
    ],
)
def test_sbst_examples(items: tuple[int, ...], total: int, distress: int, tier: str) -> None:
    score = score_sbst(answers(*items))
    assert (score.total, score.distress, score.tier) == (total, distress, tier)


# --- routing -----------------------------------------------------------------------------------

HIGH = sbst(0, 0, 0, 0, 1, 1, 1, 1, 4)
MEDIUM = sbst(1, 1, 1, 1, 0, 0, 0, 0, 0)
LOW = sbst(0, 0, 0, 0, 0, 0, 0, 0, 0)


@pytest.mark.parametrize("flag", EMERGENCY)
def test_row_1_an_emergency_flag_is_urgent(flag: str) -> None:
    r = route_intake(intake(flags=(flag,)), DEFAULT_RULES)
    assert (r.route, r.reasons) == ("urgent", (f"red_flag:{flag}",))


@pytest.mark.parametrize("flag", SERIOUS)
def test_row_2_a_serious_pathology_flag_goes_to_a_physician(flag: str) -> None:
    r = route_intake(intake(flags=(flag,)), DEFAULT_RULES)
    assert (r.route, r.reasons) == ("physician_review", (f"red_flag:{flag}",))


def test_row_1_names_every_flag_of_either_class_sorted_by_code_point() -> None:
    r = route_intake(
        intake(flags=("saddle_anesthesia", "fever", "bladder_dysfunction", "cancer_history")),
        DEFAULT_RULES,
    )
    assert r.route == "urgent"
    assert r.reasons == (
        "red_flag:bladder_dysfunction",
        "red_flag:cancer_history",
        "red_flag:fever",
        "red_flag:saddle_anesthesia",
    )
    # the order of the answers does not matter
    again = route_intake(
        intake(flags=("cancer_history", "bladder_dysfunction", "saddle_anesthesia", "fever")),
        DEFAULT_RULES,
    )
    assert again.reasons == r.reasons


def test_row_2_names_every_flag_too() -> None:
    r = route_intake(intake(flags=("major_trauma", "constant_night_pain")), DEFAULT_RULES)
    assert r.route == "physician_review"
    assert r.reasons == ("red_flag:constant_night_pain", "red_flag:major_trauma")


def test_red_flags_route_before_sbst_and_nprs_and_sbst_is_still_scored() -> None:
    r = route_intake(
        intake(region="low_back", flags=("fever",), nprs=10, sbst_answers=HIGH), DEFAULT_RULES
    )
    assert (r.route, r.reasons) == ("physician_review", ("red_flag:fever",))
    assert r.sbst is not None and r.sbst.tier == "high"


@pytest.mark.parametrize(
    "answers_, nprs, route, reason",
    [
        (HIGH, 2, "in_person_pt", "sbst:high"),
        (MEDIUM, 2, "digital_pt", "sbst:medium"),
        (LOW, 2, "digital_pt", "sbst:low"),
        # with SBST, NPRS does not route (prognosis, not pain intensity, stratifies)
        (LOW, 10, "digital_pt", "sbst:low"),
        (MEDIUM, 9, "digital_pt", "sbst:medium"),
    ],
)
def test_row_3_low_back_with_sbst(
    answers_: dict[str, int], nprs: int, route: str, reason: str
) -> None:
    r = route_intake(intake(region="low_back", nprs=nprs, sbst_answers=answers_), DEFAULT_RULES)
    assert (r.route, r.reasons) == (route, (reason,))


@pytest.mark.parametrize(
    "region, nprs, route, reasons",
    [
        ("knee", 8, "in_person_pt", ("nprs:high",)),
        ("knee", 10, "in_person_pt", ("nprs:high",)),
        ("knee", 7, "digital_pt", ("default",)),
        ("low_back", 8, "in_person_pt", ("nprs:high",)),  # low back without the questionnaire
        ("low_back", 0, "digital_pt", ("default",)),
        ("other", 0, "digital_pt", ("default",)),
    ],
)
def test_rows_4_and_5_nprs_and_the_default(
    region: str, nprs: int, route: str, reasons: tuple[str, ...]
) -> None:
    r = route_intake(intake(region=region, nprs=nprs), DEFAULT_RULES)
    assert (r.route, r.reasons, r.sbst) == (route, reasons, None)


def test_reason_codes_are_a_fixed_list_that_names_no_threshold() -> None:
    assert len(REASON_CODES) == len(INTAKE_FLAGS) + 3 + 2
    assert not any(ch.isdigit() for code in REASON_CODES for ch in code)
    seen: set[str] = set()
    for flags in [(), *[(f,) for f in INTAKE_FLAGS], tuple(INTAKE_FLAGS)]:
        for nprs in (0, 7, 8, 10):
            for region, answers_ in (("knee", None), ("low_back", HIGH), ("low_back", LOW)):
                r = route_intake(
                    intake(region=region, flags=flags, nprs=nprs, sbst_answers=answers_),
                    DEFAULT_RULES,
                )
                assert list(r.reasons) == sorted(r.reasons)
                seen |= set(r.reasons)
    assert seen <= REASON_CODES
    assert seen == REASON_CODES - {"sbst:medium"}  # every other code was reached here


def test_an_organisation_may_move_fever_to_the_emergency_class() -> None:
    rules = IntakeRules(
        version="org-a-2",
        emergency_flags=frozenset([*EMERGENCY, "fever"]),
        serious_flags=frozenset(set(SERIOUS) - {"fever"}),
    )
    r = route_intake(intake(flags=("fever", "cancer_history")), rules)
    assert (r.route, r.reasons) == ("urgent", ("red_flag:cancer_history", "red_flag:fever"))
    assert route_intake(intake(flags=("fever",)), DEFAULT_RULES).route == "physician_review"


def test_the_nprs_threshold_is_configuration() -> None:
    parity = IntakeRules(version="org-a-3", nprs_in_person_at=7)  # pain_high's 7
    assert route_intake(intake(nprs=7), parity).route == "in_person_pt"
    never = IntakeRules(version="org-a-4", nprs_in_person_at=None)
    assert route_intake(intake(nprs=10), never).reasons == ("default",)


def test_the_sbst_tier_routes_are_configuration() -> None:
    rules = IntakeRules(
        version="org-a-5",
        sbst_routes={"low": "digital_pt", "medium": "in_person_pt", "high": "in_person_pt"},
    )
    r = route_intake(intake(region="low_back", sbst_answers=MEDIUM), rules)
    assert (r.route, r.reasons) == ("in_person_pt", ("sbst:medium",))


# --- the rule set as data ------------------------------------------------------------------------


def test_the_default_rule_set() -> None:
    r = DEFAULT_RULES
    assert r.version == "intake-v1"
    assert r.emergency_flags == set(EMERGENCY) and r.serious_flags == set(SERIOUS)
    assert r.nprs_in_person_at == 8
    assert r.sbst_routes == {"low": "digital_pt", "medium": "digital_pt", "high": "in_person_pt"}
    assert r.service_levels == {
        "urgent": Elapsed(hours=1),
        "physician_review": BusinessDays(days=1),
        "in_person_pt": Elapsed(hours=72),
        "digital_pt": Elapsed(hours=72),
    }
    cal = r.calendar
    assert cal.weekdays == {"mon", "tue", "wed", "thu", "fri"} and cal.holidays == set()
    assert (cal.open, cal.close) == (dt.time(8), dt.time(17))
    assert cal.day_length == dt.timedelta(hours=9)
    with pytest.raises(ValidationError):
        r.nprs_in_person_at = 7  # type: ignore[misc]  # frozen


def test_rules_round_trip_through_json_and_a_file_may_give_only_what_differs() -> None:
    assert load_rules(DEFAULT_RULES.model_dump_json()) == DEFAULT_RULES
    text = json.dumps(
        {
            "version": "clinic-a-2027-01",
            "nprs_in_person_at": 7,
            "service_levels": {
                "urgent": {"kind": "elapsed", "hours": 0.5},
                "physician_review": {"kind": "business_days", "days": 2},
                "in_person_pt": {"kind": "elapsed", "hours": 48},
                "digital_pt": {"kind": "elapsed", "hours": 72},
            },
            "calendar": {
                "weekdays": ["mon", "tue", "wed", "thu", "fri", "sat"],
                "open": "09:00",
                "close": "13:00",
                "holidays": ["2026-12-25"],
            },
        }
    )
    rules = load_rules(text)
    assert rules.version == "clinic-a-2027-01" and rules.nprs_in_person_at == 7
    assert rules.emergency_flags == DEFAULT_RULES.emergency_flags
    assert rules.calendar.day_length == dt.timedelta(hours=4)
    assert rules.calendar.holidays == {dt.date(2026, 12, 25)}
    assert load_rules(rules.model_dump_json()) == rules
    dumped = json.loads(rules.model_dump_json())
    assert dumped["calendar"]["weekdays"] == ["mon", "tue", "wed", "thu", "fri", "sat"]


def test_the_documented_rule_set_is_the_default() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "intake-rules.md").read_text()
    section = doc.split("## The rule set as data", 1)[1]
    block = section.split("```json\n", 1)[1].split("```", 1)[0]
    assert load_rules(block) == DEFAULT_RULES


def test_changed_rules_need_their_own_version() -> None:
    assert load_rules('{"version": "intake-v1"}') == DEFAULT_RULES
    with pytest.raises(ValueError, match="version of their own"):
        load_rules('{"version": "intake-v1", "nprs_in_person_at": 7}')


@pytest.mark.parametrize(
    "body, where",
    [
        ({}, "version"),
        ({"version": "a b"}, "version"),
        ({"version": "x", "colour": "red"}, "colour"),
        ({"version": "x", "nprs_in_person_at": 11}, "nprs_in_person_at"),
        ({"version": "x", "emergency_flags": [*EMERGENCY, "fever"]}, "in both"),
        ({"version": "x", "serious_flags": ["fever"]}, "in neither"),
        ({"version": "x", "emergency_flags": [*EMERGENCY, "headache"]}, "emergency_flags"),
        ({"version": "x", "sbst_routes": {"low": "digital_pt"}}, "sbst_routes"),
        (
            {
                "version": "x",
                "sbst_routes": {"low": "urgent", "medium": "digital_pt", "high": "digital_pt"},
            },
            "sbst_routes",
        ),
        (
            {"version": "x", "service_levels": {"urgent": {"kind": "elapsed", "hours": 1}}},
            "service_levels",
        ),
        (
            {
                "version": "x",
                "service_levels": {
                    **json.loads(DEFAULT_RULES.model_dump_json())["service_levels"],
                    "urgent": {"kind": "elapsed", "hours": 0},
                },
            },
            "hours",
        ),
        (
            {"version": "x", "calendar": {"open": "17:00", "close": "08:00"}},
            "open must be before close",
        ),
        (
            {"version": "x", "calendar": {"open": "08:00", "close": "08:00"}},
            "open must be before close",
        ),
        ({"version": "x", "calendar": {"open": "08:00+01:00"}}, "without an offset"),
        ({"version": "x", "calendar": {"weekdays": []}}, "weekdays"),
        ({"version": "x", "calendar": {"weekdays": ["monday"]}}, "weekdays"),
    ],
)
def test_bad_rules_are_refused_naming_the_problem(body: dict[str, Any], where: str) -> None:
    with pytest.raises(ValidationError) as info:
        load_rules(json.dumps(body))
    assert where in str(info.value)


# --- service level: due_at -----------------------------------------------------------------------


def due(
    at: str, route: str = "physician_review", tz: str = NY, rules: IntakeRules = DEFAULT_RULES
) -> str:
    return due_at(dt.datetime.fromisoformat(at), route, tz, rules).isoformat()  # type: ignore[arg-type]


# 2026-11-09 is a Monday, 2026-11-13 a Friday; New York is on EST (-05:00) all that week.
@pytest.mark.parametrize(
    "submitted, expected",
    [
        ("2026-11-09T10:00:00-05:00", "2026-11-10T10:00:00-05:00"),  # Mon 10:00 -> Tue 10:00
        ("2026-11-09T07:00:00-05:00", "2026-11-09T17:00:00-05:00"),  # Mon 07:00 -> Mon 17:00
        ("2026-11-09T17:00:00-05:00", "2026-11-10T17:00:00-05:00"),  # Mon 17:00 -> Tue 17:00
        ("2026-11-13T16:00:00-05:00", "2026-11-16T16:00:00-05:00"),  # Fri 16:00 -> Mon 16:00
        ("2026-11-13T18:00:00-05:00", "2026-11-16T17:00:00-05:00"),  # Fri 18:00 -> Mon 17:00
        ("2026-11-14T11:00:00-05:00", "2026-11-16T17:00:00-05:00"),  # Sat 11:00 -> Mon 17:00
        # exactly at open: the whole day, due exactly at close
        ("2026-11-09T08:00:00-05:00", "2026-11-09T17:00:00-05:00"),
        # one second before close: one second today, the rest tomorrow
        ("2026-11-09T16:59:59-05:00", "2026-11-10T16:59:59-05:00"),
        # Sunday late, Monday early
        ("2026-11-15T23:59:00-05:00", "2026-11-16T17:00:00-05:00"),
        ("2026-11-16T00:00:00-05:00", "2026-11-16T17:00:00-05:00"),
    ],
)
def test_one_business_day(submitted: str, expected: str) -> None:
    assert due(submitted) == expected


def test_the_calendar_is_read_in_the_intakes_zone_not_the_events_offset() -> None:
    # Monday 10:00 in Tokyo's offset is Sunday 20:00 in New York: Monday's whole day
    assert due("2026-11-09T10:00:00+09:00") == "2026-11-09T17:00:00-05:00"
    # Monday 10:00 in New York written in Tokyo's offset, where it is already Tuesday
    assert due("2026-11-10T00:00:00+09:00") == "2026-11-10T10:00:00-05:00"
    # the same instant in UTC: Monday 15:00Z is 10:00 in New York
    assert due("2026-11-09T15:00:00Z") == "2026-11-10T10:00:00-05:00"
    # and in Chicago the same instant is 09:00 local
    assert due("2026-11-09T15:00:00Z", tz="America/Chicago") == "2026-11-10T09:00:00-06:00"


def test_holidays_are_not_business_days() -> None:
    rules = IntakeRules(
        version="org-h",
        calendar=BusinessCalendar(
            holidays=frozenset({dt.date(2026, 11, 10), dt.date(2026, 11, 16)})
        ),
    )
    # Mon 10:00, Tuesday a holiday -> Wednesday 10:00
    assert due("2026-11-09T10:00:00-05:00", rules=rules) == "2026-11-11T10:00:00-05:00"
    # Fri 16:00, Monday a holiday -> Tuesday 16:00
    assert due("2026-11-13T16:00:00-05:00", rules=rules) == "2026-11-17T16:00:00-05:00"
    # submitted on a holiday: the next business day's close
    assert due("2026-11-10T09:00:00-05:00", rules=rules) == "2026-11-11T17:00:00-05:00"
    # the holiday is a local date in the intake's zone: 2026-11-10T03:00Z is still the 9th
    assert due("2026-11-10T03:00:00Z", rules=rules) == "2026-11-11T17:00:00-05:00"


def test_other_calendars_and_several_business_days() -> None:
    cal = BusinessCalendar(
        weekdays=frozenset({"mon", "wed", "sat"}), open=dt.time(9), close=dt.time(13)
    )
    rules = IntakeRules(
        version="org-c",
        calendar=cal,
        service_levels={**DEFAULT_RULES.service_levels, "physician_review": BusinessDays(days=2)},
    )
    # Mon 12:00: 1 h Monday, 4 h Wednesday, 3 h Saturday -> Sat 12:00 (2 x 4 h)
    assert due("2026-11-09T12:00:00-05:00", rules=rules) == "2026-11-14T12:00:00-05:00"


def test_business_time_across_the_end_of_dst() -> None:
    # Fri 16:00 EDT, one hour; Mon 08:00-16:00 EST, eight more: local hours count
    assert due("2026-10-30T16:00:00-04:00") == "2026-11-02T16:00:00-05:00"
    # and its spring counterpart (DST starts Sunday 2026-03-08)
    assert due("2026-03-06T16:00:00-05:00") == "2026-03-09T16:00:00-04:00"


def test_72_hours_elapsed_across_a_dst_change_move_the_local_clock_time() -> None:
    # autumn: Saturday 10:00 EDT + 72 h = Tuesday 09:00 EST (the documented example)
    for route in ("in_person_pt", "digital_pt"):
        assert due("2026-10-31T10:00:00-04:00", route) == "2026-11-03T09:00:00-05:00"
    # spring: Saturday 10:00 EST + 72 h = Tuesday 11:00 EDT
    assert due("2026-03-07T10:00:00-05:00", "digital_pt") == "2026-03-10T11:00:00-04:00"
    # no change: the same clock time three days on
    assert due("2026-11-09T10:00:00-05:00", "digital_pt") == "2026-11-12T10:00:00-05:00"


def test_urgent_is_one_hour_around_the_clock() -> None:
    assert due("2026-11-14T03:00:00-05:00", "urgent") == "2026-11-14T04:00:00-05:00"  # Sat night
    assert due("2026-11-09T16:30:00-05:00", "urgent") == "2026-11-09T17:30:00-05:00"  # after close
    assert due("2026-12-31T23:30:00-05:00", "urgent") == "2027-01-01T00:30:00-05:00"
    # the repeated hour at the end of DST: 01:30 EDT + 1 h is 01:30 EST
    assert due("2026-11-01T01:30:00-04:00", "urgent") == "2026-11-01T01:30:00-05:00"
    # on a holiday too
    rules = IntakeRules(
        version="org-h2", calendar=BusinessCalendar(holidays=frozenset({dt.date(2026, 11, 9)}))
    )
    assert due("2026-11-09T10:00:00-05:00", "urgent", rules=rules) == "2026-11-09T11:00:00-05:00"


def test_due_at_needs_an_aware_instant() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        due_at(dt.datetime(2026, 11, 9, 10), "urgent", NY, DEFAULT_RULES)

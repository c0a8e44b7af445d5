"""The claim-readiness facts of the contract (issue 20 part 1): consent.recorded,
plan_of_care.certified, procedure.recorded, rpm.enrolled, therapy_spend.reported. Each
refusal of docs/events.md names the field; a wrong certifier check digit is not refused
(it is the gate CERTIFIER_NPI_INVALID); only the integration key scope may post them."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from schemas.events import (
    READINESS_FACT_TYPES,
    ConsentRecorded,
    PlanOfCareCertified,
    ProcedureRecorded,
    RpmEnrolled,
    TherapySpendReported,
    dump_event,
    parse_event_json,
    validate_event,
)
from streams.access import Principal

ENVELOPE = {
    "event_id": "f-1",
    "schema_version": 1,
    "patient_id": "p-001",
    "occurred_at": "2026-03-02T10:00:00-05:00",
}
VALID: dict[str, dict[str, Any]] = {
    "consent.recorded": {"episode_id": "ep-1", "method": "verbal", "scope": "rtm"},
    "plan_of_care.certified": {
        "episode_id": "ep-1",
        "certifier_npi": "1234567893",
        "duration_days": 90,
    },
    "procedure.recorded": {"surgeon_npi": "1234567893", "global_days": 90},
    "rpm.enrolled": {"period_start": "2026-03-01", "period_end": "2026-03-31"},
    "therapy_spend.reported": {"year": 2026, "amount_allowed_ytd": 1250.5, "bucket": "pt_slp"},
}


def fact(etype: str, **over: Any) -> dict[str, Any]:
    return {**ENVELOPE, "type": etype, **VALID[etype], **over}


def refused(ev: dict[str, Any]) -> dict[str, str]:
    result = validate_event(ev)
    assert isinstance(result, list), result
    return {e.field: e.message for e in result}


def test_each_valid_fact_is_accepted_and_round_trips() -> None:
    models = {
        "consent.recorded": ConsentRecorded,
        "plan_of_care.certified": PlanOfCareCertified,
        "procedure.recorded": ProcedureRecorded,
        "rpm.enrolled": RpmEnrolled,
        "therapy_spend.reported": TherapySpendReported,
    }
    assert set(VALID) == READINESS_FACT_TYPES == set(models)
    for etype, model in models.items():
        ev = validate_event(fact(etype))
        assert isinstance(ev, model), ev
        assert parse_event_json(dump_event(ev)) == ev
        assert ev.local_date == dt.date(2026, 3, 2)


@pytest.mark.parametrize(
    "etype, over, field",
    [
        ("consent.recorded", {"method": "fax"}, "method"),
        ("consent.recorded", {"method": None}, "method"),
        ("consent.recorded", {"scope": "rpm"}, "scope"),
        ("consent.recorded", {"episode_id": None}, "episode_id"),
        ("plan_of_care.certified", {"certifier_npi": "123456789"}, "certifier_npi"),
        ("plan_of_care.certified", {"certifier_npi": "12345678a3"}, "certifier_npi"),
        ("plan_of_care.certified", {"duration_days": 91}, "duration_days"),
        ("plan_of_care.certified", {"duration_days": 0}, "duration_days"),
        ("plan_of_care.certified", {"duration_days": 30.5}, "duration_days"),
        ("plan_of_care.certified", {"duration_days": "30"}, "duration_days"),
        ("plan_of_care.certified", {"episode_id": None}, "episode_id"),
        ("procedure.recorded", {"surgeon_npi": "1234567890"}, "surgeon_npi"),
        ("procedure.recorded", {"global_days": 30}, "global_days"),
        ("procedure.recorded", {"global_days": True}, "global_days"),
        ("rpm.enrolled", {"period_end": "2026-02-28"}, "period_end"),
        ("rpm.enrolled", {"period_start": "2026-02-30"}, "period_start"),
        ("rpm.enrolled", {"period_start": "2026-03-01T00:00:00Z"}, "period_start"),
        ("rpm.enrolled", {"period_start": 20260301}, "period_start"),
        ("rpm.enrolled", {"period_end": "1999-12-31", "period_start": "1999-12-01"}, "period_end"),
        ("therapy_spend.reported", {"year": 1999}, "year"),
        ("therapy_spend.reported", {"year": 2101}, "year"),
        ("therapy_spend.reported", {"amount_allowed_ytd": -0.01}, "amount_allowed_ytd"),
        ("therapy_spend.reported", {"amount_allowed_ytd": 12.345}, "amount_allowed_ytd"),
        ("therapy_spend.reported", {"amount_allowed_ytd": "12.34"}, "amount_allowed_ytd"),
        ("therapy_spend.reported", {"amount_allowed_ytd": True}, "amount_allowed_ytd"),
        ("therapy_spend.reported", {"amount_allowed_ytd": 1e12}, "amount_allowed_ytd"),
        ("therapy_spend.reported", {"bucket": "pt"}, "bucket"),
    ],
)
def test_refusals_name_the_field(etype: str, over: dict[str, Any], field: str) -> None:
    ev = {k: v for k, v in fact(etype, **over).items() if v is not None}
    errors = refused(ev)
    assert field in errors, errors
    assert errors[field].startswith(f"{field}: ")


def test_a_91_day_plan_of_care_is_refused_90_accepted() -> None:
    assert "duration_days" in refused(fact("plan_of_care.certified", duration_days=91))
    ok = validate_event(fact("plan_of_care.certified", duration_days=90.0))
    assert isinstance(ok, PlanOfCareCertified) and ok.duration_days == 90


def test_a_wrong_certifier_check_digit_is_not_a_refusal() -> None:
    # staff must see it on the line (CERTIFIER_NPI_INVALID); it must not be dead-lettered
    ev = validate_event(fact("plan_of_care.certified", certifier_npi="1234567890"))
    assert isinstance(ev, PlanOfCareCertified) and ev.certifier_npi == "1234567890"


def test_an_rpm_period_of_one_day_is_accepted() -> None:
    ev = validate_event(fact("rpm.enrolled", period_start="2026-03-31", period_end="2026-03-31"))
    assert isinstance(ev, RpmEnrolled) and ev.period_start == ev.period_end


@pytest.mark.parametrize(
    "amount, exact",
    [
        (0, "0"),
        (0.07, "0.07"),
        (2480, "2480"),
        (2479.99, "2479.99"),
        (999_999_999.99, "999999999.99"),
    ],
)
def test_amounts_are_exact_decimals_and_stay_numbers(amount: float, exact: str) -> None:
    ev = validate_event(fact("therapy_spend.reported", amount_allowed_ytd=amount))
    assert isinstance(ev, TherapySpendReported)
    assert ev.amount_allowed_ytd == Decimal(exact)
    raw = dump_event(ev)
    assert b'"amount_allowed_ytd":"' not in raw  # a JSON number, not a string
    assert parse_event_json(raw).amount_allowed_ytd == Decimal(exact)  # type: ignore[union-attr]


def test_only_the_integration_scope_may_post_the_facts() -> None:
    def key(*scopes: str) -> Principal:
        return Principal(kind="key", name="k", org_id="o", roles=frozenset(scopes))

    assert READINESS_FACT_TYPES <= key("integration").postable_types()
    assert not READINESS_FACT_TYPES & key("producer").postable_types()
    assert not key("reader").postable_types()
